"""Architectures by name: build, validate without allocating, and count parameters.

>>> model = build_model("hybrid", in_channels=1, grid=64, fno_blocks=8)
>>> model.describe()["channels"]
[32, 64, 128, 256]
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from stabilitykit.models.generators import (
    CNNGenerator,
    FNOGenerator,
    HybridGenerator,
    StableHybridGenerator,
)

_GENERATORS: dict[str, type[HybridGenerator | FNOGenerator | CNNGenerator]] = {
    "hybrid": HybridGenerator,
    "stable_hybrid": StableHybridGenerator,
    "fno": FNOGenerator,
    "cnn": CNNGenerator,
}

ARCHITECTURES: tuple[str, ...] = tuple(_GENERATORS)


def _generator(name: str) -> type[HybridGenerator | FNOGenerator | CNNGenerator]:
    if name not in _GENERATORS:
        raise ValueError(f"unknown architecture {name!r}; expected one of {ARCHITECTURES}")
    return _GENERATORS[name]


def architecture_defaults(name: str) -> dict[str, Any]:
    """The keyword arguments architecture ``name`` accepts, with their defaults (a fresh dict)."""
    signature = inspect.signature(_generator(name).__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _resolved(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    defaults = architecture_defaults(name)
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise ValueError(
            f"{name}: unknown keyword argument(s) {unknown}; allowed: {sorted(defaults)}"
        )
    return {**defaults, **kwargs}


def validate_architecture(
    name: str, grid: int, *, in_channels: int | None = None, **kwargs: Any
) -> None:
    """Run every check of :func:`build_model` without allocating weights.

    Raises ``ValueError`` naming the field, the value and what is allowed.
    ``in_channels`` is checked when given.
    """
    generator = _generator(name)
    if in_channels is not None and (
        not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1
    ):
        raise ValueError(f"{name}: in_channels must be a positive int, got {in_channels!r}")
    generator.plan(grid, **_resolved(name, kwargs))


def build_model(name: str, *, in_channels: int, grid: int, **kwargs: Any) -> nn.Module:
    """Build architecture ``name`` for inputs ``(B, in_channels, grid, grid)``.

    ``kwargs`` are those of :func:`architecture_defaults`; the model maps float32 amplitudes to a
    complex64 object of the same shape and has ``spectral_implementation`` and ``describe()``.
    """
    validate_architecture(name, grid, in_channels=in_channels, **kwargs)
    return _generator(name)(in_channels, grid, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (all of them; every one is trained here)."""
    return sum(p.numel() for p in model.parameters())
