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


def write_run(root, arm=CONTROL, verdict="stable", stage="stage_a", config=None, **values):
    """A finished run folder under ``root/runs`` with the given verdict and numbers; ``config``
    overrides fields of its config.json."""
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
            "numerics": {"mode": "portable", "fingerprint": "0123456789abcdef"},
            **(config or {}),
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
    assert "arm changed (hash" in out and f"lr {CONTROL.lr:g} -> 0.01" in out
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
    stage = out / "stage_a"  # the plugin's layout: OUT/<stage>/
    assert len(find_runs(stage / "runs")) == 2
    assert main(["merge", str(one), str(two), "--out", str(out), "--stage", "stage_a"]) == 0
    assert len(find_runs(stage / "runs")) == 2
    assert "2 already there" in capsys.readouterr().out
    rows = json.loads((stage / "stage_a_metrics.json").read_text())["rows"]
    assert sorted(r["arm_name"] for r in rows) == ["agc", "control"]
    assert sorted(p.name for p in out.iterdir()) == ["stage_a"]
    assert {"summary.md", "stage_a_metrics.json", "plots", "runs"} == {
        p.name for p in stage.iterdir()
    }
    assert {p.name for p in (stage / "plots").iterdir()} >= {"losses.png", "grad_norms.png"}


def test_merge_and_report_keep_two_arms_a_scale_made_one_hash(tmp_path, capsys):
    """Darcy's ``deep`` is its ``control`` at smoke (both 2 blocks): a session reports both, and
    so does the merge of its shards."""
    pytest.importorskip("stabilitykit.report.terminal")
    one, two = tmp_path / "shard1", tmp_path / "shard2"
    write_run(one)
    write_run(two, CONTROL.replace(name="deep"), amp_ssim=0.5)
    out = tmp_path / "merged"
    assert main(["merge", str(one), str(two), "--out", str(out), "--stage", "stage_a"]) == 0
    rows = json.loads((out / "stage_a" / "stage_a_metrics.json").read_text())["rows"]
    both = [("control", 0.9), ("deep", 0.5)]
    assert sorted((r["arm_name"], r["amp_ssim"]) for r in rows) == both
    # `report` on one session's folder keeps both too (write_run: one session, "test")
    session = tmp_path / "session"
    write_run(session)
    write_run(session, CONTROL.replace(name="deep"), amp_ssim=0.5)
    assert main(["report", str(session), "--out", str(tmp_path / "report")]) == 0
    rows = json.loads((tmp_path / "report" / "stage_a_metrics.json").read_text())["rows"]
    assert sorted((r["arm_name"], r["amp_ssim"]) for r in rows) == both


# --- hostile input ------------------------------------------------------------------------------


def files_under(path):
    return {p for p in path.rglob("*")}


@pytest.fixture
def sandbox(tmp_path):
    """``tmp_path/a/b``: the commands work two levels down, so ``../../x`` stays in tmp_path."""
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    return root


def test_report_refuses_a_stage_option_that_leaves_the_output_folder(sandbox, capsys):
    runs = sandbox / "runs_in"
    write_run(runs)
    before = files_under(sandbox.parents[1])
    out = sandbox / "out"
    assert main(["report", str(runs), "--stage", "../../x", "--out", str(out)]) == 2
    assert "--stage: got '../../x'; allowed: 'stage_'" in capsys.readouterr().err
    assert files_under(sandbox.parents[1]) == before


def test_names_read_from_records_cannot_lead_writes_out(sandbox, capsys):
    pytest.importorskip("stabilitykit.report.terminal")
    runs = sandbox / "runs_in"
    good = write_run(runs)
    bad_stage = write_run(runs, AGC, stage="../../x")
    bad_scale = write_run(runs, AGC.replace(seed=3), config={"scale": "../../y"})
    top = sandbox.parents[1]
    before = files_under(top)
    out = sandbox / "out"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"warning: left out {bad_stage}" in text and "tags.stage: got '../../x'" in text
    assert f"warning: left out {bad_scale}" in text and "scale: got '../../y'" in text
    assert outside(files_under(top) - before, out) == set()
    rows = json.loads((out / "stage_a_metrics.json").read_text())["rows"]
    assert [r["run"] for r in rows] == [good.name]

    baselines = sandbox / "baselines"
    assert main(["accept", str(runs), "--baseline", str(baselines)]) == 0
    assert "warning: left out" in capsys.readouterr().out
    assert outside(files_under(top) - before, out, baselines) == set()
    assert [p.name for p in _files(baselines)] == ["stage_a.json"]

    merged = sandbox / "merged"
    assert main(["merge", str(runs), "--out", str(merged), "--stage", "stage_a"]) == 0
    assert outside(files_under(top) - before, out, baselines, merged) == set()
    assert [p.name for p in find_runs(merged)] == [good.name]


def test_a_hostile_record_alone_writes_nothing_outside(sandbox, capsys):
    top = sandbox.parents[1]
    stage_runs, scale_runs = sandbox / "stage_in", sandbox / "scale_in"
    write_run(stage_runs, stage="../../x")
    write_run(scale_runs, config={"scale": "../../y"})
    before = files_under(top)
    out, baselines = sandbox / "out", sandbox / "baselines"
    assert main(["report", str(stage_runs), "--out", str(out)]) == 2
    assert "tags.stage: got '../../x'" in capsys.readouterr().err
    assert main(["accept", str(scale_runs), "--baseline", str(baselines)]) == 2
    assert "scale: got '../../y'" in capsys.readouterr().err
    for d in (stage_runs, scale_runs):
        assert main(["merge", str(d), "--out", str(out), "--stage", "stage_a"]) == 2
    assert files_under(top) == before


def outside(paths, *folders):
    """The paths that are none of ``folders`` and in none of them."""
    return {p for p in paths if not any(p == f or f in p.parents for f in folders)}


def test_merge_copies_nothing_through_a_symlink(tmp_path, capsys):
    pytest.importorskip("stabilitykit.report.terminal")
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    shard = tmp_path / "shard"
    run = write_run(shard)
    (run / "model.pt").symlink_to(secret)
    elsewhere = write_run(tmp_path / "elsewhere", AGC)
    (shard / "runs" / elsewhere.name).symlink_to(elsewhere, target_is_directory=True)
    out = tmp_path / "merged"
    assert main(["merge", str(shard), "--out", str(out), "--stage", "stage_a"]) == 0
    text = capsys.readouterr().out
    assert f"not copied {run / 'model.pt'}: a symlink" in text
    assert f"left out {shard / 'runs' / elsewhere.name}: a symlink" in text
    copied = out / "stage_a" / "runs"
    assert [p.name for p in copied.iterdir()] == [run.name]
    assert not (copied / run.name / "model.pt").exists()
    assert all("private" not in p.read_bytes().decode(errors="replace") for p in _files(out))


def _files(root):
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("config.json", []),
        ("config.json", stamp({"arm": [], "tags": {"stage": "stage_a"}})),
        ("config.json", stamp({"tags": ["stage_a"]})),
        ("stats.json", stamp({"stats": 3})),
        ("stats.json", stamp({"stats": {}, "verdict": {"kind": "fine", "evidence": []}})),
        ("stats.json", stamp({"stats": {}, "verdict": {"kind": "stable", "evidence": [3]}})),
        ("metrics.json", stamp({"metrics": [1, 2]})),
        ("history.json", stamp({"epochs": {"0": 1}})),
    ],
)
def test_a_malformed_record_is_left_out_by_name_and_the_rest_reported(
    tmp_path, capsys, name, payload
):
    pytest.importorskip("stabilitykit.report.terminal")
    runs = tmp_path / "runs_in"
    write_run(runs)
    bad = write_run(runs, AGC)
    (bad / name).write_text(json.dumps(payload))
    out = tmp_path / "out"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"warning: left out {bad}: {bad / name}" in text
    rows = json.loads((out / "stage_a_metrics.json").read_text())["rows"]
    assert [r["arm_name"] for r in rows] == ["control"]
    assert f"left out {bad}" in (out / "summary.md").read_text()


def test_no_readable_run_folder_says_why_naming_them(tmp_path, capsys):
    runs = tmp_path / "runs_in"
    bad = write_run(runs)
    (bad / "config.json").write_text("[]")
    empty = runs / "runs" / "control-hybrid-b4-seed1-20260101T000000000000Z-abcdef"
    empty.mkdir()
    assert main(["report", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "no readable run folder" in err and "2 left out" in err and "no run folders" not in err
    assert f"{bad}: {bad / 'config.json'}: not a stabilitykit.run file" in err
    assert f"{empty}: an unfinished run folder" in err


def test_an_unfinished_run_folder_is_a_named_skip(tmp_path, capsys):
    pytest.importorskip("stabilitykit.report.terminal")
    runs = tmp_path / "runs_in"
    write_run(runs)
    killed = new_run_dir(runs, AGC.id)  # killed before config.json: nothing else in it
    empty = runs / "runs" / "agc-hybrid-b4-seed1-20260101T000000000000Z-abcdef"
    empty.mkdir()
    assert main(["report", str(runs)]) == 0
    text = capsys.readouterr().out
    assert f"warning: left out {killed}: an unfinished run folder" in text
    assert f"warning: left out {empty}: an unfinished run folder" in text
    assert main(["compare", str(runs), str(runs)]) == 0


NEWER = {
    "created": "2026-01-02T00:00:00.000000+00:00",
    "tags": {"stage": "stage_a", "session": "second"},
}
OLDER = {
    "created": "2026-01-01T00:00:00.000000+00:00",
    "tags": {"stage": "stage_a", "session": "first"},
}


def test_the_newest_run_is_the_last_created_not_the_last_by_name(tmp_path, capsys):
    """A renamed arm keeps its hash: the newer ``aa_new`` must win over the older ``zz_old``,
    whose folder name sorts last."""
    pytest.importorskip("stabilitykit.report.terminal")
    runs = tmp_path / "runs_in"
    write_run(runs, CONTROL.replace(name="aa_new"), config=NEWER, amp_ssim=0.95)
    write_run(runs, CONTROL.replace(name="zz_old"), config=OLDER, amp_ssim=0.5)
    out = tmp_path / "out"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    rows = json.loads((out / "stage_a_metrics.json").read_text())["rows"]
    assert [r["arm_name"] for r in rows] == ["aa_new"]

    baseline = tmp_path / "stage_a.json"
    assert main(["accept", str(runs), "--baseline", str(baseline)]) == 0
    entry = read_baseline(baseline).entries[CONTROL.family_hash]
    assert entry.arm_name == "aa_new" and entry.metrics["amp_ssim"].median == 0.95

    head = tmp_path / "head"
    write_run(head, amp_ssim=0.95)
    capsys.readouterr()
    assert main(["compare", str(runs), str(head)]) == 0  # against aa_new's 0.95, not 0.5
    assert main(["compare", str(head), str(runs)]) == 0


def test_accept_with_a_glob_that_matches_nothing_lists_the_arms(tmp_path, base, capsys):
    assert main(["accept", str(base), "--baseline", str(tmp_path / "b"), "--arm", "zzz*"]) == 2
    err = capsys.readouterr().err
    assert "no run matches --arm zzz*; arms present: agc, control" in err
    assert "carry no stage" not in err and not (tmp_path / "b").exists()


def test_merge_of_a_stage_without_runs_says_so_and_writes_nothing(tmp_path, base, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(base), "--out", str(out), "--stage", "stage_z"]) == 2
    err = capsys.readouterr().err
    assert "no run of stage_z found in" in err and "stages found: stage_a" in err
    assert not out.exists()


def test_output_files_have_an_ordinary_files_mode(tmp_path, base):
    pytest.importorskip("stabilitykit.report.terminal")
    import os

    old = os.umask(0o027)
    try:
        out = tmp_path / "out"
        assert main(["report", str(base), "--out", str(out)]) == 0
        baseline = tmp_path / "stage_a.json"
        assert main(["accept", str(base), "--baseline", str(baseline)]) == 0
    finally:
        os.umask(old)
    written = [*_files(out), baseline]
    assert {"summary.md", "stage_a_metrics.json", "losses.png"} <= {p.name for p in written}
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o640)}
