import json

import pytest
import torch

from stabilitykit.arm import apply_scale
from stabilitykit.judge.verdict import Verdict, VerdictKind
from stabilitykit.numerics import expected_mode
from stabilitykit.record.run_record import RunWriter, new_run_dir
from stabilitykit.record.schema import stamp
from stabilitykit.run import code_fingerprint
from stabilitykit.stage import (
    StudyOptions,
    check_stage_name,
    find_cached,
    reference_result,
    run_in_stage,
    session_records,
    write_session_reports,
)
from stabilitykit.workloads.gridlines.study import CONTROL


@pytest.fixture
def options(tmp_path):
    return StudyOptions(scale="smoke", out=tmp_path / "reports", cache_dir=tmp_path / "cache")


def test_options_validate():
    with pytest.raises(ValueError, match="--sk-scale: got 'xl'"):
        StudyOptions(scale="xl")
    with pytest.raises(ValueError, match="--sk-seeds: got 0"):
        StudyOptions(seeds=0)
    with pytest.raises(ValueError, match=r"stage: got '\.\./x'"):
        check_stage_name("../x")


def test_prepare_applies_scale_device_and_replicate(options):
    arm = options.prepare(CONTROL, replicate=2)
    assert arm.scale == "smoke" and arm.seed == CONTROL.seed + 2 and arm.data.N == 16
    assert StudyOptions(scale="smoke", device="cpu").prepare(CONTROL).device == "cpu"


def test_device_option_is_checked_before_any_training():
    with pytest.raises(ValueError, match="--sk-device: got 'gpu'"):
        StudyOptions(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--sk-device: 'cuda' requested but CUDA"):
            StudyOptions(device="cuda")


def test_reference_is_loaded_from_the_last_record_else_run(options):
    first, cached = reference_result(CONTROL, "stage_a", options)
    assert not cached
    again, cached = reference_result(CONTROL, "stage_a", options)
    assert cached and again.run_dir == first.run_dir and again.stats == first.stats
    assert (
        find_cached(options.stage_dir("stage_a"), options.prepare(CONTROL.replace(seed=5))) is None
    )
    rerun = StudyOptions(scale="smoke", out=options.out, cache_dir=options.cache_dir, rerun=True)
    fresh, cached = reference_result(CONTROL, "stage_a", rerun)
    assert not cached and fresh.run_dir != first.run_dir


def test_session_records_include_half_written_runs(options):
    result = run_in_stage(CONTROL, "stage_a", options)
    (result.run_dir / "stats.json").unlink()  # as if the worker was killed
    other = StudyOptions(scale="smoke", out=options.out, cache_dir=options.cache_dir)
    run_in_stage(CONTROL, "stage_a", other)
    records = session_records(options.stage_dir("stage_a"), options.session)
    assert [r.path for r in records] == [result.run_dir]
    assert records[0].verdict.kind is VerdictKind.INTERRUPTED


# --- records written directly (no training) -----------------------------------------------------

SMOKE = apply_scale(CONTROL, "smoke")
AGC = SMOKE.replace(name="agc", clip="agc", clip_value=0.01)


def record(stage_dir, arm=SMOKE, session="old", created=None, stage="stage_a", ssim=0.9):
    """A finished run folder of ``arm`` in ``stage_dir``, as a session would leave it."""
    writer = RunWriter(new_run_dir(stage_dir, arm.id))
    config = {
        "arm": arm.to_dict(),
        "arm_id": arm.id,
        "arm_hash": arm.hash,
        "family_hash": arm.family_hash,
        "scale": arm.scale,
        "code_fingerprint": code_fingerprint(),
        "workload": arm.workload_impl.describe(),
        "tags": {"stage": stage, "session": session},
        "numerics": {"mode": expected_mode(None, arm.device)},
    }
    writer.write_config({**config, **({"created": created} if created else {})})
    writer.write_history([{"epoch": 0, "val_loss": 0.5}, {"epoch": 1, "val_loss": 0.1}])
    writer.write_metrics({"amp_ssim": ssim, "amp_mae": 0.1, "phase_ssim": 0.5, "phase_mae": 0.2})
    writer.write_stats({"status": "completed", "best_val_loss": 0.1}, Verdict(VerdictKind.STABLE))
    writer.close()
    return writer.path


def session_options(tmp_path, session):
    return StudyOptions(scale="smoke", out=tmp_path / "reports", session=session)


def rows_of(options, stage="stage_a"):
    path = options.stage_dir(stage) / f"{stage}_metrics.json"
    return json.loads(path.read_text())["rows"]


def test_stage_names_are_checked_at_every_entry(options):
    for bad in ("../x", "stage_a/../../x", "stage_", "stage_a.b", "stage_ä", "x"):
        with pytest.raises(ValueError, match="stage: got"):
            options.stage_dir(bad)
    assert options.stage_dir("stage_darcy_2") == options.out / "stage_darcy_2"


def test_a_partial_rerun_keeps_the_other_arms_from_earlier_sessions(tmp_path):
    stage_dir = tmp_path / "reports" / "stage_a"
    record(stage_dir, SMOKE, "old", ssim=0.5)
    old_agc = record(stage_dir, AGC, "old")
    record(stage_dir, AGC.replace(seed=7), "old")  # a second seed of agc
    record(stage_dir, SMOKE.replace(name="big"), "old", stage="stage_b")  # another stage's
    record(stage_dir, apply_scale(CONTROL, "ci").replace(name="wide"), "old")  # another scale
    new = session_options(tmp_path, "new")
    mine = record(stage_dir, SMOKE, "new", ssim=0.95)  # -k control
    [report] = write_session_reports(new, ["stage_a"], [])
    rows = rows_of(new)
    assert sorted((r["arm_name"], r["seed"]) for r in rows) == [
        ("agc", 7),
        ("agc", SMOKE.seed),
        ("control", SMOKE.seed),
    ]
    assert {r["run"]: r["amp_ssim"] for r in rows if r["arm_name"] == "control"} == {
        mine.name: 0.95
    }
    note = f"{old_agc.name}: not run in this session; its record from an earlier session"
    assert any(n.startswith(note) for n in report.notes)
    assert note in (stage_dir / "summary.md").read_text()


def test_a_full_rerun_reports_only_its_own_runs(tmp_path):
    stage_dir = tmp_path / "reports" / "stage_a"
    record(stage_dir, SMOKE, "old")
    record(stage_dir, AGC, "old")
    record(stage_dir, SMOKE, "new")
    newest_agc = record(stage_dir, AGC, "new")
    write_session_reports(session_options(tmp_path, "new"), ["stage_a"], [])
    rows = rows_of(session_options(tmp_path, "new"))
    assert sorted(r["arm_name"] for r in rows) == ["agc", "control"]
    assert newest_agc.name in {r["run"] for r in rows}


def test_a_malformed_record_does_not_cost_the_session_report(tmp_path):
    stage_dir = tmp_path / "reports" / "stage_a"
    mine = record(stage_dir, SMOKE, "new")
    bad_stats = record(stage_dir, AGC, "old")
    (bad_stats / "stats.json").write_text(json.dumps(stamp({"stats": 3})))
    bad_config = record(stage_dir, AGC.replace(seed=3), "new")
    (bad_config / "config.json").write_text("[]")
    killed = new_run_dir(stage_dir, AGC.id)
    new = session_options(tmp_path, "new")
    [report] = write_session_reports(new, ["stage_a"], [])
    assert [r["run"] for r in rows_of(new)] == [mine.name]
    notes = "\n".join(report.notes)
    for path in (bad_stats, bad_config, killed):
        assert f"left out {path.name}" in notes or f"left out {path}" in notes
    assert f"left out {bad_stats.name}" in (stage_dir / "summary.md").read_text()


def test_find_cached_takes_the_last_created_record(tmp_path):
    """Arm names are outside the hash: a renamed arm's older record sorts last by name."""
    stage_dir = tmp_path / "stage_a"
    new = record(stage_dir, SMOKE.replace(name="aa_new"), created="2026-01-02T00:00:00+00:00")
    record(stage_dir, SMOKE.replace(name="zz_old"), created="2026-01-01T00:00:00+00:00")
    assert find_cached(stage_dir, SMOKE).path == new


def test_find_cached_passes_over_a_record_of_other_numerics(tmp_path):
    stage_dir = tmp_path / "stage_a"
    native = record(stage_dir, SMOKE, created="2026-01-02T00:00:00+00:00")
    config = json.loads((native / "config.json").read_text())
    config["numerics"]["mode"] = "native"
    (native / "config.json").write_text(json.dumps(config))
    if expected_mode(None) == "native":
        pytest.skip("this machine runs native numerics: there is no other mode to pass over")
    assert find_cached(stage_dir, SMOKE) is None
    assert find_cached(stage_dir, SMOKE, "native").path == native


def test_a_stage_name_that_is_no_path_gets_no_report(tmp_path):
    new = session_options(tmp_path, "new")
    record(new.stage_dir("stage_a"), SMOKE, "new")
    reports = write_session_reports(new, ["stage_a", "stage_../../x"], [])
    assert [r.stage for r in reports] == ["stage_a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]
    assert sorted(p.name for p in new.out.iterdir()) == ["stage_a"]


@pytest.mark.parametrize(
    ("field", "option"), [("seeds", "--sk-seeds"), ("threads", "--sk-threads")]
)
def test_options_refuse_a_bool_for_an_int(field, option):
    with pytest.raises(ValueError, match=f"{option}: got True; allowed: an int >= 1"):
        StudyOptions(**{field: True})
