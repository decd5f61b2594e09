"""``run_arm``: describe an arm, train it, evaluate it, judge it, and leave a complete record.

Data flows one way: arm -> data set -> model -> training -> evaluation -> verdict -> record.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stabilitykit.arm import Arm, scale_changes
from stabilitykit.cache import default_cache_dir
from stabilitykit.judge.criteria import DEFAULT_CRITERIA, Criterion, Observation, judge
from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
from stabilitykit.record.run_record import (
    RunRecord,
    RunWriter,
    new_run_dir,
    read_record,
)
from stabilitykit.train.clipping import Clipper
from stabilitykit.train.loop import (
    TrainOutcome,
    TrainSetup,
    build_optimizer,
    is_out_of_memory,
    train,
)
from stabilitykit.train.telemetry import summarise_history, summarise_steps
from stabilitykit.workload import Evaluation, Tensors, Workload, WorkloadError

ProgressFn = Callable[[int, int, dict[str, Any]], None]

STATUS_VERDICTS = {
    "out_of_memory": VerdictKind.OUT_OF_MEMORY,
    "error": VerdictKind.ERROR,
    "interrupted": VerdictKind.INTERRUPTED,
}


@dataclass(frozen=True)
class ArmResult:
    """What ``run_arm`` returns: the verdict, named metrics, summary stats, history, the folder."""

    arm: Arm
    verdict: Verdict
    metrics: dict[str, Any]
    stats: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path

    @property
    def record(self) -> RunRecord:
        return read_record(self.run_dir)


#: The engine's code on the path from arm to numbers (each workload's code has a fingerprint of
#: its own, in the arm hash).
NUMERIC_CODE = ("arm.py", "run.py", "workload.py", "cache.py", "train")


@functools.cache
def code_fingerprint() -> str:
    """sha256 (16 hex) over the source of :data:`NUMERIC_CODE` (reports and gates excluded: they
    do not change a run's numbers)."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for name in NUMERIC_CODE:
        target = root / name
        for path in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    import skimage

    import stabilitykit

    return {
        "stabilitykit": stabilitykit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
    }


def check_device(device: str, field: str = "Arm.device") -> None:
    """Raise ``ValueError`` (naming ``field``) before any work when ``device`` is not here."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{field}: {device!r} requested but CUDA is not available here")
    if device.startswith("cuda:") and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise ValueError(
            f"{field}: {device!r} requested; {torch.cuda.device_count()} CUDA device(s) here"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{field}: 'mps' requested but MPS is not available here")


def seeds(arm: Arm) -> dict[str, int]:
    """The effective seeds, all derived from the arm (recorded in config.json)."""
    return {"model_init": arm.seed, "shuffle": arm.seed + 1, **arm.workload_impl.seeds(arm.data)}


def count_parameters(model: torch.nn.Module) -> int:
    """Number of scalar parameters of ``model`` (all of them)."""
    return sum(p.numel() for p in model.parameters())


def _model_summaries(model: torch.nn.Module) -> dict[str, Any]:
    """Summaries of InstanceNorm weights and LayerScale gammas (None when the model has none)."""
    norm_w = [
        m.weight.detach().flatten()
        for m in model.modules()
        if isinstance(m, torch.nn.InstanceNorm2d) and m.weight is not None
    ]
    gammas = [p.detach().flatten() for n, p in model.named_parameters() if "layerscale" in n]
    out: dict[str, Any] = {}
    for key, parts in (("norm_weight", norm_w), ("layerscale", gammas)):
        if parts:
            v = torch.cat(parts).abs().float().cpu()
            out[key] = {
                "mean_abs": float(v.mean()),
                "min_abs": float(v.min()),
                "max_abs": float(v.max()),
            }
        else:
            out[key] = None
    return out


def _config(
    arm: Arm,
    data_hash: str,
    model: torch.nn.Module | None,
    clipper: Clipper,
    tags: dict[str, str],
    written: Arm | None = None,
) -> dict[str, Any]:
    describe = getattr(model, "describe", None)
    return {
        "arm": arm.to_dict(),
        "arm_id": arm.id,
        "arm_hash": arm.hash,
        "family_hash": arm.family_hash,
        "scale": arm.scale,
        "scale_changes": scale_changes(written, arm) if written is not None else {},
        "seeds": seeds(arm),
        "device": arm.device,
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "code_fingerprint": code_fingerprint(),
        "data_hash": data_hash,
        "workload": arm.workload_impl.describe(),
        "spectral_implementation": getattr(model, "spectral_implementation", None),
        "model": describe() if callable(describe) else {},
        "parameters": count_parameters(model) if model is not None else None,
        "clipping": clipper.description,
        "hostname": platform.node(),
        # CPU kernels (oneDNN, MKL) are chosen per processor: numbers are exact per machine kind
        "cpu": {
            "machine": platform.machine(),
            "capability": torch.backends.cpu.get_cpu_capability(),
        },
        "tags": tags,
    }


def _setup(
    arm: Arm, data: Any, model: torch.nn.Module, clipper: Clipper, device: torch.device
) -> TrainSetup:
    workload = arm.workload_impl
    return TrainSetup(
        model=model,
        tensors=workload.tensors(data, device),
        loss_fn=workload.loss_fn(arm.loss, data, device),
        optimizer=build_optimizer(
            arm.optimizer, model.parameters(), arm.lr, arm.betas, arm.weight_decay
        ),
        clipper=clipper,
        epochs=arm.epochs,
        batch_size=arm.batch_size,
        grad_norm_every=arm.grad_norm_every,
        scheduler=arm.scheduler,
        warmup_epochs=arm.warmup_epochs,
        lr_step_epochs=arm.lr_step_epochs,
        lr_gamma=arm.lr_gamma,
        shuffle_seed=seeds(arm)["shuffle"],
        # one host sync per flush: every step on the CPU, every 64 steps on an accelerator
        flush_every=1 if device.type == "cpu" else 64,
        label=f"workload {workload.name!r}",
    )


def _failure(exc: BaseException) -> TrainOutcome:
    status = "out_of_memory" if is_out_of_memory(exc) else "error"
    return TrainOutcome(
        status=status, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
    )


def _evaluate(
    workload: Workload, model: torch.nn.Module, data: Any, tensors: Tensors, writer: RunWriter
) -> dict[str, Any]:
    model.eval()
    with torch.no_grad():
        evaluation = workload.evaluate(model, data, tensors)
    if not isinstance(evaluation, Evaluation):
        raise WorkloadError(
            workload.name, "evaluate", f"expected an Evaluation, got {type(evaluation).__name__}"
        )
    workload.check_metrics(evaluation.metrics)
    if evaluation.images:
        prediction, truth = next(iter(evaluation.images.values()))
        writer.save_reconstruction(prediction, truth)
    return dict(evaluation.metrics)


@contextlib.contextmanager
def terminal_progress(label: str) -> Iterator[ProgressFn | None]:
    """A rich progress bar on stderr while training, when stderr is a terminal; else nothing."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None, epoch=0)

        def update(step: int, total: int, info: dict[str, Any]) -> None:
            bar.update(task, completed=step, total=total, epoch=info.get("epoch", 0))

        yield update


def _verdict(
    outcome: TrainOutcome,
    stats: dict[str, Any],
    metrics: dict[str, Any],
    history: list,
    criteria: Iterable[Criterion],
    workload: dict[str, Any],
) -> Verdict:
    if outcome.status in STATUS_VERDICTS:
        message = outcome.error or outcome.status
        evidence = Evidence("run", message, step=outcome.steps or None)
        return Verdict(STATUS_VERDICTS[outcome.status], (evidence,))
    try:  # judge() turns a criterion that raises into an error failure naming it
        return judge(Observation(stats, metrics, history, workload), criteria)
    except Exception as exc:  # e.g. ``criteria`` is not an iterable of criteria
        message = f"judging raised {type(exc).__name__}: {exc}"
        return Verdict(VerdictKind.ERROR, (Evidence("criteria", message),))


def run_arm(
    arm: Arm,
    *,
    out_dir: str | os.PathLike = "reports",
    cache_dir: str | os.PathLike | None = None,
    criteria: Iterable[Criterion] = DEFAULT_CRITERIA,
    progress: bool | ProgressFn = True,
    tags: dict[str, str] | None = None,
    threads: int | None = None,
    written: Arm | None = None,
) -> ArmResult:
    """Train, evaluate and judge ``arm``; write its record to a fresh folder under
    ``out_dir/runs/``.

    A run that dies (non-finite loss, out of memory, an exception) still returns a result with
    its verdict and a complete record; Ctrl-C writes the record, then re-raises. ``tags`` (e.g.
    the stage and session) are stored in ``config.json``. ``threads`` sets torch's intra-op CPU
    threads for this run (restored afterwards): CPU results depend on it in the last bits, so it
    is recorded, and the pytest plugin fixes it (``--sk-threads``, default 1). ``progress``:
    True shows a rich progress bar when stderr is a terminal, False none, or a callable
    ``(step, total_steps, info)``. ``written``: the arm as its author wrote it, when ``arm`` is
    that arm at a scale; the fields the scale changed are recorded (``scale_changes``).
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads: got {threads!r}; allowed: an int >= 1 or None")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_arm(arm, out_dir, cache_dir, criteria, progress, tags or {}, written)
    finally:
        torch.set_num_threads(previous)


def _run_arm(
    arm: Arm,
    out_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    criteria: Iterable[Criterion],
    progress: bool | ProgressFn,
    tags: dict[str, str],
    written: Arm | None,
) -> ArmResult:
    if not isinstance(arm, Arm):
        raise TypeError(f"run_arm: arm: expected an Arm, got {type(arm).__name__}")
    check_device(arm.device)
    device = torch.device(arm.device)
    workload = arm.workload_impl
    data = workload.build_data(
        arm.data, Path(cache_dir) if cache_dir is not None else default_cache_dir()
    )
    data_hash = workload.data_hash(arm.data)
    writer = RunWriter(new_run_dir(out_dir, arm.id))
    clipper = Clipper(arm.clip, arm.clip_value)
    history: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []

    def on_steps(rows: list[dict[str, Any]]) -> None:
        writer.append_steps(rows)
        steps.extend(rows)

    def on_epoch(row: dict[str, Any]) -> None:
        history.append(row)
        writer.write_history(history)

    model: torch.nn.Module | None = None
    setup: TrainSetup | None = None
    try:
        try:
            torch.manual_seed(seeds(arm)["model_init"])
            model = workload.build_model(data, arm.architecture, **arm.model_kwargs())
            if not isinstance(model, torch.nn.Module):
                raise WorkloadError(
                    workload.name, "build_model", f"expected an nn.Module, got {type(model)}"
                )
            model = model.to(device)
            writer.write_config(_config(arm, data_hash, model, clipper, tags, written))
            setup = _setup(arm, data, model, clipper, device)
            if callable(progress) or not progress:
                outcome = train(setup, on_steps, on_epoch, progress or None)
            else:
                with terminal_progress(arm.id) as bar:
                    outcome = train(setup, on_steps, on_epoch, bar)
        except KeyboardInterrupt:
            outcome = TrainOutcome(status="interrupted")
        except Exception as exc:  # e.g. a model too large to build: a verdict, not a crash
            outcome = _failure(exc)
        if not (writer.path / "config.json").exists():
            writer.write_config(_config(arm, data_hash, model, clipper, tags, written))
        metrics: dict[str, Any] = {}
        if outcome.status == "completed" and model is not None and setup is not None:
            try:
                metrics = _evaluate(workload, model, data, setup.tensors, writer)
            except Exception as exc:
                outcome = _failure(exc)
        stats = {
            "status": outcome.status,
            "train_seconds": outcome.seconds,
            "error": outcome.error,
            "traceback": outcome.traceback,
            **summarise_history(history),
        }
        stats.update(summarise_steps(steps))
        if outcome.nonfinite_step is not None:
            stats["nonfinite"], stats["nonfinite_step"] = True, outcome.nonfinite_step
        if model is not None:
            stats.update(_model_summaries(model))
            stats["parameters"] = count_parameters(model)
        verdict = _verdict(outcome, stats, metrics, history, criteria, workload.describe())
        writer.write_metrics(metrics)
        if model is not None:
            writer.save_model(model.state_dict())
        writer.write_stats(stats, verdict)
    finally:
        writer.close()
    if outcome.status == "interrupted":
        raise KeyboardInterrupt
    return ArmResult(arm, verdict, metrics, stats, history, writer.path)
