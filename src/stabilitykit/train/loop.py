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

from stabilitykit.train.clipping import Clipper
from stabilitykit.train.schedulers import build_scheduler
from stabilitykit.train.telemetry import StepBuffer
from stabilitykit.workload import Batch, LossFn, Tensors

STATUSES = ("completed", "diverged", "out_of_memory", "error", "interrupted")


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
    name: str, params: Any, lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.Optimizer:
    """``adam`` / ``adamw`` with ``betas``; ``sgd`` with momentum ``betas[0]``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=weight_decay)
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


def train(
    setup: TrainSetup,
    on_steps: Callable[[list[dict[str, Any]]], None],
    on_epoch: Callable[[dict[str, Any]], None],
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> TrainOutcome:
    """Train ``setup.model``; stop at once on a non-finite loss or gradient.

    ``on_steps`` receives step rows (``step, epoch, lr, loss``, and every ``grad_norm_every``
    steps ``grad_norm_preclip``/``grad_norm_postclip``); ``on_epoch`` one row per epoch
    (epoch 0 is the model before training). ``KeyboardInterrupt`` is recorded as ``interrupted``
    in the returned outcome and re-raised by the caller's choice (see ``run_arm``).
    """
    outcome = TrainOutcome(status="completed")
    buffer = StepBuffer(on_steps, setup.flush_every)
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
    started = time.perf_counter()
    step = 0
    try:
        row = {"epoch": 0, "train_loss": None, "val_loss": validation_loss(setup)}
        row.update(lr=scheduler.lr, seconds=0.0)
        outcome.history.append(row)
        on_epoch(row)
        setup.model.train()
        for epoch in range(1, setup.epochs + 1):
            epoch_start = time.perf_counter()
            order = torch.randperm(n, generator=generator).to(train_tensors[0].device)
            lr = scheduler.lr
            loss_sum = train_tensors[0].new_zeros((), dtype=torch.float32)
            for i in range(steps_per_epoch):
                index = order[i * setup.batch_size : (i + 1) * setup.batch_size]
                setup.optimizer.zero_grad(set_to_none=True)
                loss = batch_loss(setup, tuple(t[index] for t in train_tensors))
                if step == 0:
                    check_loss(setup, loss)
                loss.backward()
                pre, post = setup.clipper(setup.model)
                setup.optimizer.step()
                step += 1
                loss_sum += loss.detach()
                logged = (step - 1) % setup.grad_norm_every == 0
                bad = buffer.add(
                    step, epoch, lr, loss, pre if logged else None, post if logged else None
                )
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
