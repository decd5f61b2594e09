"""Learning-rate schedules stepped once per epoch (docs/gridlines.md §4).

One wrapper for all of them, so the loop always calls ``step(val_loss)`` and logs ``lr``: the
original study built two schedulers and never stepped them (docs/gridlines.md §7, lesson 7).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau, StepLR

SCHEDULERS = ("constant", "warmup_cosine", "plateau", "step")


def warmup_cosine_factor(
    epoch: int, *, epochs: int, warmup_epochs: int, min_ratio: float = 0.0
) -> float:
    """Multiplier of the base lr during ``epoch`` (0-based).

    Linear warmup ``(epoch + 1) / (warmup_epochs + 1)`` for ``epoch < warmup_epochs``, then
    half-cosine decay (Loshchilov & Hutter 2017, SGDR, arXiv:1608.03983, eq. (5), one cycle)
    from 1 at ``epoch = warmup_epochs`` to ``min_ratio`` at ``epoch = epochs``, i.e. after the
    last epoch's step.
    """
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    progress = min(1.0, (epoch - warmup_epochs) / (epochs - warmup_epochs))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EpochScheduler:
    """A learning-rate schedule behind one interface: ``step(val_loss)`` once per epoch, ``lr``.

    Args:
        optimizer: the optimiser whose param groups' lr it sets.
        name: one of :data:`SCHEDULERS`: ``constant``; ``warmup_cosine``
            (:func:`warmup_cosine_factor` through ``LambdaLR``); ``plateau``
            (``ReduceLROnPlateau``, mode min: the lr is multiplied by ``plateau_factor`` at the
            ``plateau_patience + 1``-th consecutive epoch without a relative improvement of
            1e-4, never below ``min_lr``); ``step`` (``StepLR``: the lr is multiplied by
            ``gamma`` every ``step_epochs`` epochs, the FNO paper's schedule).
        epochs: epochs the run will train.
        warmup_epochs: ``warmup_cosine`` only; ``0 <= warmup_epochs < epochs``.
        plateau_patience: ``plateau`` only; epochs without improvement that are tolerated.
        plateau_factor: ``plateau`` only; in (0, 1).
        min_lr: floor of ``plateau``, end point of ``warmup_cosine``; at most each group's lr.
        step_epochs, gamma: ``step`` only; an int >= 1 and a factor in (0, 1].
    """

    def __init__(
        self,
        optimizer: Optimizer,
        name: str,
        *,
        epochs: int,
        warmup_epochs: int = 0,
        plateau_patience: int = 5,
        plateau_factor: float = 0.5,
        min_lr: float = 0.0,
        step_epochs: int = 100,
        gamma: float = 0.5,
    ) -> None:
        if name not in SCHEDULERS:
            raise ValueError(f"EpochScheduler: name must be one of {SCHEDULERS}, got {name!r}")
        _check_int("epochs", epochs, low=1)
        _check_int("warmup_epochs", warmup_epochs, low=0)
        _check_int("plateau_patience", plateau_patience, low=0)
        _check_int("step_epochs", step_epochs, low=1)
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"EpochScheduler: gamma must be in (0, 1], got {gamma!r}")
        if name == "warmup_cosine" and warmup_epochs >= epochs:
            raise ValueError(
                f"EpochScheduler: warmup_epochs must be < epochs ({epochs}), got {warmup_epochs}"
            )
        if not 0.0 < plateau_factor < 1.0:
            raise ValueError(
                f"EpochScheduler: plateau_factor must be in (0, 1), got {plateau_factor!r}"
            )
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        if not 0.0 <= min_lr <= min(base_lrs):
            raise ValueError(
                f"EpochScheduler: min_lr must be in [0, {min(base_lrs)}] (the optimiser's lr), "
                f"got {min_lr!r}"
            )
        self.name = name
        self.optimizer = optimizer
        self.epochs = epochs
        self.epoch = 0
        self._torch: LRScheduler | ReduceLROnPlateau | None = None
        if name == "warmup_cosine":
            ratios = [min_lr / lr if lr else 0.0 for lr in base_lrs]
            self._torch = LambdaLR(
                optimizer, [self._cosine(epochs, warmup_epochs, r) for r in ratios]
            )
        elif name == "step":
            self._torch = StepLR(optimizer, step_size=step_epochs, gamma=gamma)
        elif name == "plateau":
            self._torch = ReduceLROnPlateau(
                optimizer, "min", factor=plateau_factor, patience=plateau_patience, min_lr=min_lr
            )

    @staticmethod
    def _cosine(epochs: int, warmup_epochs: int, min_ratio: float) -> Callable[[int], float]:
        def factor(epoch: int) -> float:
            return warmup_cosine_factor(
                epoch, epochs=epochs, warmup_epochs=warmup_epochs, min_ratio=min_ratio
            )

        return factor

    def step(self, val_loss: float) -> None:
        """End of an epoch: move the lr to the value for the next epoch."""
        self.epoch += 1
        if isinstance(self._torch, ReduceLROnPlateau):
            self._torch.step(float(val_loss))
        elif self._torch is not None:
            self._torch.step()

    def state_dict(self) -> dict[str, Any]:
        """The epoch count and the torch scheduler's state (for a checkpoint)."""
        inner = self._torch.state_dict() if self._torch is not None else {}
        inner.pop("lr_lambdas", None)  # functions: rebuilt from the arm, not saved
        return {"name": self.name, "epoch": self.epoch, "torch": inner}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(
                f"EpochScheduler: the saved state is of scheduler {state.get('name')!r}, "
                f"not {self.name!r}"
            )
        self.epoch = int(state["epoch"])
        if self._torch is not None:
            inner = dict(state["torch"])
            if isinstance(self._torch, LambdaLR):
                inner["lr_lambdas"] = [None] * len(self.optimizer.param_groups)
            self._torch.load_state_dict(inner)

    @property
    def lr(self) -> float:
        """Learning rate of the first param group, as the optimiser will use it next."""
        return float(self.optimizer.param_groups[0]["lr"])


def build_scheduler(
    optimizer: Optimizer, name: str, *, epochs: int, **kw: object
) -> EpochScheduler:
    """:class:`EpochScheduler` by name; an unknown name raises ``ValueError`` listing SCHEDULERS."""
    return EpochScheduler(optimizer, name, epochs=epochs, **kw)


def _check_int(name: str, value: object, *, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"EpochScheduler: {name} must be an int >= {low}, got {value!r}")
