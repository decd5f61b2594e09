import json

import pytest

from stabilitykit.arm import Arm, apply_scale
from stabilitykit.cli import main
from stabilitykit.gate.baseline import read_baseline
from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
from stabilitykit.record.run_record import RunWriter, find_runs, new_run_dir
from stabilitykit.record.schema import stamp, write_json

CONTROL = apply_scale(Arm(name="control", fno_blocks=4), "ci")
AGC = CONTROL.replace(name="agc", clip="agc", clip_value=0.01)
METRICS = {"amp_ssim": 0.9, "amp_mae": 0.06, "phase_ssim": 0.8, "phase_mae": 0.1}
STATS = {"status": "completed", "best_val_loss": 0.02, "grad_norm_preclip_p99": 10.0}


def write_run(root, arm=CONTROL, verdict="stable", stage="stage_a", **values):
    """A finished run folder under ``root/runs`` with the given verdict and numbers."""
    writer = RunWriter(new_run_dir(root, arm.id))
    writer.write_config(
        {
            "arm": arm.to_dict(),
            "arm_id": arm.id,
            "arm_hash": arm.hash,
            "family_hash": arm.family_hash,
            "scale": arm.scale,
            "workload": arm.workload_impl.describe(),
            "tags": {"stage": stage, "session": "test"},
        }
    )
    writer.write_history([{"epoch": 0, "val_loss": 0.5}, {"epoch": 1, "val_loss": 0.02}])
    metrics = {k: values.get(k, v) for k, v in METRICS.items()}
    stats = {k: values.get(k, v) for k, v in STATS.items()}
    writer.write_metrics(metrics)
    evidence = () if verdict == "stable" else (Evidence("test", f"made {verdict}"),)
    writer.write_stats(stats, Verdict(VerdictKind(verdict), evidence))
    writer.close()
    return writer.path


@pytest.fixture
def base(tmp_path):
    root = tmp_path / "base"
    write_run(root)
    write_run(root, AGC)
    return root


def test_compare_unchanged_runs_exits_0(tmp_path, base, capsys):
    deep = CONTROL.replace(name="deep_control", fno_blocks=8)
    write_run(base, deep, stage="stage_b")  # folders of several stages compare too
    head = tmp_path / "head"
    write_run(head)
    write_run(head, AGC)
    write_run(head, deep, stage="stage_b")
    assert main(["compare", str(base), str(head)]) == 0
    out = capsys.readouterr().out
    assert "gate passed" in out and "3 passed" in out


def test_compare_a_regression_exits_1_with_the_diff(tmp_path, base, capsys):
    head = tmp_path / "head"
    write_run(head, amp_ssim=0.8)
    write_run(head, AGC, verdict="diverged")
    assert main(["compare", str(base), str(head)]) == 1
    out = capsys.readouterr().out
    assert "amp_ssim 0.8 is below the limit 0.865" in out
    assert "verdict stable -> diverged" in out and "gate FAILED" in out


def test_compare_an_improvement_exits_0(tmp_path, base, capsys):
    head = tmp_path / "head"
    write_run(head, amp_ssim=0.99, best_val_loss=0.01)
    assert main(["compare", str(base), str(head)]) == 0
    assert "better: amp_ssim, best_val_loss" in capsys.readouterr().out


def test_compare_missing_and_changed_arms_fail_only_when_required(tmp_path, base, capsys):
    head = tmp_path / "head"
    write_run(head, CONTROL.replace(lr=1e-2))  # same id, another hash
    write_run(head, CONTROL.replace(name="new", lr=5e-4))
    assert main(["compare", str(base), str(head)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the table wraps long cells
    assert "not comparable" in out and "missing" in out
    assert "arm changed (hash" in out and "lr 0.001 -> 0.01" in out
    assert "baseline entries no run used: agc-hybrid-b4" in out
    assert main(["compare", "--require-baseline", str(base), str(head)]) == 1


def test_accept_then_compare_against_the_baseline_file(tmp_path, base, capsys):
    baselines = tmp_path / "baselines"
    assert main(["accept", str(base), "--baseline", str(baselines)]) == 0
    path = baselines / "ci" / "stage_a.json"
    assert sorted(e.arm_id for e in read_baseline(path).entries.values()) == [
        "agc-hybrid-b4",
        "control-hybrid-b4",
    ]
    assert "added" in capsys.readouterr().out
    head = tmp_path / "head"
    write_run(head, amp_mae=0.2)
    assert main(["compare", str(path), str(head)]) == 1
    assert "amp_mae 0.2 is above the limit 0.075" in capsys.readouterr().out


def test_accept_updates_the_selected_arms_only(tmp_path, base, capsys):
    path = tmp_path / "stage_a.json"
    assert main(["accept", str(base), "--baseline", str(path)]) == 0
    agc_before = read_baseline(path).entries[AGC.family_hash]
    new = tmp_path / "new"
    write_run(new, amp_ssim=0.95)
    write_run(new, AGC, amp_ssim=0.5)
    capsys.readouterr()
    assert main(["accept", str(new), "--baseline", str(path), "--arm", "control"]) == 0
    out = capsys.readouterr().out
    assert "control-hybrid-b4" in out and "updated" in out and "0.95" in out
    after = read_baseline(path)
    assert after.entries[CONTROL.family_hash].metrics["amp_ssim"].median == 0.95
    assert after.entries[AGC.family_hash] == agc_before


def test_accept_needs_a_stage(tmp_path, capsys):
    write_run(tmp_path / "runs", stage=None)
    assert main(["accept", str(tmp_path / "runs"), "--baseline", str(tmp_path / "b")]) == 2
    assert "give --stage" in capsys.readouterr().err


def test_bad_input_exits_2_naming_the_file(tmp_path, base, capsys):
    bad = tmp_path / "stage_a.json"
    bad.write_text(json.dumps({"schema": "stabilitykit.baseline", "version": 99}))
    assert main(["compare", str(bad), str(base)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "newer stabilitykit" in err
    bad.write_text("{")
    assert main(["compare", str(bad), str(base)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nothing"), str(base)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(base), str(empty)]) == 2
    assert "no run folders" in capsys.readouterr().err
    corrupt = write_run(tmp_path / "corrupt")
    (corrupt / "stats.json").write_text("{")
    assert main(["compare", str(base), str(tmp_path / "corrupt")]) == 2
    assert "stats.json" in capsys.readouterr().err


def _metrics_file(path, runs, family=True):
    from stabilitykit.gate.metrics import arm_run
    from stabilitykit.record.run_record import read_record
    from stabilitykit.report import metrics_row

    rows = []
    for p in find_runs(runs):
        record = read_record(p)
        row = metrics_row(record)
        if family:
            row["family_hash"] = arm_run(record).family_hash
        else:
            row.pop("family_hash", None)
        rows.append(row)
    payload = {"stage": "stage_a", "scale": "ci", "rows": rows, "arms": [], "references": []}
    write_json(path, stamp(payload, "stabilitykit.stage_metrics", 1))
    return path


def test_compare_stage_metrics_files(tmp_path, base, capsys):
    pytest.importorskip("stabilitykit.report")
    head = tmp_path / "head"
    write_run(head, amp_ssim=0.8)
    write_run(head, AGC)
    base_file = _metrics_file(tmp_path / "base_metrics.json", base)
    head_file = _metrics_file(tmp_path / "head_metrics.json", head)
    assert main(["compare", str(base_file), str(base_file)]) == 0
    assert main(["compare", str(base_file), str(head_file)]) == 1
    assert main(["compare", str(base), str(head_file)]) == 1
    assert "amp_ssim 0.8 is below" in capsys.readouterr().out
    no_family = _metrics_file(tmp_path / "old_metrics.json", head, family=False)
    assert main(["compare", str(base), str(no_family)]) == 2
    assert "no family_hash" in capsys.readouterr().err


def test_report_renders_the_stage_summary(tmp_path, base, capsys):
    pytest.importorskip("stabilitykit.report.terminal")
    out = tmp_path / "out"
    assert main(["report", str(base), "--out", str(out)]) == 0
    assert "control" in capsys.readouterr().out
    assert (out / "stage_a_metrics.json").exists() and (out / "summary.md").exists()


def test_merge_joins_shards_once(tmp_path, capsys):
    pytest.importorskip("stabilitykit.report.terminal")
    one, two = tmp_path / "shard1", tmp_path / "shard2"
    write_run(one)
    write_run(two, AGC)
    write_run(two, stage="stage_b")  # another stage: left out
    out = tmp_path / "merged"
    assert main(["merge", str(one), str(two), "--out", str(out), "--stage", "stage_a"]) == 0
    assert len(find_runs(out / "runs")) == 2
    assert (out / "stage_a_metrics.json").exists()
    assert main(["merge", str(one), str(two), "--out", str(out), "--stage", "stage_a"]) == 0
    assert len(find_runs(out / "runs")) == 2
    assert "2 already there" in capsys.readouterr().out
    rows = json.loads((out / "stage_a_metrics.json").read_text())["rows"]
    assert sorted(r["arm_name"] for r in rows) == ["agc", "control"]
