import pytest
import torch

from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.stage import (
    StudyOptions,
    check_stage_name,
    find_cached,
    reference_result,
    run_in_stage,
    session_records,
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
