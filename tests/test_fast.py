"""Speed options: recorded, and within the gate's tolerances of the eager path."""

import json

import pytest
import torch

from stabilitykit import Arm, run_arm
from stabilitykit.arm import apply_scale
from stabilitykit.stage import StudyOptions
from stabilitykit.train.fast import FastPath

ARM = apply_scale(Arm(workload="darcy"), "smoke").replace(epochs=4)


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    out = tmp_path_factory.mktemp("eager")
    return run_arm(ARM, out_dir=out, cache_dir=out / "cache", progress=False, threads=1)


@pytest.mark.parametrize("options", ["fused", "tf32", "fused,tf32"])
def test_each_option_keeps_the_verdict_and_the_metrics_within_tolerance(eager, tmp_path, options):
    fast = FastPath.parse(options)
    result = run_arm(
        ARM, out_dir=tmp_path, cache_dir=tmp_path / "cache", progress=False, threads=1, fast=fast
    )
    assert result.verdict.kind == eager.verdict.kind
    # Darcy's declared rel_l2 tolerance is 15 % relative; the options move the last bits only
    for name, value in eager.metrics.items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-4), name
    assert result.stats["best_val_loss"] == pytest.approx(eager.stats["best_val_loss"], rel=1e-4)
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["fast_path"] == fast.describe() and config["arm_hash"] == ARM.hash
    assert json.loads((eager.run_dir / "config.json").read_text())["fast_path"] == {
        "fused": False,
        "tf32": False,
    }


def test_options_are_parsed_with_named_errors():
    assert FastPath.parse(None) == FastPath() and FastPath.parse("") == FastPath()
    assert FastPath.parse("tf32, fused") == FastPath(fused=True, tf32=True)
    assert FastPath.parse("tf32").label == "tf32" and FastPath().label == "eager"
    with pytest.raises(ValueError, match=r"--sk-fast: got 'warp'; allowed: .*'fused', 'tf32'"):
        StudyOptions(fast="warp")
    with pytest.raises(ValueError, match=r"fast: got 'fused'; allowed: a FastPath"):
        run_arm(ARM, fast="fused")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 is a CUDA setting")
def test_tf32_is_on_during_the_run_and_restored_after():
    before = torch.backends.cuda.matmul.allow_tf32
    with FastPath(tf32=True).applied(torch.device("cuda")):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before
