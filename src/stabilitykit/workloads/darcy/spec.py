"""The 2-D Darcy-flow data-set specification: one frozen, validated value.

The benchmark of Li et al. 2021, "Fourier Neural Operator for Parametric PDEs" (ICLR), §5.2:
``-div(a grad u) = 1`` on the unit square, ``u = 0`` on the boundary; ``a`` is ``a_high`` where a
Gaussian random field is >= 0, else ``a_low``. The field has covariance
``tau**(2 alpha - 2) (-Laplace + tau**2)**(-alpha)`` in the zero-Neumann cosine eigenbasis
(FNO: ``tau = 3``, ``alpha = 2``, ``a_high = 12``, ``a_low = 3``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

MIN_RESOLUTION = 8  # below this the grid has under 6 x 6 interior nodes: too coarse to resolve a(x)
MAX_RESOLUTION = 1024  # ~10**6 unknowns per sample's sparse direct solve


def _fail(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"DarcySpec.{name}: got {value!r}; allowed: {allowed}")


def _check_int(name: str, value: Any, lo: int, hi: int | None = None, why: str = "") -> int:
    allowed = f"an int >= {lo}" if hi is None else f"an int in [{lo}, {hi}]"
    allowed += f" ({why})" if why else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(name, value, allowed)
    if value < lo or (hi is not None and value > hi):
        raise _fail(name, value, allowed)
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _fail(name, value, "a finite number > 0")
    return float(value)


@dataclass(frozen=True)
class DarcySpec:
    """Everything that determines a Darcy data set; equal specs give bit-identical arrays.

    Args:
        resolution: ``s``, nodes per side including the boundary (grid spacing ``1 / (s - 1)``).
        n_train: number of training pairs ``(a, u)``.
        n_test: number of test pairs (drawn from their own random stream).
        seed: root seed (int >= 0) of the random streams.
        tau: inverse length scale of the Gaussian random field (FNO: 3).
        alpha: smoothness exponent of the field's covariance (FNO: 2).
        a_high: coefficient where the field is >= 0 (FNO: 12).
        a_low: coefficient where the field is < 0 (FNO: 3).
    """

    resolution: int = 85
    n_train: int = 1000
    n_test: int = 100
    seed: int = 0
    tau: float = 3.0
    alpha: float = 2.0
    a_high: float = 12.0
    a_low: float = 3.0

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put(
            "resolution",
            _check_int(
                "resolution",
                self.resolution,
                MIN_RESOLUTION,
                MAX_RESOLUTION,
                why="below 8 the grid has under 6 x 6 interior nodes, too few to resolve a(x)",
            ),
        )
        put("n_train", _check_int("n_train", self.n_train, 1))
        put("n_test", _check_int("n_test", self.n_test, 1))
        put("seed", _check_int("seed", self.seed, 0))
        for name in ("tau", "alpha", "a_high", "a_low"):
            put(name, _check_positive(name, getattr(self, name)))

    @property
    def channels(self) -> int:
        """Input channels of a sample: 1 (the coefficient ``a``)."""
        return 1

    def replace(self, **changes: Any) -> DarcySpec:
        """A validated copy with ``changes`` applied; unknown field names raise ValueError."""
        _reject_unknown(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-safe dict (ints and floats)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DarcySpec:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys raise ValueError."""
        _reject_unknown(d)
        return cls(**d)


def _reject_unknown(d: dict[str, Any]) -> None:
    allowed = [f.name for f in fields(DarcySpec)]
    unknown = sorted(set(d) - set(allowed), key=str)
    if unknown:
        raise ValueError(f"DarcySpec: unknown field(s) {unknown}; allowed: {allowed}")
