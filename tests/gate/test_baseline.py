import json
from dataclasses import replace

import pytest

from stabilitykit.gate.baseline import (
    BaselineEntry,
    BaselineError,
    baseline_from_runs,
    baseline_path,
    read_baseline,
    update_baseline,
    write_baseline,
)
from stabilitykit.gate.metrics import DEFAULT_RULES, ArmRun, MetricRule, Rules
from stabilitykit.record.schema import stamp

HERE = "0123456789abcdef"  # a numerics fingerprint
GOOD = {"amp_ssim": 0.9, "amp_mae": 0.06, "best_val_loss": 0.02, "train_seconds": 9.0}
IMAGE_RULES = DEFAULT_RULES.override(
    amp_ssim=MetricRule("amp_ssim", "higher", abs_tol=0.035),
    amp_mae=MetricRule("amp_mae", "lower", abs_tol=0.015),
)


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
        numerics_label=f"portable {numerics} (torch 2.13.0)" if numerics else "unknown",
    )


def test_one_seed_entry_holds_values_and_only_gated_metrics():
    entry = BaselineEntry.from_runs([run(amp_ssim=0.123456789)])
    d = entry.to_json()
    assert d["arm_id"] == "control-hybrid-b4" and d["arm_name"] == "control"
    assert d["metrics"]["amp_ssim"] == 0.123457  # 6 significant digits
    assert "train_seconds" not in d["metrics"]  # not a gated metric
    assert (
        d["seeds"]["1"]["verdict"] == "stable" and d["seeds"]["1"]["arm_hash"] == "ffffffff00000001"
    )
    assert (d["n"], d["failures"], d["verdicts"]) == (1, 0, {"stable": 1})


def test_an_entry_holds_the_metrics_of_the_runs_rules_or_of_the_rules_given():
    engine_only = BaselineEntry.from_runs([run(rules=DEFAULT_RULES)]).to_json()["metrics"]
    assert set(engine_only) == {"best_val_loss"}  # an older record: no workload metrics
    given = BaselineEntry.from_runs([run()], Rules([IMAGE_RULES["amp_mae"]]))
    assert set(given.metrics) == {"amp_mae"}
    base = baseline_from_runs(
        [run(), run(name="old", family="e" * 16, rules=DEFAULT_RULES)], stage="s"
    )
    assert set(base.entries["f" * 16].metrics) == {"amp_ssim", "amp_mae", "best_val_loss"}
    assert set(base.entries["e" * 16].metrics) == {"best_val_loss"}


def test_the_committed_baselines_still_read_and_gate():
    """Files written before numerics were recorded: their seeds' numerics are unknown, so a run
    is held against the spread of their seeds, never against its own seed."""
    from pathlib import Path

    from stabilitykit.gate.compare import gate_arm

    root = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines" / "ci"
    for name in ("stage_a.json", "stage_b.json"):
        baseline = read_baseline(root / name)
        assert baseline.entries
        entry = next(iter(baseline.entries.values()))
        seed = next(iter(entry.seeds.values()))
        same = ArmRun(
            arm_id=f"{entry.arm_id}-seed{seed.seed}",
            arm_name=entry.arm_name,
            arm_hash=seed.arm_hash,
            family_hash=entry.family_hash,
            seed=seed.seed,
            scale=baseline.scale,
            verdict=seed.verdict,
            values={k: v for k, v in seed.values.items() if v is not None},
            rules=IMAGE_RULES,
        )
        # the committed seeds were run in portable numerics: each names its fingerprint
        assert all(s.numerics for s in entry.seeds.values()) and entry.numerics
        assert all(text.startswith("portable ") for text in entry.numerics.values())
        # the same numerics: seed against seed, exactly
        result = gate_arm(replace(same, numerics=seed.numerics), baseline)
        assert result.passed, result.render()
        assert all(c.reference == f"seed {seed.seed}" for c in result.checks if c.name != "verdict")
        # unknown numerics (an old record): against the spread of the seeds
        result = gate_arm(same, baseline)
        assert result.ok(), result.render()  # passed, or not decided where seeds failed
        assert result.comparison.startswith(f"compared across machines: against {entry.n} seeds")
        assert {c.name for c in result.checks} >= {"verdict", "amp_ssim", "best_val_loss"}


def test_seeds_give_median_and_iqr_over_the_stable_ones():
    runs = [run(seed=1, amp_ssim=0.90), run(seed=2, amp_ssim=0.92), run(seed=3, amp_ssim=0.94)]
    runs += [run(seed=4, verdict="collapsed", amp_ssim=0.277)]
    runs += [run(seed=5, verdict="interrupted", amp_ssim=0.1)]
    entry = BaselineEntry.from_runs(runs)
    assert entry.to_json()["metrics"]["amp_ssim"] == {
        "median": 0.92,
        "iqr": 0.02,
        "n": 3,
        "std": 0.02,
    }
    assert (entry.n, entry.failures) == (4, 1)  # the interrupted run says nothing
    assert entry.verdicts == {"collapsed": 1, "interrupted": 1, "stable": 3}
    assert entry.reference("amp_ssim", 4) == (0.277, 0.0, "seed 4")
    assert entry.reference("amp_ssim", 99) == (0.92, 0.02, "median of 3 seeds")


def test_round_trip_is_deterministic_and_sorted(tmp_path):
    runs = [run(seed=2), run(seed=10), run(name="agc", family="e" * 16, seed=1)]
    baseline = baseline_from_runs(runs, stage="stage_a")
    path = write_baseline(baseline, tmp_path / "ci" / "stage_a.json")
    first = path.read_bytes()
    again = read_baseline(path)
    assert again.entries == baseline.entries and (again.stage, again.scale) == ("stage_a", "ci")
    write_baseline(again)
    assert path.read_bytes() == first
    d = json.loads(first)
    assert list(d)[:2] == ["schema", "version"] and list(d["entries"]) == ["e" * 16, "f" * 16]
    assert list(d["entries"]["f" * 16]["seeds"]) == ["2", "10"]  # numeric order
    assert list(d["entries"]["f" * 16]) == sorted(d["entries"]["f" * 16])


def test_runs_of_another_scale_are_refused():
    with pytest.raises(BaselineError, match="scale"):
        baseline_from_runs([run(scale="smoke")], stage="stage_a", scale="ci")


def _entry_json(**changes):
    return {**BaselineEntry.from_runs([run()]).to_json(), **changes}


def _file(entries):
    payload = {"stage": "stage_a", "scale": "ci", "entries": entries}
    return json.dumps(stamp(payload, "stabilitykit.baseline"))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(stamp({"stats": {}})), "schema 'stabilitykit.run' is not"),
        (json.dumps({"entries": {}}), "no 'schema' field"),
        (json.dumps(stamp({"entries": {}}, "stabilitykit.baseline", 2)), "newer stabilitykit"),
        (_file([]), "entries: got list"),
        (_file({"f": _entry_json(seeds={})}), r"entries\.f\.seeds: got dict"),
        (_file({"f": _entry_json(arm_id=3)}), r"entries\.f\.arm_id: got int"),
        (
            _file({"f": _entry_json(metrics={"amp_ssim": "high"})}),
            r"entries\.f\.metrics\.amp_ssim: got str",
        ),
        (
            _file({"f": _entry_json(metrics={"amp_ssim": {"median": 0.9}})}),
            r"entries\.f\.metrics\.amp_ssim: .*expected \{median, iqr >= 0, n >= 1, std >= 0\}",
        ),
    ],
    ids=[
        "corrupt",
        "foreign",
        "unstamped",
        "future",
        "entries-list",
        "no-seeds",
        "bad-id",
        "bad-metric",
        "bad-summary",
    ],
)
def test_bad_files_name_the_file_and_the_fault(tmp_path, content, match):
    path = tmp_path / "stage_a.json"
    path.write_text(content)
    with pytest.raises(BaselineError, match=match) as info:
        read_baseline(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_verdict_is_named(tmp_path):
    entry = _entry_json()
    entry["seeds"]["1"]["verdict"] = "fine"
    path = tmp_path / "b.json"
    path.write_text(_file({"f": entry}))
    with pytest.raises(BaselineError, match=r"seeds\.1\.verdict: got 'fine'"):
        read_baseline(path)


def test_missing_file(tmp_path):
    with pytest.raises(BaselineError, match="no such baseline file"):
        read_baseline(tmp_path / "nope.json")
    empty = read_baseline(tmp_path / "nope.json", missing_ok=True)
    assert empty.entries == {} and empty.stage is None


def test_baseline_path():
    assert baseline_path("b", "stage_a", "ci").as_posix() == "b/ci/stage_a.json"
    assert baseline_path("b/x.json", "stage_a", "ci").as_posix() == "b/x.json"


def test_update_changes_only_the_given_arms(tmp_path):
    path = tmp_path / "ci" / "stage_a.json"
    control, agc = run(), run(name="agc", family="e" * 16)
    diff = update_baseline(path, [control, agc], "stage_a", "ci")
    assert [c.kind for c in diff.changes] == ["added", "added"] and diff.changed
    before = read_baseline(path).entries["e" * 16]

    diff = update_baseline(path, [run(amp_ssim=0.95)], "stage_a", "ci")
    assert [c.kind for c in diff.changes] == ["updated"] and diff.kept == ("agc-hybrid-b4",)
    assert ("amp_ssim", "0.9", "0.95") in diff.changes[0].rows()
    text = diff.text()
    assert "control-hybrid-b4" in text and "updated" in text and "0.95" in text
    after = read_baseline(path)
    assert after.entries["f" * 16].metrics["amp_ssim"].median == 0.95
    assert after.entries["e" * 16] == before

    diff = update_baseline(path, [run(amp_ssim=0.95)], "stage_a", "ci")
    assert [c.kind for c in diff.changes] == ["unchanged"] and not diff.changed


def test_update_replaces_the_entry_of_a_changed_arm(tmp_path):
    path = tmp_path / "stage_a.json"
    update_baseline(path, [run(arm={"name": "control", "seed": 1, "lr": 0.001})], "stage_a", "ci")
    assert read_baseline(path).entries["f" * 16].arm == {"lr": 0.001}  # no name, no seed
    changed = run(family="1" * 16, arm={"name": "control", "seed": 1, "lr": 0.01})
    diff = update_baseline(path, [changed], "stage_a", "ci")
    change = diff.changes[0]
    assert change.kind == "replaced" and change.old.family_hash == "f" * 16
    assert ("arm hash", "f" * 16, "1" * 16) in change.rows()
    assert ("arm.lr", "0.001", "0.01") in change.rows()
    assert list(read_baseline(path).entries) == ["1" * 16]


def test_update_refuses_another_stage_or_scale(tmp_path):
    path = tmp_path / "stage_a.json"
    update_baseline(path, [run()], "stage_a", "ci")
    with pytest.raises(BaselineError, match="holds stage 'stage_a'"):
        update_baseline(path, [run()], "stage_b", "ci")
    with pytest.raises(BaselineError, match="scale"):
        update_baseline(path, [run(scale="smoke")], "stage_a", "smoke")


def test_each_seed_records_its_numerics_and_the_entry_describes_them(tmp_path):
    runs = [run(seed=1), run(seed=2, numerics="fedcba9876543210"), run(seed=3, numerics=None)]
    entry = BaselineEntry.from_runs(runs)
    d = entry.to_json()
    assert d["seeds"]["1"]["numerics"] == HERE and "numerics" not in d["seeds"]["3"]
    assert d["numerics"] == {
        HERE: f"portable {HERE} (torch 2.13.0)",
        "fedcba9876543210": "portable fedcba9876543210 (torch 2.13.0)",
    }
    path = write_baseline(baseline_from_runs(runs, stage="stage_a"), tmp_path / "b.json")
    again = read_baseline(path).entries["f" * 16]
    assert again == entry and again.seeds[3].numerics is None


def test_a_file_without_numerics_reads_and_a_bad_fingerprint_is_named(tmp_path):
    old = _entry_json()
    old["seeds"]["1"].pop("numerics")
    old.pop("numerics")
    path = tmp_path / "b.json"
    path.write_text(_file({"f": old}))
    entry = read_baseline(path).entries["f"]
    assert entry.seeds[1].numerics is None and entry.numerics == {}
    old["seeds"]["1"]["numerics"] = 7
    path.write_text(_file({"f": old}))
    with pytest.raises(BaselineError, match=r"seeds\.1\.numerics: got int 7"):
        read_baseline(path)


def test_an_accept_on_another_machine_shows_the_numerics_change(tmp_path):
    path = tmp_path / "stage_a.json"
    update_baseline(path, [run(numerics=None)], "stage_a", "ci")  # an older record
    diff = update_baseline(path, [run()], "stage_a", "ci")
    assert ("numerics", "-", f"portable {HERE} (torch 2.13.0)") in diff.changes[0].rows()
