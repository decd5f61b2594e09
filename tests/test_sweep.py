import pytest

from stabilitykit.arm import Arm, apply_scale
from stabilitykit.stage import StudyOptions, run_in_stage, write_session_reports
from stabilitykit.sweep import log_grid, point_ids, sweep, value_text
from stabilitykit.testing.linear import CRITERIA, GD
from stabilitykit.workloads.gridlines.study import CONTROL


def test_a_log_grid_is_anchored_on_decades_and_values_read_in_names():
    assert log_grid(1e-3, 1e-1, per_decade=2) == (0.001, 0.00316, 0.01, 0.0316, 0.1)
    assert log_grid(2e-3, 5e-3, per_decade=4) == (0.00316,)
    assert [value_text(v) for v in (3e-3, 0.00316, 0.316, 8, 1.0, 1e4)] == [
        "3e-3",
        "3.16e-3",
        "0.316",
        "8",
        "1",
        "10000",
    ]
    with pytest.raises(ValueError, match="expected 0 < lo <= hi"):
        log_grid(0.0, 1.0)


def test_a_sweep_expands_values_and_seeds_into_ordinary_arms():
    points = sweep(GD, "lr", [0.1, 0.01], seeds=2)
    assert [(p.name, p.lr, p.seed) for p in points] == [
        ("gd-lr0.01", 0.01, GD.seed),
        ("gd-lr0.01", 0.01, GD.seed + 1),
        ("gd-lr0.1", 0.1, GD.seed),
        ("gd-lr0.1", 0.1, GD.seed + 1),
    ]
    assert all(p.sweep == ("gd", "lr") for p in points)
    assert point_ids(points) == ["gd-lr0.01-s0", "gd-lr0.01-s1", "gd-lr0.1-s0", "gd-lr0.1-s1"]
    # the family tag is a label, as the name is: the hash is that of the plain arm
    assert points[0].hash == GD.replace(name="other", lr=0.01).hash
    assert Arm.from_dict(points[0].to_dict()) == points[0]
    deep = sweep(CONTROL, "fno_blocks", [4, 8], family="depth")
    assert [p.name for p in deep] == ["depth-fno_blocks4", "depth-fno_blocks8"]
    assert [p.lr for p in sweep(GD)] == [0.001, 0.00316, 0.01, 0.0316, 0.1, 0.316, 1.0, 3.16, 10.0]


def test_a_sweep_says_what_is_wrong():
    with pytest.raises(ValueError, match="sweep: field: got 'seed'"):
        sweep(GD, "seed", [1, 2])
    with pytest.raises(ValueError, match="expected distinct values"):
        sweep(GD, "lr", [0.1, 0.1])
    with pytest.raises(ValueError, match="only lr has a default grid"):
        sweep(GD, "width")
    with pytest.raises(ValueError, match=r"Arm\.sweep"):
        GD.replace(sweep=("gd", "seed"))


def test_a_scale_keeps_the_swept_value():
    assert apply_scale(CONTROL, "ci").lr == 3e-3  # the ci recipe raises the lr
    point = sweep(CONTROL, "lr", [1e-4])[0]
    scaled = apply_scale(point, "ci")
    assert scaled.lr == 1e-4 and scaled.epochs == apply_scale(CONTROL, "ci").epochs


def _pass(points, out, cache, report=False, **options):
    opts = StudyOptions(scale="none", out=out, cache_dir=cache, **options)
    results = [run_in_stage(p, "stage_f", opts, criteria=CRITERIA, progress=False) for p in points]
    if report:
        entries = [{"stage": "stage_f", "role": "arm", "run_dir": str(r.run_dir)} for r in results]
        write_session_reports(opts, ["stage_f"], entries)
    return results


def test_a_second_pass_retrains_nothing_it_already_has(tmp_path):
    out, cache = tmp_path / "reports", tmp_path / "cache"
    arm = GD.replace(epochs=3)
    first = _pass(sweep(arm, "lr", [0.01, 0.1]), out, cache)
    runs = out / "stage_f" / "runs"
    assert len(list(runs.iterdir())) == 2
    second = _pass(sweep(arm, "lr", [0.01, 0.03, 0.1]), out, cache, report=True)
    assert len(list(runs.iterdir())) == 3  # only the new point trained
    assert [r.run_dir for r in (second[0], second[2])] == [r.run_dir for r in first]
    assert second[0].stats == first[0].stats
    summary = (out / "stage_f" / "summary.md").read_text()
    assert "| `gd` | `lr` | 3 (2) |" in summary  # 3 runs, 2 reused
    points = summary.split("### `gd` over `lr`")[1].splitlines()
    reused = {line.split(" | ")[0][2:]: line.split(" | ")[-1][:-2] for line in points[4:7]}
    assert reused == {"0.01": "1", "0.03": "0", "0.1": "1"}  # the runs of each value reused
    again = _pass(sweep(arm, "lr", [0.01]), out, cache, rerun=True)  # --sk-rerun
    assert again[0].run_dir != first[0].run_dir and len(list(runs.iterdir())) == 4
