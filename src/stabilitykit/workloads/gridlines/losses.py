"""Measurement-domain losses (docs/gridlines.md §2): pure functions of predicted and measured
amplitude.

Both divide by ``mean(X_batch) + 1e-8``, detached, so the loss scale does not depend on the photon
count and no gradient flows through the normaliser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch

DENOMINATOR_EPS = 1e-8
LOG_EPS = 1e-12  # keeps log(rate) finite where the predicted amplitude is 0


def _check_pair(name: str, pred_amp: torch.Tensor, measured: torch.Tensor) -> None:
    if pred_amp.shape != measured.shape:
        raise ValueError(
            f"{name}: expected pred_amp and measured of equal shape, got "
            f"{tuple(pred_amp.shape)} and {tuple(measured.shape)}"
        )
    if pred_amp.ndim < 1:
        raise ValueError(f"{name}: expected a batch dimension, got a scalar")


def _denominator(measured: torch.Tensor) -> torch.Tensor:
    return measured.detach().mean() + DENOMINATOR_EPS


def mae_loss(pred_amp: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """``mean|A_hat - X| / (mean(X) + 1e-8)``, the denominator detached; a scalar.

    Shapes: ``pred_amp`` (A_hat) and ``measured`` (X) equal, e.g. ``(B, C, N, N)``.
    """
    _check_pair("mae_loss", pred_amp, measured)
    return (pred_amp - measured).abs().mean() / _denominator(measured)


def poisson_loss(pred_amp: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """Poisson NLL of counts ``k = X²`` under rate ``lam = A_hat²``; a scalar.

    ``sum(lam - k * log(lam + 1e-12))`` over each sample (all dims but the first), mean over the
    batch, divided by the detached ``mean(X) + 1e-8``. The constant ``log(k!)`` is dropped: it
    does not depend on the prediction. Minimal at ``A_hat = X`` (up to the 1e-12).
    """
    _check_pair("poisson_loss", pred_amp, measured)
    rate = pred_amp.square()
    counts = measured.square()
    nll = rate - counts * torch.log(rate + LOG_EPS)
    return nll.flatten(1).sum(dim=1).mean() / _denominator(measured)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Mapping[str, LossFn] = MappingProxyType({"mae": mae_loss, "poisson": poisson_loss})


def get_loss(name: str) -> LossFn:
    """The loss called ``name``; an unknown name raises ValueError listing the allowed ones."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; allowed: {sorted(LOSSES)}") from None
