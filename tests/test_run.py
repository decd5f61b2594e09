"""run_arm at smoke scale: determinism, verdicts for each way a run can end, the record."""

import json

import pytest
import torch
from torch import nn

import stabilitykit.workloads.gridlines.workload as gridlines
from stabilitykit.arm import apply_scale
from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.record.run_record import read_record
from stabilitykit.run import run_arm
from stabilitykit.workloads.gridlines.study import CONTROL, STABLE

SMOKE = apply_scale(CONTROL, "smoke")
TIMING = {"train_seconds"}


@pytest.fixture
def run(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "data-cache"

    def go(arm, **kw):
        return run_arm(arm, out_dir=tmp_path_factory.mktemp("out"), cache_dir=cache, **kw)

    return go


def numbers(stats):
    return {k: v for k, v in stats.items() if k not in TIMING}


def test_same_arm_same_numbers_and_a_complete_record(run):
    first, second = run(SMOKE), run(SMOKE)
    assert first.run_dir != second.run_dir
    assert numbers(first.stats) == numbers(second.stats)
    assert first.metrics == second.metrics
    record = read_record(first.run_dir)
    assert record.complete and record.verdict == first.verdict
    cfg = record.config
    assert cfg["seeds"] == {"model_init": SMOKE.seed, "shuffle": SMOKE.seed + 1, "data": 20260128}
    assert cfg["arm_hash"] == SMOKE.hash and cfg["spectral_implementation"]
    assert cfg["data_hash"] and cfg["code_fingerprint"] and cfg["parameters"] > 0
    assert cfg["versions"]["torch"] == torch.__version__
    assert len(record.steps) == first.stats["steps"] > 0
    assert all("grad_norm_preclip" in s and "grad_norm_postclip" in s for s in record.steps)
    assert [h["epoch"] for h in record.history] == list(range(SMOKE.epochs + 1))
    state = record.load_state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    for key in ("amp_ssim", "amp_mae", "phase_ssim", "amp_ssim_floor", "amp_frc50"):
        assert key in record.metrics
    assert first.stats["grad_norm_postclip_max"] <= 1.0 + 1e-4  # norm clip at 1.0 ran


def test_grad_norm_every_k_steps(run):
    result = run(SMOKE.replace(grad_norm_every=4))
    logged = [s["step"] for s in result.record.steps if "grad_norm_preclip" in s]
    assert logged == list(range(1, result.stats["steps"] + 1, 4))


def test_huge_lr_without_clipping_diverges_with_its_step(run):
    arm = SMOKE.replace(optimizer="sgd", lr=1e12, clip="none", clip_value=None, epochs=3)
    result = run(arm)
    assert result.verdict.kind is VerdictKind.DIVERGED
    step = result.stats["nonfinite_step"]
    assert step is not None and result.verdict.evidence[0].step == step
    assert result.stats["steps"] == step  # stopped at once
    assert read_record(result.run_dir).verdict.kind is VerdictKind.DIVERGED


class ConstantGenerator(nn.Module):
    """Ignores its input: one learned complex value everywhere."""

    spectral_implementation = None

    def __init__(self, **_):
        super().__init__()
        self.value = nn.Parameter(torch.tensor([0.5, 0.0]))

    def forward(self, x):
        return torch.complex(self.value[0], self.value[1]).expand(x.shape).clone()


def test_constant_output_is_collapsed(run, monkeypatch):
    monkeypatch.setattr(gridlines, "build_model", lambda *a, **k: ConstantGenerator())
    result = run(SMOKE)
    assert result.verdict.kind is VerdictKind.COLLAPSED
    assert result.verdict.evidence[0].criterion == "no_collapse"


class PoisonAt(nn.Module):
    """``inner``, whose output (``what="loss"``) or gradient (``"grad"``) turns non-finite at
    training step ``step``."""

    def __init__(self, inner, step, what):
        super().__init__()
        self.inner, self.step, self.what, self.calls = inner, step, what, 0

    def forward(self, x):
        y = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.step and self.what == "loss":
                y = y * float("nan")
            elif self.calls == self.step:
                y.register_hook(lambda g: g * float("inf"))
        return y


@pytest.mark.parametrize("what", ["loss", "grad"])
@pytest.mark.parametrize("step", [1, 3])  # both logged per layer (layer_norm_every=2)
def test_a_first_non_finite_step_is_diverged_there_with_its_telemetry(run, monkeypatch, step, what):
    real = gridlines.build_model
    monkeypatch.setattr(
        gridlines, "build_model", lambda *a, **k: PoisonAt(real(*a, **k), step, what)
    )
    result = run(SMOKE.replace(layer_norm_every=2), progress=False)
    assert result.verdict.kind is VerdictKind.DIVERGED, result.stats["error"]
    assert result.stats["nonfinite_step"] == step == result.verdict.evidence[0].step
    record = read_record(result.run_dir)
    assert [s["step"] for s in record.steps] == list(range(1, step + 1))
    bad = record.steps[-1]["loss" if what == "loss" else "grad_norm_preclip"]
    assert bad in ("nan", "inf")
    rows = [json.loads(line) for line in (result.run_dir / "layers.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["step"] == step and None in last["grad_norm"] + last["update_ratio"]
    json.dumps(rows, allow_nan=False)  # standard JSON: no NaN or Infinity


def test_scheduler_moves_the_lr_and_the_record_shows_it(run):
    cosine = run(SMOKE.replace(scheduler="warmup_cosine", epochs=4, warmup_epochs=1))
    lrs = [h["lr"] for h in cosine.history[1:]]
    assert len(set(lrs)) == len(lrs) and max(lrs) <= SMOKE.lr
    step_lrs = {s["epoch"]: s["lr"] for s in cosine.record.steps}
    assert [step_lrs[e] for e in sorted(step_lrs)] == lrs
    constant = run(SMOKE.replace(epochs=3))
    assert {h["lr"] for h in constant.history} == {SMOKE.lr}


def test_out_of_memory_is_a_verdict(run, monkeypatch):
    def too_big(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.4 GiB")

    monkeypatch.setattr(gridlines, "build_model", too_big)
    result = run(SMOKE)
    assert result.verdict.kind is VerdictKind.OUT_OF_MEMORY
    assert "16.4 GiB" in result.verdict.evidence[0].message
    record = read_record(result.run_dir)
    assert record.complete and record.config["arm_hash"] == SMOKE.hash


def test_an_exception_is_an_error_verdict_with_traceback(run, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("loss exploded the kernel")

    monkeypatch.setattr(gridlines, "get_loss", lambda name: broken)
    result = run(SMOKE)
    assert result.verdict.kind is VerdictKind.ERROR
    assert "loss exploded the kernel" in result.stats["traceback"]


def test_ctrl_c_records_interrupted_then_reraises(tmp_path, monkeypatch):
    calls = {"n": 0}
    mae = gridlines.get_loss("mae")

    def interrupt_at_third_step(pred, x):
        calls["n"] += 1
        if calls["n"] == 4:  # epoch-0 validation is call 1
            raise KeyboardInterrupt
        return mae(pred, x)

    monkeypatch.setattr(gridlines, "get_loss", lambda name: interrupt_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        run_arm(SMOKE, out_dir=tmp_path, cache_dir=tmp_path / "cache")
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = read_record(run_dir)
    assert record.verdict.kind is VerdictKind.INTERRUPTED and len(record.steps) == 2


def test_stable_hybrid_records_layerscale(run):
    result = run(apply_scale(STABLE, "smoke"))
    assert result.stats["layerscale"]["max_abs"] > 0
    assert result.stats["norm_weight"] is not None
    assert json.loads((result.run_dir / "config.json").read_text())["clipping"]


def test_missing_cuda_is_a_clear_error_before_training(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match=r"Arm\.device: 'cuda'"):
        run_arm(SMOKE.replace(device="cuda"), out_dir=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_progress_is_quiet_off_a_terminal_and_shown_on_one(monkeypatch):
    from stabilitykit.run import terminal_progress

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    with terminal_progress("arm") as bar:
        assert bar is None  # pytest captures stderr: not a terminal
    monkeypatch.setenv("FORCE_COLOR", "1")
    with terminal_progress("arm") as bar:
        assert callable(bar)
        bar(3, 10, {"epoch": 1})


def test_progress_callback_sees_every_step(run):
    seen = []
    result = run(SMOKE, progress=lambda step, total, info: seen.append((step, total)))
    assert [s for s, _ in seen] == list(range(1, result.stats["steps"] + 1))
    assert {t for _, t in seen} == {result.stats["steps"]}


class BuggyCriterion:
    """A user's criterion with a bug: it reads a metric that does not exist."""

    name = "my_buggy_criterion"

    def check(self, obs):
        return obs.metrics["no_such_metric"] > 0


def test_a_criterion_that_raises_is_an_error_verdict_and_the_record_is_complete(run):
    from stabilitykit.judge.criteria import DEFAULT_CRITERIA

    result = run(SMOKE, criteria=(*DEFAULT_CRITERIA, BuggyCriterion()))
    assert result.verdict.kind is VerdictKind.ERROR
    (evidence,) = [e for e in result.verdict.evidence if e.criterion == "my_buggy_criterion"]
    assert "KeyError" in evidence.message and "no_such_metric" in evidence.message
    record = read_record(result.run_dir)
    assert record.complete and record.verdict == result.verdict  # not "interrupted"
    assert record.metrics["amp_ssim"] == result.metrics["amp_ssim"] is not None
    assert record.stats["grad_norm_preclip_max"] > 0 and record.stats["status"] == "completed"
    assert record.load_state_dict()


def test_criteria_that_cannot_be_judged_are_an_error_verdict(run):
    result = run(SMOKE, criteria=42)  # not an iterable of criteria
    assert result.verdict.kind is VerdictKind.ERROR
    assert "TypeError" in result.verdict.evidence[0].message
    assert read_record(result.run_dir).complete


def test_run_arm_wants_an_arm_and_a_thread_count(tmp_path):
    with pytest.raises(TypeError, match=r"expected an Arm, got dict"):
        run_arm(SMOKE.to_dict(), out_dir=tmp_path)
    for threads in (True, 0):
        with pytest.raises(ValueError, match=rf"threads: got {threads!r}; allowed: an int >= 1"):
            run_arm(SMOKE, out_dir=tmp_path, threads=threads)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("field", ["warmup_epochs", "seed", "epochs", "batch_size", "width"])
def test_arm_int_fields_refuse_bools(field):
    from stabilitykit.arm import Arm

    with pytest.raises(ValueError, match=rf"Arm\.{field}: got True"):
        Arm(**{field: True})
