import json

from stabilitykit.frontier import frontiers
from stabilitykit.gate.frontier import (
    accept_frontiers,
    check_frontiers,
    frontier_baseline_path,
    read_frontier_baseline,
)
from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
from stabilitykit.record.run_record import RunWriter, new_run_dir
from stabilitykit.stage import gate_frontiers
from stabilitykit.sweep import sweep
from stabilitykit.testing.linear import GD

VALUES = (0.01, 0.02, 0.04, 0.08, 0.16)


def rows(failures, seeds=2, family="control"):
    """Rows where value i fails in ``failures[i]`` of ``seeds`` seeds."""
    return [
        {
            "run": f"{family}-{v}-{s}",
            "seed": s,
            "verdict": "diverged" if s < k else "stable",
            "arm": {"lr": v, "sweep": [family, "lr"]},
        }
        for v, k in zip(VALUES, failures, strict=True)
        for s in range(seeds)
    ]


def test_the_gate_flags_the_edge_moving_down_beyond_its_interval(tmp_path):
    path = frontier_baseline_path(tmp_path, "stage_f", "ci")
    assert path == tmp_path / "ci" / "frontiers" / "stage_f.json"
    accepted = frontiers(rows([0, 0, 0, 2, 2]))  # edge between 0.04 and 0.08, 2 seeds
    lines = accept_frontiers(path, accepted, "stage_f", "ci")
    assert lines == ["frontier control/lr: edge 0.0566 [0.04, 0.08]"]
    baseline = read_frontier_baseline(path)
    assert baseline["families"]["control/lr"]["stable_at"] == 0.04

    (same,) = check_frontiers(frontiers(rows([0, 0, 0, 1, 2])), baseline)
    assert same.status == "ok"  # 1/2 at 0.08 is no confident failure
    (lower,) = check_frontiers(frontiers(rows([0, 2, 2, 2, 2])), baseline)
    assert lower.regressed and "failing confidently at lr 0.02" in lower.message
    (gone,) = check_frontiers(frontiers(rows([2, 2, 2, 2, 2])), baseline)
    assert gone.regressed  # not bracketed: failing from the lowest value
    (higher,) = check_frontiers(frontiers(rows([0, 0, 0, 0, 2])), baseline)
    assert higher.status == "ok"  # a wider stable range never fails
    (new,) = check_frontiers(frontiers(rows([0, 0, 2, 2, 2], family="agc")), baseline)
    assert new.status == "missing"
    # one seed decides nothing: 1/1 at 80 % is [0.38, 1]
    (unsure,) = check_frontiers(frontiers(rows([0, 1, 1, 1, 1], seeds=1)), baseline)
    assert unsure.status == "ok"


def _record(stage_dir, arm, diverged):
    """A finished run folder of ``arm`` as a session leaves it (no training)."""
    writer = RunWriter(new_run_dir(stage_dir, arm.id))
    writer.write_config(
        {
            "arm": arm.to_dict(),
            "arm_id": arm.id,
            "arm_hash": arm.hash,
            "family_hash": arm.family_hash,
            "scale": arm.scale,
            "workload": arm.workload_impl.describe(),
            "tags": {"stage": "stage_f", "session": "s"},
        }
    )
    writer.write_metrics({"rel_l2": 0.3, "rel_l2_floor": 0.9})
    verdict = Verdict(VerdictKind.DIVERGED, (Evidence("finite", "nan"),)) if diverged else None
    writer.write_stats({"status": "completed"}, verdict or Verdict(VerdictKind.STABLE))
    writer.close()
    return {"stage": "stage_f", "role": "arm", "run_dir": str(writer.path)}


def test_a_session_accepts_a_frontier_and_fails_on_a_regression(tmp_path):
    points = sweep(GD, "lr", [0.05, 0.1, 0.2], seeds=2)
    good = [_record(tmp_path / "a", p, p.lr > 0.15) for p in points]
    lines, failed = gate_frontiers(tmp_path / "bl", good, accept=True, require=False)
    assert not failed and "accepted 1 frontier(s)" in lines[-1]
    saved = json.loads((tmp_path / "bl" / "custom" / "frontiers" / "stage_f.json").read_text())
    assert saved["families"]["gd/lr"]["interval"] == [0.1, 0.2]
    worse = [_record(tmp_path / "b", p, p.lr > 0.07) for p in points]
    lines, failed = gate_frontiers(tmp_path / "bl", worse, accept=False, require=True)
    assert failed and lines[0].startswith("stage_f: frontier regressed: gd/lr: the edge moved down")
    lines, failed = gate_frontiers(tmp_path / "bl", good, accept=False, require=True)
    assert not failed and "frontier ok" in lines[0]
