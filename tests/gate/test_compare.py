import pytest

from stabilitykit.gate.baseline import baseline_from_runs
from stabilitykit.gate.compare import (
    GateStatus,
    check_arm,
    check_failure_rate,
    gate_arm,
    gate_runs,
    unused_entries,
)
from stabilitykit.gate.metrics import DEFAULT_RULES, ArmRun, MetricRule, rules_from_config

# The image workload's declarations, as its records' config.json carries them.
IMAGE_WORKLOAD = {
    "name": "gridlines",
    "fingerprint": "0" * 16,
    "primary_metric": "amp_ssim",
    "metrics": [
        {"name": "amp_ssim", "direction": "higher", "abs_tol": 0.035, "floor": "amp_ssim_floor"},
        {"name": "phase_ssim", "direction": "higher", "abs_tol": 0.015},
        {"name": "amp_mae", "direction": "lower", "abs_tol": 0.015},
        {"name": "phase_mae", "direction": "lower", "abs_tol": 0.025},
    ],
    "diagnostics": ["amp_ssim_floor"],
}
IMAGE_RULES = rules_from_config({"workload": IMAGE_WORKLOAD})

GOOD = {
    "amp_ssim": 0.9,
    "amp_mae": 0.06,
    "phase_ssim": 0.8,
    "phase_mae": 0.1,
    "best_val_loss": 0.02,
    "grad_norm_preclip_p99": 10.0,
}


def run(
    name="control",
    seed=1,
    family="f" * 16,
    verdict="stable",
    scale="ci",
    arm=None,
    rules=IMAGE_RULES,
    **values,
):
    return ArmRun(
        arm_id=f"{name}-hybrid-b4-seed{seed}",
        arm_name=name,
        arm_hash=f"{family[:8]}{seed:08d}",
        family_hash=family,
        seed=seed,
        scale=scale,
        verdict=verdict,
        values={**GOOD, **values},
        arm=arm or {},
        rules=rules,
    )


def baseline(*runs):
    return baseline_from_runs(runs or [run()], stage="stage_a")


def test_an_unchanged_run_passes():
    result = gate_arm(run(), baseline())
    assert result.status is GateStatus.PASSED and result.passed and result.ok(True)
    assert not result.regressions and not result.improvements
    assert {c.name for c in result.checks} == {"verdict", *GOOD}
    assert all(c.reference == "seed 1" for c in result.checks)


def test_a_degraded_metric_beyond_tolerance_fails_with_the_diff():
    result = gate_arm(run(amp_ssim=0.85), baseline())  # limit 0.9 - 0.035 = 0.865
    assert result.status is GateStatus.REGRESSED and not result.ok()
    assert [c.name for c in result.regressions] == ["amp_ssim"]
    assert result.regressions[0].limit == pytest.approx(0.865)
    assert "amp_ssim 0.85 is below the limit 0.865 (baseline 0.9, higher is better)" in (
        result.reason
    )
    text = result.render()
    for column in ("metric", "baseline", "now", "limit", "direction", "status"):
        assert column in text
    line = next(ln for ln in text.splitlines() if "amp_ssim" in ln and "worse" in ln)
    assert "0.9" in line and "0.85" in line and "0.865" in line and "higher is better" in line


def test_a_change_within_tolerance_or_for_the_better_passes():
    result = gate_arm(run(amp_ssim=0.87, best_val_loss=0.024), baseline())
    assert result.passed and not result.improvements
    result = gate_arm(run(amp_mae=0.01, best_val_loss=0.005), baseline())
    assert result.passed
    assert {c.name for c in result.improvements} == {"amp_mae", "best_val_loss"}
    assert "accept a new baseline" in result.reason


def test_relative_tolerance_for_val_loss():
    assert gate_arm(run(best_val_loss=0.0249), baseline()).passed
    result = gate_arm(run(best_val_loss=0.0251), baseline())
    assert [c.name for c in result.regressions] == ["best_val_loss"]
    assert "above the limit 0.025" in result.reason


@pytest.mark.parametrize("kind", ["diverged", "collapsed", "spiking", "out_of_memory"])
def test_a_verdict_regression_always_fails(kind):
    result = gate_arm(run(verdict=kind), baseline())  # numbers as good as before
    assert result.status is GateStatus.REGRESSED
    assert [c.name for c in result.regressions] == ["verdict"]
    assert f"verdict stable -> {kind}" in result.reason and kind in result.table()


def test_a_verdict_that_improves_passes():
    result = gate_arm(run(), baseline(run(verdict="collapsed", amp_ssim=0.277)))
    assert result.passed and {c.name for c in result.improvements} == {"verdict", "amp_ssim"}


def test_a_metric_the_run_lost_fails():
    result = gate_arm(run(amp_ssim=None), baseline())
    assert [(c.name, c.status) for c in result.regressions] == [("amp_ssim", "no value")]


def test_a_metric_the_baseline_lacks_is_shown_not_gated():
    rules = IMAGE_RULES.override(final_val_loss=MetricRule("final_val_loss", "lower", rel_tol=0.1))
    result = gate_arm(run(final_val_loss=0.5), baseline(), rules)
    assert result.passed
    assert ("final_val_loss", "not in baseline") in [(c.name, c.status) for c in result.checks]


def test_rules_are_overridable_per_benchmark():
    looser = run().rules.override(amp_ssim=MetricRule("amp_ssim", "higher", abs_tol=0.1))
    assert not gate_arm(run(amp_ssim=0.85), baseline()).passed
    assert gate_arm(run(amp_ssim=0.85), baseline(), looser).passed
    assert gate_arm(run(amp_ssim=0.85), baseline(), {"amp_mae": IMAGE_RULES["amp_mae"]}).passed
    assert gate_arm(run(amp_ssim=0.85), baseline(), DEFAULT_RULES).passed  # engine metrics only


FOO = {
    "name": "made_up",
    "primary_metric": "foo",
    "metrics": [{"name": "foo", "label": "foo", "direction": "lower", "abs_tol": 0.1}],
}


def test_the_rules_come_from_the_records_workload_block(tmp_path):
    from stabilitykit.judge.verdict import Verdict, VerdictKind
    from stabilitykit.record.run_record import RunWriter, new_run_dir

    def record(foo, root):
        writer = RunWriter(new_run_dir(tmp_path / root, "x-seed1"))
        writer.write_config(
            {
                "arm": {"name": "x", "seed": 1},
                "arm_id": "x-seed1",
                "arm_hash": "a" * 16,
                "family_hash": "f" * 16,
                "scale": "ci",
                "workload": FOO,
            }
        )
        writer.write_metrics({"foo": foo})
        writer.write_stats({"best_val_loss": 0.02}, Verdict(VerdictKind.STABLE))
        writer.close()
        return writer.path

    base = baseline_from_runs([record(1.0, "base")], stage="s")  # the rules of the record
    assert base.entries["f" * 16].metrics["foo"].median == 1.0
    worse = gate_arm(record(1.2, "worse"), base)  # 0.2 worse than 1.0: beyond abs_tol 0.1
    assert worse.status is GateStatus.REGRESSED
    assert [c.name for c in worse.regressions] == ["foo"]
    assert "foo 1.2 is above the limit 1.1 (baseline 1, lower is better)" in worse.reason
    assert gate_arm(record(1.05, "near"), base).passed  # within the tolerance
    assert gate_arm(record(0.5, "better"), base).improvements[0].name == "foo"
    assert not gate_runs([record(1.2, "again")], base).ok()
    # an explicit Rules still wins over the record's
    assert gate_arm(record(1.2, "explicit"), base, DEFAULT_RULES).passed


def test_an_unseen_seed_is_held_against_the_median_widened_by_the_iqr():
    base = baseline(
        run(seed=1, amp_ssim=0.88), run(seed=2, amp_ssim=0.9), run(seed=3, amp_ssim=0.92)
    )
    # median 0.9, IQR 0.02: limit 0.9 - 0.035 - 0.02 = 0.845
    ok = gate_arm(run(seed=9, amp_ssim=0.85), base)
    assert ok.passed and ok.reference.startswith("median of 3 seeds")
    bad = gate_arm(run(seed=9, amp_ssim=0.84), base)
    assert bad.regressions[0].limit == pytest.approx(0.845)
    assert bad.regressions[0].reference == "median of 3 seeds" and bad.regressions[0].spread == 0.02
    # the same value at a known seed is held against that seed
    assert not gate_arm(run(seed=2, amp_ssim=0.85), base).passed


def test_an_unseen_seed_failing_where_the_baseline_never_failed_is_a_regression():
    base = baseline(run(seed=1), run(seed=2))
    assert not gate_arm(run(seed=5, verdict="diverged"), base).passed
    flaky = baseline(run(seed=1), run(seed=2, verdict="collapsed"))
    assert gate_arm(run(seed=5, verdict="diverged"), flaky).passed  # the failure rate decides


def test_missing_entry():
    result = gate_arm(run(name="new", family="1" * 16), baseline())
    assert result.status is GateStatus.MISSING and not result.checks
    assert "no baseline entry for new-hybrid-b4" in result.reason
    assert result.ok() and not result.ok(require_baseline=True)


def test_a_changed_arm_is_not_comparable_and_says_so():
    result = gate_arm(run(family="2" * 16, amp_ssim=0.1), baseline())
    assert result.status is GateStatus.NOT_COMPARABLE and not result.passed
    assert f"arm changed (hash {'f' * 16} -> {'2' * 16})" in result.reason
    assert "for information, against the old entry: worse amp_ssim" in result.reason
    assert "(for information only)" in result.table()
    assert result.entry_hash == "f" * 16
    assert result.ok() and not result.ok(require_baseline=True)
    entry = baseline().entries["f" * 16]
    assert check_arm(run(family="2" * 16), entry).status is GateStatus.NOT_COMPARABLE


def test_not_comparable_says_what_changed():
    old = run(arm={"name": "control", "lr": 0.001, "data": {"N": 32}, "seed": 1})
    new = run(family="2" * 16, arm={"name": "control", "lr": 0.01, "data": {"N": 64}, "seed": 2})
    result = gate_arm(new, baseline(old))
    assert f"(hash {'f' * 16} -> {'2' * 16}: data.N 32 -> 64; lr 0.001 -> 0.01)" in result.reason


def test_another_scale_is_not_comparable():
    result = gate_arm(run(scale="smoke"), baseline())
    assert result.status is GateStatus.NOT_COMPARABLE and "scale 'ci'" in result.reason


def test_unused_entries():
    base = baseline(run(), run(name="agc", family="e" * 16), run(name="stable", family="d" * 16))
    assert [e.arm_id for e in unused_entries(base, ["f" * 16])] == [
        "agc-hybrid-b4",
        "stable-hybrid-b4",
    ]
    # an entry matched as "not comparable" is reported as such, not again as unused
    report = gate_runs([run(), run(name="agc", family="9" * 16)], base)
    assert [e.arm_id for e in report.unused] == ["stable-hybrid-b4"]
    assert "baseline entries no run used: stable-hybrid-b4" in report.text()


def test_failure_rate_against_the_wilson_upper_bound():
    check = check_failure_rate(3, 5, 0, 5)
    assert not check.passed and check.upper == pytest.approx(0.4345, abs=1e-3)
    assert "failure rate 3/5 (60%) exceeds the baseline's 0/5" in check.message
    assert check_failure_rate(1, 5, 1, 5).passed
    assert check_failure_rate(2, 5, 0, 5).passed  # 40 % is within the bound of 0/5
    assert check_failure_rate(0, 0, 0, 5).passed
    with pytest.raises(ValueError, match="failures <= n"):
        check_failure_rate(3, 2, 0, 5)


def test_gate_runs_fails_on_a_risen_failure_rate():
    base = baseline(*(run(seed=s) for s in range(5)))
    seeds = [run(seed=s) for s in range(5, 10)]
    assert gate_runs(seeds, base).ok()
    risen = [run(seed=s, verdict="collapsed" if s < 8 else "stable") for s in range(5, 10)]
    report = gate_runs(risen, base)
    assert not report.ok() and not report.rates[0].check.passed
    assert "FAILED" in report.verdict_line() and "1 failure rate risen" in report.verdict_line()


def test_gate_report_require_baseline():
    report = gate_runs([run(), run(name="new", family="1" * 16)], baseline())
    assert report.ok() and not report.ok(require_baseline=True)
    assert report.counts()["missing"] == 1
    assert "gate passed" in report.text() and "gate FAILED" in report.text(require_baseline=True)


def test_tolerance_is_calibrated_from_the_seed_spread():
    base = baseline(
        run(seed=1, amp_ssim=0.899), run(seed=2, amp_ssim=0.9), run(seed=3, amp_ssim=0.901)
    )
    # std 0.001 over 3 seeds: 3 std = 0.003, raised to the floor 0.1 x 0.035 = 0.0035
    tight = gate_arm(run(seed=2, amp_ssim=0.89), base)
    assert not tight.passed and tight.regressions[0].limit == pytest.approx(0.9 - 0.0035)
    assert "3 std over 3 seeds" in tight.regressions[0].tolerance
    assert gate_arm(run(seed=2, amp_ssim=0.8975), base).passed
    # noisy seeds: never looser than the declared tolerance
    noisy = baseline(
        run(seed=1, amp_ssim=0.8), run(seed=2, amp_ssim=0.9), run(seed=3, amp_ssim=1.0)
    )
    check = next(
        c for c in gate_arm(run(seed=2, amp_ssim=0.9), noisy).checks if c.name == "amp_ssim"
    )
    assert check.tolerance.startswith("0.035") and check.limit == pytest.approx(0.865)


def test_a_seed_the_baseline_never_ran_is_not_held_against_another_seed():
    one_seed = baseline(run(seed=1, amp_ssim=0.9))
    result = gate_arm(run(seed=2, amp_ssim=0.7), one_seed)
    assert result.passed, result.reason
    check = next(c for c in result.checks if c.name == "amp_ssim")
    assert check.status == "other seed" and not check.worse


def test_the_failure_rate_of_known_seeds_is_held_against_those_seeds():
    from stabilitykit.gate.compare import family_rate

    base = baseline(run(seed=1, verdict="collapsed"), run(seed=2), run(seed=3))
    entry = next(iter(base.entries.values()))
    assert family_rate([run(seed=1, verdict="collapsed")], entry).check.passed  # as before
    assert not family_rate([run(seed=2, verdict="collapsed")], entry).check.passed
    # a seed the baseline never ran: against the baseline's rate over all its seeds
    assert not family_rate([run(seed=9, verdict="collapsed")], entry).check.passed
