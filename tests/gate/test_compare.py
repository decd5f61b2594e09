import pytest

from stabilitykit.gate.baseline import baseline_from_runs
from stabilitykit.gate.compare import (
    GateStatus,
    check_arm,
    check_failure_rate,
    family_rate,
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

HERE, THERE = "0123456789abcdef", "fedcba9876543210"  # numerics fingerprints of two machines
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
    numerics=HERE,
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
        numerics=numerics,
        numerics_label=f"portable {numerics}" if numerics else "unknown",
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
                "numerics": {"mode": "portable", "fingerprint": HERE},
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


def test_an_unseen_seed_is_held_against_the_seeds_spread():
    base = baseline(
        run(seed=1, amp_ssim=0.88), run(seed=2, amp_ssim=0.9), run(seed=3, amp_ssim=0.92)
    )
    # median 0.9, declared tolerance 0.035: passes down to 0.865; the 95 % prediction interval
    # of 3 seeds (mean 0.9, std 0.02) reaches down to 0.9 - 4.303 * 0.02 * sqrt(4/3) = 0.8006
    ok = gate_arm(run(seed=9, amp_ssim=0.87), base)
    assert ok.passed and ok.comparison.startswith("compared across seeds: against 3 seeds")
    unsure = gate_arm(run(seed=9, amp_ssim=0.85), base)
    assert unsure.status is GateStatus.NOT_DECIDED and unsure.ok() and not unsure.ok(strict=True)
    check = unsure.undecided[0]
    assert check.limit == pytest.approx(0.865) and check.bound == pytest.approx(0.8006, abs=1e-4)
    bad = gate_arm(run(seed=9, amp_ssim=0.79), base)
    assert bad.status is GateStatus.REGRESSED and "outside their 95% prediction" in bad.reason
    # the same value at a known seed, same numerics, is held against that seed
    assert gate_arm(run(seed=2, amp_ssim=0.85), base).status is GateStatus.REGRESSED


def test_a_failure_against_the_seeds_is_a_regression_only_where_the_arm_never_failed():
    three = baseline(run(seed=1), run(seed=2), run(seed=3))
    assert gate_arm(run(seed=5, verdict="diverged"), three).status is GateStatus.REGRESSED
    two = gate_arm(run(seed=5, verdict="diverged"), baseline(run(seed=1), run(seed=2)))
    assert two.status is GateStatus.NOT_DECIDED and "too few to call one failure" in two.reason
    flaky = baseline(run(seed=1), run(seed=2, verdict="collapsed"), run(seed=3))
    result = gate_arm(run(seed=5, verdict="diverged"), flaky)
    assert result.status is GateStatus.NOT_DECIDED and result.ok()
    assert "the baseline failed at 1 of 3 seeds (collapsed 1, stable 2)" in result.reason
    assert result.known_verdict.startswith("not decided against its baseline")
    metric = next(c for c in result.checks if c.name == "amp_ssim")
    assert metric.status == "run failed" and not metric.worse  # the verdict decides


def test_a_failure_every_baseline_seed_had_is_known():
    doomed = baseline(run(seed=1, verdict="collapsed"), run(seed=2, verdict="collapsed"))
    result = gate_arm(run(seed=1, verdict="collapsed", numerics=THERE), doomed)
    assert result.passed and result.comparison.startswith("compared across machines")
    assert result.known_verdict == "as in its baseline, which failed at all its 2 seeds"
    same = gate_arm(run(seed=1, verdict="collapsed"), doomed)
    assert same.known_verdict == "as in its baseline" and same.comparison == ""


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


def test_against_one_seed_a_worse_value_is_not_decided():
    one_seed = baseline(run(seed=1, amp_ssim=0.9))
    result = gate_arm(run(seed=2, amp_ssim=0.7), one_seed)
    assert result.status is GateStatus.NOT_DECIDED and result.ok(), result.reason
    assert "1 seed(s) are too few to estimate the spread (3 needed)" in result.reason
    assert gate_arm(run(seed=2, amp_ssim=0.89), one_seed).passed


def test_the_failure_rate_of_known_seeds_is_held_against_those_seeds():
    base = baseline(run(seed=1, verdict="collapsed"), run(seed=2), run(seed=3))
    entry = next(iter(base.entries.values()))
    assert family_rate([run(seed=1, verdict="collapsed")], entry).check.passed  # as before
    assert not family_rate([run(seed=2, verdict="collapsed")], entry).check.passed
    # a seed the baseline never ran: against the baseline's rate over all its seeds, where one
    # failure against seeds that failed before is not decided
    other = family_rate([run(seed=9, verdict="collapsed")], entry).check
    assert other.status is GateStatus.NOT_DECIDED and not other.regressed
    assert "not decided: 1 run(s)" in other.message


def five_seeds(*amp_ssim, numerics=HERE):
    return baseline(*(run(seed=s, amp_ssim=v, numerics=numerics) for s, v in enumerate(amp_ssim)))


def test_same_numerics_compare_seed_against_seed():
    base = five_seeds(0.90, 0.80, 0.95, 0.85, 0.88)
    result = gate_arm(run(seed=1, amp_ssim=0.80), base)
    assert result.passed and result.reference == "seed 1" and result.comparison == ""
    # 0.9 -> 0.86 at seed 0 is beyond the seed's tolerance, though well inside the spread
    assert gate_arm(run(seed=0, amp_ssim=0.86), base).status is GateStatus.REGRESSED


def test_other_numerics_compare_against_the_seeds_never_seed_against_seed():
    base = five_seeds(0.90, 0.80, 0.95, 0.85, 0.88)
    for numerics in (THERE, None):  # another machine, or a record without numerics
        result = gate_arm(run(seed=0, amp_ssim=0.86, numerics=numerics), base)
        assert result.passed, result.reason  # within the tolerance of the median 0.88
        assert result.comparison.startswith("compared across machines: against 5 seeds")
        assert f"numerics {numerics or 'unknown'} here, {HERE} in the baseline" in (
            result.comparison
        )
        assert result.render().splitlines()[1] == result.comparison
        check = next(c for c in result.checks if c.name == "amp_ssim")
        assert check.reference == "median of 5 seeds" and check.baseline == 0.88
    report = gate_runs([run(seed=0, amp_ssim=0.86, numerics=THERE)], base)
    assert "compared across machines: against 5 seeds" in report.text()
    assert report.comparisons()[0].endswith(": control-hybrid-b4-seed0")


def test_a_worse_value_inside_a_wide_spread_is_not_decided():
    base = five_seeds(0.90, 0.70, 0.95, 0.78, 0.88, numerics=THERE)
    # median 0.88, limit 0.845; mean 0.842, std 0.1006: the interval reaches down to 0.536
    result = gate_arm(run(seed=0, amp_ssim=0.75), base)
    assert result.status is GateStatus.NOT_DECIDED and result.ok() and not result.ok(strict=True)
    assert "amp_ssim 0.75 is below the median of 5 seeds 0.88 by more than the tolerance" in (
        result.reason
    )
    assert "inside their 95% prediction interval (to 0.536" in result.reason
    assert "too wide to tell a regression from noise" in result.reason
    table = " ".join(result.table().split())
    assert "not decided" in table and "0.845 (95% PI" in table and "0.53604)" in table
    report = gate_runs([run(seed=0, amp_ssim=0.75)], base)
    assert report.ok() and not report.ok(strict=True)
    assert "1 not decided" in report.verdict_line() and "gate passed" in report.verdict_line()
    assert "inside their 95% prediction interval" in report.text()


def test_a_clear_regression_outside_the_prediction_interval_fails():
    base = five_seeds(0.90, 0.89, 0.91, 0.90, 0.88, numerics=THERE)
    # std 0.0114: the interval reaches down to 0.9 - 2.776 * 0.0114 * sqrt(1.2) = 0.865
    result = gate_arm(run(seed=0, amp_ssim=0.80), base)
    assert result.status is GateStatus.REGRESSED and not result.ok()
    assert "outside their 95% prediction interval (to 0.86" in result.reason
    assert [c.name for c in result.regressions] == ["amp_ssim"]
    better = gate_arm(run(seed=0, amp_ssim=0.99), base)
    assert better.passed and [c.name for c in better.improvements] == ["amp_ssim"]


def test_the_failure_rate_against_another_machines_seeds():
    flaky = baseline(*(run(seed=s, verdict="collapsed" if s == 0 else "stable") for s in range(5)))
    entry = flaky.entries["f" * 16]
    # their own seeds, same numerics: against those seeds (seed 0 collapsed there too)
    assert family_rate([run(seed=0, verdict="collapsed")], entry).check.passed
    # on another machine one collapse says little ...
    one = family_rate([run(seed=1, verdict="collapsed", numerics=THERE)], entry).check
    assert one.status is GateStatus.NOT_DECIDED and not one.regressed
    # ... three of three runs is a risen rate (the Wilson upper bound of 1/5 is 62 %)
    three = [run(seed=s, verdict="collapsed", numerics=THERE) for s in (1, 2, 3)]
    assert family_rate(three, entry).check.regressed
    report = gate_runs(three, flaky)
    assert not report.ok() and "1 failure rate risen" in report.verdict_line()
    assert [r.status for r in report.results] == [GateStatus.NOT_DECIDED] * 3
