"""``run_arm``: describe an arm, train it, evaluate it, judge it, and leave a complete record.

Data flows one way: arm -> data set -> model -> training -> evaluation -> verdict -> record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import platform
import shutil
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stabilitykit.arm import Arm, scale_changes
from stabilitykit.cache import default_cache_dir
from stabilitykit.judge.criteria import DEFAULT_CRITERIA, Criterion, Observation, judge
from stabilitykit.judge.spikes import DEFAULT_RULES, SpikeRule
from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
from stabilitykit.numerics import applied as numerics_applied
from stabilitykit.numerics import check_mode
from stabilitykit.record.code import code_under_test
from stabilitykit.record.lock import RunLock
from stabilitykit.record.run_record import (
    CHECKPOINTS,
    RunRecord,
    RunWriter,
    new_run_dir,
    read_record,
)
from stabilitykit.record.schema import RecordError
from stabilitykit.track import TrackedRun, Tracker, Trackers
from stabilitykit.track import trackers as make_trackers
from stabilitykit.train.checkpoint import (
    CheckpointError,
    CheckpointWriter,
    list_checkpoints,
    load_checkpoint,
)
from stabilitykit.train.clipping import Clipper
from stabilitykit.train.fast import FastPath
from stabilitykit.train.layers import LayerTelemetry
from stabilitykit.train.loop import (
    Hooks,
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


def result_from_record(record: RunRecord) -> ArmResult:
    """An :class:`ArmResult` from a complete record, with the verdict it was given."""
    arm = Arm.from_dict(record.config["arm"])
    return ArmResult(arm, record.verdict, record.metrics, record.stats, record.history, record.path)


#: The engine's code on the path from arm to numbers (each workload's code has a fingerprint of
#: its own, in the arm hash).
NUMERIC_CODE = ("arm.py", "run.py", "workload.py", "cache.py", "train")


@functools.cache
def code_fingerprint() -> str:
    """sha256 (16 hex) over the source of :data:`NUMERIC_CODE` (reports and gates excluded: they
    do not change a run's numbers), normalised as a workload's code is: comments, docstrings and
    formatting do not count (:mod:`stabilitykit.fingerprint`)."""
    from stabilitykit.fingerprint import digest, source_files

    return digest(source_files(Path(__file__).parent, NUMERIC_CODE))


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
    written: Arm | None,
    numerics: dict[str, Any],
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
        # the kernels each CPU library runs, and a fingerprint of what the bits depend on
        "numerics": numerics,
        "tags": tags,
        "code": code_under_test(type(arm.workload_impl)),
    }


def setup_for(
    arm: Arm,
    data: Any,
    model: torch.nn.Module,
    clipper: Clipper,
    device: torch.device,
    fast: FastPath | None = None,
) -> TrainSetup:
    """The loop's setup for ``arm``: the workload's tensors and loss on ``device``, a fresh
    optimiser, the arm's schedule and seeds (also what ``stabilitykit replay`` rebuilds);
    ``fast``: the speed options (:class:`~stabilitykit.train.fast.FastPath`)."""
    workload = arm.workload_impl
    return TrainSetup(
        model=model,
        tensors=workload.tensors(data, device),
        loss_fn=workload.loss_fn(arm.loss, data, device),
        optimizer=build_optimizer(
            arm.optimizer,
            model.parameters(),
            arm.lr,
            arm.betas,
            arm.weight_decay,
            fused=fast is not None and fast.fused,
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
    resume: str | os.PathLike | None = None,
    keep_checkpoints: bool = False,
    fast: FastPath | None = None,
    numerics: str | None = None,
    tensorboard: str | os.PathLike | None = None,
    mlflow: str | os.PathLike | None = None,
    trackers: Iterable[Tracker] = (),
) -> ArmResult:
    """Train, evaluate and judge ``arm``; write its record to a fresh folder under
    ``out_dir/runs/``.

    ``fast``: speed options that leave the arm's meaning alone (fused optimiser, TF32 on CUDA;
    :class:`~stabilitykit.train.fast.FastPath`), recorded in ``config.json`` (``fast_path``).

    At the end of every epoch the run's state goes to ``<run>/checkpoints/epoch-NNNN.pt``
    (atomically; only the newest is kept, and none once the run has finished, unless
    ``keep_checkpoints``: then every epoch's, for ``stabilitykit replay``). ``resume``: the run
    folder of a killed or interrupted run of this same arm and code: it continues from its last
    checkpoint in that folder and ends with the numbers an uninterrupted run gives (CPU: to the
    bit). The record says so (``resumes`` in ``config.json`` and ``stats.json``: from which epoch
    and step, and how many logged steps were replayed). A checkpoint that fails its checksum is
    refused by name (a warning, and ``refused`` in the entry): the run continues from the newest
    good one, or starts afresh in the same folder (``fallback``). A resume continues with the
    run's recorded settings (:data:`RESUME_SETTINGS`: ``threads=None`` takes the recorded count).
    A folder of another arm or code, a finished run or an explicit setting other than the
    recorded one is refused (``ValueError`` naming the folder and the difference) before
    anything is written. While a run trains or resumes its folder is locked (``run.lock``); a
    second process is refused with :class:`~stabilitykit.record.lock.RunLockedError` naming
    the holder.

    A run that dies (non-finite loss, out of memory, an exception) still returns a result with
    its verdict and a complete record; Ctrl-C writes the record, then re-raises. ``tags`` (e.g.
    the stage and session) are stored in ``config.json``. ``threads`` sets torch's intra-op CPU
    threads for this run (restored afterwards): CPU results depend on it in the last bits, so it
    is recorded, and the pytest plugin fixes it (``--sk-threads``, default 1). ``progress``:
    True shows a rich progress bar when stderr is a terminal, False none, or a callable
    ``(step, total_steps, info)``. ``written``: the arm as its author wrote it, when ``arm`` is
    that arm at a scale; the fields the scale changed are recorded (``scale_changes``).

    ``numerics``: ``auto`` (default, or the ``STABILITYKIT_NUMERICS`` environment variable),
    ``portable`` or ``native`` (:mod:`stabilitykit.numerics`): which CPU kernels may run. The
    mode in force and what it depends on are recorded (``numerics`` in ``config.json``); a
    resume continues in the recorded mode. ``portable`` that cannot be guaranteed raises
    :class:`~stabilitykit.numerics.NumericsError` before anything is written.

    ``tensorboard`` (a folder), ``mlflow`` (a tracking URI or folder) and ``trackers`` (more
    :class:`~stabilitykit.track.Tracker` objects) mirror the run into experiment trackers as it
    goes (:mod:`stabilitykit.track`, docs/trackers.md); a resume continues their curves. A
    tracker that fails is left out for the rest of the run and named in ``stats.json``
    (``trackers``); the record is complete regardless.
    """
    tracked = make_trackers(tensorboard, mlflow, trackers)  # a missing extra: before any work
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads: got {threads!r}; allowed: an int >= 1 or None")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    held = contextlib.ExitStack()  # the run folder's lock, released after the record is written
    try:
        return _run_arm(
            arm,
            out_dir,
            cache_dir,
            criteria,
            progress,
            tags or {},
            written,
            resume,
            keep_checkpoints,
            fast or FastPath(),
            threads,
            held,
            numerics,
            tracked,
        )
    finally:
        held.close()
        torch.set_num_threads(previous)


def _run_arm(
    arm: Arm,
    out_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    criteria: Iterable[Criterion],
    progress: bool | ProgressFn,
    tags: dict[str, str],
    written: Arm | None,
    resume: str | os.PathLike | None = None,
    keep_checkpoints: bool = False,
    fast: FastPath = FastPath(),  # noqa: B008 (frozen, immutable)
    threads: int | None = None,
    held: contextlib.ExitStack | None = None,
    numerics: str | None = None,
    tracked: Trackers | None = None,
) -> ArmResult:
    tracked = tracked if tracked is not None else Trackers()
    if not isinstance(arm, Arm):
        raise TypeError(f"run_arm: arm: expected an Arm, got {type(arm).__name__}")
    if not isinstance(fast, FastPath):
        raise ValueError(f"fast: got {fast!r}; allowed: a FastPath or None")
    if not isinstance(keep_checkpoints, bool):
        raise ValueError(f"keep_checkpoints: got {keep_checkpoints!r}; allowed: True or False")
    criteria = tuple(criteria) if isinstance(criteria, Iterable) else criteria
    held = held if held is not None else contextlib.ExitStack()
    if numerics is not None:
        check_mode(numerics)
    if not isinstance(out_dir, (str, os.PathLike)) or Path(out_dir).is_file():
        raise ValueError(f"out_dir: got {out_dir!r}; allowed: a folder (made when missing)")
    prior = None
    if resume is not None:
        check_run_folder(resume)
        held.enter_context(RunLock(Path(resume)))  # before reading: one resume at a time
        asked = {"threads": threads, "numerics": None if numerics in (None, "auto") else numerics}
        prior = check_resume(Path(resume), arm, asked)
        if prior.settings["threads"] is not None:
            torch.set_num_threads(prior.settings["threads"])  # run_arm restores it
        for refused in prior.refused:
            warnings.warn(f"stabilitykit: refused {refused['reason']}", stacklevel=3)
    check_device(arm.device)
    if prior is not None and prior.settings.get("numerics") is not None:
        numerics = prior.settings["numerics"]  # the recorded mode (a conflict was refused)
    # before this run's first kernel: the libraries choose theirs once per process
    numerics_block = held.enter_context(numerics_applied(numerics, arm.device))
    device = torch.device(arm.device)
    workload = arm.workload_impl
    data = workload.build_data(
        arm.data, Path(cache_dir) if cache_dir is not None else default_cache_dir()
    )
    data_hash = workload.data_hash(arm.data)
    if prior is None:
        folder = new_run_dir(out_dir, arm.id)
        held.enter_context(RunLock(folder))
    writer = RunWriter(prior.path if prior is not None else folder)
    clipper = Clipper(arm.clip, arm.clip_value)
    history: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    resumes: list[dict[str, Any]] = []
    if prior is not None:
        resumes = prior.resume(writer)
        history, steps = list((prior.state or {}).get("history", [])), prior.steps
    checkpoints = CheckpointWriter(
        lambda: writer.path / CHECKPOINTS,  # the run folder's final name (config is written)
        keep=keep_checkpoints,
        background=device.type != "cpu",
    )

    def on_steps(rows: list[dict[str, Any]]) -> None:
        writer.append_steps(rows)
        steps.extend(rows)
        tracked.steps(rows)

    def on_epoch(row: dict[str, Any]) -> None:
        history.append(row)
        writer.write_history(history)
        tracked.epoch(row)

    def on_layers(rows: list[dict[str, Any]]) -> None:
        writer.append_layers(telemetry.header(), rows)
        tracked.layers(telemetry.names, rows)

    model: torch.nn.Module | None = None
    setup: TrainSetup | None = None
    telemetry: LayerTelemetry | None = None
    try:
        try:
            torch.manual_seed(seeds(arm)["model_init"])
            model = workload.build_model(data, arm.architecture, **arm.model_kwargs())
            if not isinstance(model, torch.nn.Module):
                raise WorkloadError(
                    workload.name, "build_model", f"expected an nn.Module, got {type(model)}"
                )
            model = model.to(device)
            config = _config(arm, data_hash, model, clipper, tags, written, numerics_block)
            config["fast_path"] = fast.describe()
            if prior is not None:
                config.update(created=prior.config.get("created"), resumes=resumes)
            writer.write_config(config)
            tracked.start(TrackedRun(writer.path, config, resumed=prior is not None))
            setup = setup_for(arm, data, model, clipper, device, fast)
            telemetry = LayerTelemetry(
                model,
                arm.layer_norm_every,
                spike_rules(criteria),
                on_layers,
            )
            hooks = Hooks(
                resume=prior.state if prior is not None else None,
                on_checkpoint=checkpoints.write,
                telemetry=telemetry,
                arm_hash=arm.hash,
                code_fingerprint=code_fingerprint(),
            )
            with fast.applied(device):
                if callable(progress) or not progress:
                    outcome = train(setup, on_steps, on_epoch, progress or None, hooks)
                else:
                    with terminal_progress(arm.id) as bar:
                        outcome = train(setup, on_steps, on_epoch, bar, hooks)
        except KeyboardInterrupt:
            outcome = TrainOutcome(status="interrupted")
        except Exception as exc:  # e.g. a model too large to build: a verdict, not a crash
            outcome = _failure(exc)
        if not (writer.path / "config.json").exists():
            config = _config(arm, data_hash, model, clipper, tags, written, numerics_block)
            writer.write_config(config)
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
        stats.update(summarise_steps(steps, spike_rules(criteria) or DEFAULT_RULES))
        if telemetry is not None:
            stats["spikes"] = telemetry.spikes  # the first MAX_RECORDED per rule, with evidence
            stats["spike_counts"] = telemetry.counts
            stats["spike_rules"] = [r.to_dict() for r in telemetry.detector.rules]
        stats["resumes"] = resumes
        with contextlib.suppress(OSError):  # the run's verdict stands; a failed write shows
            checkpoints.close()  # as a missing checkpoint_bytes
        stats["checkpoint_bytes"] = checkpoints.bytes
        if prior is not None:
            stats["train_seconds"] += prior.seconds
        if outcome.nonfinite_step is not None:
            stats["nonfinite"], stats["nonfinite_step"] = True, outcome.nonfinite_step
        if model is not None:
            stats.update(_model_summaries(model))
            stats["parameters"] = count_parameters(model)
        verdict = _verdict(outcome, stats, metrics, history, criteria, workload.describe())
        writer.write_metrics(metrics)
        if model is not None:
            writer.save_model(model.state_dict())
        if tracked:
            stats["trackers"] = dict(tracked.status)
        writer.write_stats(stats, verdict)
        if tracked:  # each tracker's end, from the record as written; a failure is recorded
            tracked.finish(read_record(writer.path))
            if stats["trackers"] != tracked.status:
                stats["trackers"] = dict(tracked.status)
                writer.write_stats(stats, verdict)
        if outcome.status != "interrupted" and not keep_checkpoints:
            # finished: nothing to resume
            shutil.rmtree(writer.path / CHECKPOINTS, ignore_errors=True)
    finally:
        writer.close()
        tracked.close()  # a run that raised: what the trackers hold is sent
    if outcome.status == "interrupted":
        raise KeyboardInterrupt
    return ArmResult(arm, verdict, metrics, stats, history, writer.path)


def spike_rules(criteria: Iterable[Criterion]) -> list[SpikeRule]:
    """The spike rules of the criteria that have one (``Spikes``), run online by the loop."""
    if not isinstance(criteria, Iterable):
        return []  # judging names the problem (an error verdict)
    rules = [getattr(c, "rule", None) for c in criteria]
    return [r for r in rules if isinstance(r, SpikeRule)]


#: Settings a run records in ``config.json`` that change its numbers, as ``name: path in
#: config.json``. A resume continues with the recorded value; an explicit request for another
#: one is refused (:func:`resume_settings`). The record is never rewritten.
RESUME_SETTINGS: dict[str, tuple[str, ...]] = {
    "threads": ("torch_threads",),
    "numerics": ("numerics", "mode"),
}


def resume_settings(
    where: str, config: dict[str, Any], requested: dict[str, Any]
) -> dict[str, Any]:
    """For each of :data:`RESUME_SETTINGS`, the value a resume continues with: the recorded
    one (else the requested one, for a record that lacks it). ``requested``: name -> value, or
    ``None`` when not asked for. ``ValueError`` naming the field when a request differs."""
    out: dict[str, Any] = {}
    for name, keys in RESUME_SETTINGS.items():
        recorded: Any = config
        for key in keys:
            recorded = recorded.get(key) if isinstance(recorded, dict) else None
        want = requested.get(name)
        if want is not None and recorded is not None and want != recorded:
            field = ".".join(keys)
            raise ValueError(
                f"{where}: {name}: the run was trained with {field} = {recorded!r}, asked for "
                f"{want!r}; a resume continues with the recorded value (leave {name} unset or "
                f"give {recorded!r})"
            )
        out[name] = recorded if recorded is not None else want
    return out


@dataclass
class Resumable:
    """A killed run folder checked for resuming: its config, the checkpoint to continue from
    (``state`` None: none usable, the run starts afresh in its folder), the checkpoints refused
    on the way, the kept steps and the settings it continues with."""

    path: Path
    config: dict[str, Any]
    state: dict[str, Any] | None
    checkpoint: Path | None
    seconds: float
    steps: list[dict[str, Any]]
    refused: list[dict[str, str]]
    settings: dict[str, Any]

    @property
    def fallback(self) -> str | None:
        """``None`` (the newest checkpoint), ``"earlier checkpoint"`` or ``"afresh"``."""
        if self.state is None:
            return "afresh"
        return "earlier checkpoint" if self.refused else None

    def resume(self, writer: RunWriter) -> list[dict[str, Any]]:
        """Cut the streamed rows back to the checkpoint; the ``resumes`` list for the record."""
        state = self.state or {"epoch": 0, "step": 0}
        step = int(state["step"])
        last = writer.truncate_streams(step)
        self.steps = [r for r in self.steps if isinstance(r.get("step"), int) and r["step"] <= step]
        entry = {
            "from_epoch": int(state["epoch"]),
            "from_step": step,
            "steps_replayed": last - step,
            "checkpoint": self.checkpoint.name if self.checkpoint is not None else None,
            "fallback": self.fallback,
            "refused": self.refused,
            "previous_session": (self.config.get("tags") or {}).get("session"),
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        return [*(self.config.get("resumes") or []), entry]


def check_run_folder(resume: Any) -> None:
    """``ValueError`` naming ``resume`` unless it is a folder, given as a str or path."""
    if isinstance(resume, bool) or not isinstance(resume, (str, os.PathLike)):
        raise ValueError(f"resume: got {resume!r}; allowed: a run folder (a str or path) or None")
    if not Path(resume).is_dir():
        raise ValueError(f"resume {resume}: not a readable run folder (no such folder)")


def check_resume(path: Path, arm: Arm, requested: dict[str, Any] | None = None) -> Resumable:
    """``path`` as a run folder that ``arm`` can resume, else ``ValueError`` naming the folder
    and what differs (another arm or code, a finished run, a setting of ``requested`` other than
    the recorded one: :func:`resume_settings`). Nothing is written.

    The newest checkpoint that passes its checksum and belongs to this arm and code is the one
    to continue from; those refused are named (``refused``). With none usable the run starts
    afresh in the same folder."""
    where = f"resume {path}"
    check_run_folder(path)
    path = Path(path)
    try:
        record = read_record(path)
    except (RecordError, OSError) as exc:
        raise ValueError(f"{where}: not a readable run folder ({exc})") from None
    config = record.config
    if record.complete and record.verdict.kind is not VerdictKind.INTERRUPTED:
        raise ValueError(
            f"{where}: the run finished (verdict {record.verdict.kind.value}); nothing to resume"
        )
    if config.get("arm_hash") != arm.hash:
        theirs, ours = config.get("arm") or {}, arm.to_dict()
        diff = {k: (theirs.get(k), ours.get(k)) for k in ours if theirs.get(k) != ours.get(k)}
        diff.pop("name", None)
        raise ValueError(
            f"{where}: a run of another arm (hash {config.get('arm_hash')} != {arm.hash}; "
            f"record vs now: {diff})"
        )
    if config.get("code_fingerprint") != code_fingerprint():
        raise ValueError(
            f"{where}: run by other engine code (code fingerprint "
            f"{config.get('code_fingerprint')} != {code_fingerprint()}): it would not continue "
            "with the same numbers"
        )
    settings = resume_settings(where, config, requested or {})
    refused: list[dict[str, str]] = []
    for _, checkpoint in reversed(list_checkpoints(path / CHECKPOINTS)):
        try:
            state = load_checkpoint(checkpoint)
            for key, want in (("arm_hash", arm.hash), ("code_fingerprint", code_fingerprint())):
                if state.get(key) != want:
                    raise CheckpointError(f"{checkpoint}: {key} {state.get(key)!r} != {want!r}")
        except CheckpointError as exc:
            refused.append({"checkpoint": checkpoint.name, "reason": str(exc)})
            continue
        history = state["history"]
        seconds = sum(float(r.get("seconds") or 0.0) for r in history if isinstance(r, dict))
        return Resumable(
            path, config, state, checkpoint, seconds, list(record.steps), refused, settings
        )
    return Resumable(path, config, None, None, 0.0, [], refused, settings)
