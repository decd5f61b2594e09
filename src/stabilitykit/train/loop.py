"""The training loop: plain PyTorch, the workload's loss, clipping, telemetry, per-epoch validation.

The loop owns no files: it hands step rows to ``on_steps`` and epoch rows to ``on_epoch`` as they
happen, and returns a :class:`TrainOutcome` whose ``status`` says how it ended.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stabilitykit.train.checkpoint import rng_state, set_rng_state
from stabilitykit.train.clipping import Clipped, Clipper
from stabilitykit.train.layers import LayerTelemetry
from stabilitykit.train.schedulers import build_scheduler
from stabilitykit.train.telemetry import StepBuffer
from stabilitykit.workload import Batch, LossFn, Tensors

#: ``stopped``: a replay reached its step.
STATUSES = ("completed", "diverged", "out_of_memory", "error", "interrupted", "stopped")


@dataclass
class TrainOutcome:
    status: str  # one of STATUSES
    steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_step: int | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class TrainSetup:
    """Everything the loop needs, already on the device: the model, the workload's tensors and
    its loss ``loss_fn(model, batch) -> 0-d tensor``. ``label`` names the workload in errors."""

    model: nn.Module
    tensors: Tensors
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    clipper: Clipper
    epochs: int
    batch_size: int
    grad_norm_every: int
    scheduler: str = "constant"
    warmup_epochs: int = 0
    lr_step_epochs: int = 100
    lr_gamma: float = 0.5
    shuffle_seed: int = 0
    flush_every: int = 1
    eval_batch_size: int = 128
    label: str = "workload"


def build_optimizer(
    name: str,
    params: Any,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """``adam`` / ``adamw`` with ``betas``; ``sgd`` with momentum ``betas[0]``. ``fused``: the
    fused kernel (a fast-path option, :mod:`stabilitykit.train.fast`); else torch's default."""
    extra: dict[str, Any] = {"fused": True} if fused else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, **extra)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, **extra)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=weight_decay, **extra)
    raise ValueError(f"optimizer: got {name!r}; allowed: ('adam', 'adamw', 'sgd')")


def batch_loss(setup: TrainSetup, batch: Batch) -> torch.Tensor:
    """The workload's loss of the model on ``batch``."""
    return setup.loss_fn(setup.model, batch)


def check_loss(setup: TrainSetup, loss: object) -> torch.Tensor:
    """``loss`` when it is a 0-d floating tensor, else a ``ValueError`` naming the workload."""
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.is_floating_point():
        got = f"shape {tuple(loss.shape)} {loss.dtype}" if isinstance(loss, torch.Tensor) else loss
        raise ValueError(
            f"{setup.label}, loss_fn: expected a 0-d floating tensor (a scalar loss), got {got!r}"
        )
    return loss


@torch.no_grad()
def validation_loss(setup: TrainSetup) -> float:
    """Mean loss over the test split (batch-size weighted), in eval mode."""
    setup.model.eval()
    test = setup.tensors.test
    total, count = test[0].new_zeros((), dtype=torch.float32), 0
    for start in range(0, len(test[0]), setup.eval_batch_size):
        batch = tuple(t[start : start + setup.eval_batch_size] for t in test)
        total += check_loss(setup, batch_loss(setup, batch)) * len(batch[0])
        count += len(batch[0])
    setup.model.train()
    return float(total / max(count, 1))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


@dataclass
class Hooks:
    """Optional extras of :func:`train`.

    ``resume``: a checkpoint state (:func:`~stabilitykit.train.checkpoint.load_checkpoint`) to
    continue from, at the start of the epoch after it. ``on_checkpoint``: receives the state at
    the end of every epoch (the caller writes it). ``telemetry``: per-layer rows and spikes.
    ``stop_after`` and ``inspect`` (replay): call ``inspect`` at step ``stop_after``, after the
    backward pass and clipping, before the optimiser step, then stop (status ``stopped``).
    ``arm_hash`` and ``code_fingerprint`` are stamped into the checkpoints.
    """

    resume: dict[str, Any] | None = None
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None
    telemetry: LayerTelemetry | None = None
    stop_after: int | None = None
    inspect: Callable[[StepView], None] | None = None
    arm_hash: str = ""
    code_fingerprint: str = ""


@dataclass(frozen=True)
class StepView:
    """One step as replay sees it: the batch (sample indices and tensors), its loss and what
    clipping saw, before the optimiser step."""

    step: int
    epoch: int
    indices: torch.Tensor
    batch: Batch
    loss: torch.Tensor
    clipped: Clipped


def train(
    setup: TrainSetup,
    on_steps: Callable[[list[dict[str, Any]]], None],
    on_epoch: Callable[[dict[str, Any]], None],
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    hooks: Hooks | None = None,
) -> TrainOutcome:
    """Train ``setup.model``; stop at once on a non-finite loss or gradient.

    ``on_steps`` receives step rows (``step, epoch, lr, loss``, and every ``grad_norm_every``
    steps ``grad_norm_preclip``/``grad_norm_postclip``); ``on_epoch`` one row per epoch
    (epoch 0 is the model before training). ``KeyboardInterrupt`` is recorded as ``interrupted``
    in the returned outcome and re-raised by the caller's choice (see ``run_arm``). ``hooks``:
    checkpoints, resume, per-layer telemetry, replay (:class:`Hooks`).
    """
    hooks = hooks or Hooks()
    outcome = TrainOutcome(status="completed")
    telemetry = hooks.telemetry

    def sink(rows: list[dict[str, Any]]) -> None:
        on_steps(rows)  # first: the step rows reach the record whatever the telemetry does
        if telemetry is not None:
            telemetry.on_rows(rows)

    buffer = StepBuffer(sink, setup.flush_every)
    scheduler = build_scheduler(
        setup.optimizer,
        setup.scheduler,
        epochs=setup.epochs,
        warmup_epochs=setup.warmup_epochs,
        step_epochs=setup.lr_step_epochs,
        gamma=setup.lr_gamma,
    )
    generator = torch.Generator().manual_seed(setup.shuffle_seed)
    train_tensors = setup.tensors.train
    n = len(train_tensors[0])
    steps_per_epoch = max(1, -(-n // setup.batch_size))
    device = train_tensors[0].device
    started = time.perf_counter()
    step, first_epoch = 0, 1
    try:
        if hooks.resume is not None:
            state = hooks.resume
            setup.model.load_state_dict(state["model"])
            setup.optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            set_rng_state(state["rng"], device)
            if telemetry is not None:
                telemetry.load_state_dict(state["telemetry"])
            outcome.history = [dict(r) for r in state["history"]]
            step, first_epoch = int(state["step"]), int(state["epoch"]) + 1
        else:
            row = {"epoch": 0, "train_loss": None, "val_loss": validation_loss(setup)}
            row.update(lr=scheduler.lr, seconds=0.0)
            outcome.history.append(row)
            on_epoch(row)
        setup.model.train()
        for epoch in range(first_epoch, setup.epochs + 1):
            epoch_start = time.perf_counter()
            order = torch.randperm(n, generator=generator).to(device)
            lr = scheduler.lr
            loss_sum = train_tensors[0].new_zeros((), dtype=torch.float32)
            for i in range(steps_per_epoch):
                current = step + 1
                index = order[i * setup.batch_size : (i + 1) * setup.batch_size]
                setup.optimizer.zero_grad(set_to_none=True)
                batch = tuple(t[index] for t in train_tensors)
                loss = batch_loss(setup, batch)
                if current == 1 or current == hooks.stop_after:
                    check_loss(setup, loss)
                loss.backward()
                clipped = setup.clipper.clip(setup.model)
                if current == hooks.stop_after:
                    if hooks.inspect is not None:
                        hooks.inspect(StepView(current, epoch, index, batch, loss, clipped))
                    outcome.status = "stopped"
                    return outcome
                before = telemetry.snapshot(current, clipped) if telemetry is not None else None
                setup.optimizer.step()
                step = current
                if telemetry is not None:
                    telemetry.after_step(step, epoch, index, clipped, before)
                loss_sum += loss.detach()
                logged = (step - 1) % setup.grad_norm_every == 0
                pre, post = (clipped.preclip, clipped.postclip) if logged else (None, None)
                bad = buffer.add(step, epoch, lr, loss, pre, post)
                if bad is not None:
                    outcome.status, outcome.nonfinite_step = "diverged", bad
                    return outcome
                if progress is not None:
                    progress(step, setup.epochs * steps_per_epoch, {"epoch": epoch})
            bad = buffer.flush()
            if bad is not None:
                outcome.status, outcome.nonfinite_step = "diverged", bad
                return outcome
            val = validation_loss(setup)
            row = {
                "epoch": epoch,
                "train_loss": float(loss_sum) / steps_per_epoch,
                "val_loss": val,
                "lr": lr,
                "seconds": time.perf_counter() - epoch_start,
            }
            outcome.history.append(row)
            on_epoch(row)
            scheduler.step(val)
            if hooks.on_checkpoint is not None:
                hooks.on_checkpoint(
                    {
                        "arm_hash": hooks.arm_hash,
                        "code_fingerprint": hooks.code_fingerprint,
                        "epoch": epoch,
                        "step": step,
                        "model": setup.model.state_dict(),
                        "optimizer": setup.optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "generator": generator.get_state(),
                        "rng": rng_state(device),
                        "history": [dict(r) for r in outcome.history],
                        "telemetry": telemetry.state_dict() if telemetry is not None else {},
                    }
                )
    except KeyboardInterrupt:
        outcome.status = "interrupted"
    except Exception as exc:  # recorded, not swallowed: run_arm writes it into the record
        outcome.status = "out_of_memory" if is_out_of_memory(exc) else "error"
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.traceback = traceback.format_exc()
    finally:
        # the device may be unusable after an error; keep what was already flushed
        with contextlib.suppress(Exception):
            buffer.flush()
        outcome.steps = step
        outcome.seconds = time.perf_counter() - started
    return outcome
