"""The training loop: plain PyTorch, physics loss, clipping, telemetry, per-epoch validation.

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

from stabilitykit.physics.forward import far_field_amplitude
from stabilitykit.train.clipping import Clipper
from stabilitykit.train.schedulers import build_scheduler
from stabilitykit.train.telemetry import StepBuffer

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
    """Everything the loop needs, already on the device.

    ``x_train``/``x_test``: measured amplitudes ``(n, C, N, N)`` float32; ``probe`` ``(N, N)``
    complex64.
    """

    model: nn.Module
    x_train: torch.Tensor
    x_test: torch.Tensor
    probe: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    clipper: Clipper
    epochs: int
    batch_size: int
    grad_norm_every: int
    scheduler: str = "constant"
    warmup_epochs: int = 0
    shuffle_seed: int = 0
    flush_every: int = 1
    eval_batch_size: int = 128


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


def physics_loss(setup: TrainSetup, x: torch.Tensor) -> torch.Tensor:
    """Loss of the model on measured amplitudes ``x`` through the far-field forward model."""
    return setup.loss_fn(far_field_amplitude(setup.model(x), setup.probe), x)


@torch.no_grad()
def validation_loss(setup: TrainSetup) -> float:
    """Mean loss over the test split (batch-size weighted), in eval mode."""
    setup.model.eval()
    total, count = setup.x_test.new_zeros(()), 0
    for start in range(0, len(setup.x_test), setup.eval_batch_size):
        x = setup.x_test[start : start + setup.eval_batch_size]
        total += physics_loss(setup, x) * len(x)
        count += len(x)
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
        setup.optimizer, setup.scheduler, epochs=setup.epochs, warmup_epochs=setup.warmup_epochs
    )
    generator = torch.Generator().manual_seed(setup.shuffle_seed)
    n = len(setup.x_train)
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
            order = torch.randperm(n, generator=generator).to(setup.x_train.device)
            lr = scheduler.lr
            loss_sum = setup.x_train.new_zeros(())
            for i in range(steps_per_epoch):
                x = setup.x_train[order[i * setup.batch_size : (i + 1) * setup.batch_size]]
                setup.optimizer.zero_grad(set_to_none=True)
                loss = physics_loss(setup, x)
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
