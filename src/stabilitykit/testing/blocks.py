"""Property checks for residual spectral blocks and unit-wise adaptive gradient clipping.

Each check is a plain function that raises ``AssertionError`` naming the property and the
observed number, or quoting the error when the block or AGC function under test raises; the
strategies draw its inputs. Paste::

    from hypothesis import given
    from stabilitykit.models.blocks import StablePtychoBlock
    from stabilitykit.testing.blocks import block_cases, check_layerscale_update_bound

    @given(block_cases())
    def test_update_bound(case):
        block = StablePtychoBlock(case.channels, case.modes_x, case.modes_y,
                                  layerscale_init=case.layerscale_init)
        check_layerscale_update_bound(block, case.input())

    from stabilitykit.testing.blocks import agc_cases, check_agc_within_limit
    from stabilitykit.train.clipping import agc_unit

    @given(agc_cases())
    def test_agc(case):
        check_agc_within_limit(agc_unit, case)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from hypothesis import strategies as st
from torch import Tensor, nn

AgcFunction = Callable[..., Tensor]
"""``(grad, param, clipping, eps, unit_dim) -> Tensor``, e.g. ``train.clipping.agc_unit``."""

RTOL = 1e-9

_Check = TypeVar("_Check", bound=Callable[..., None])


def _property(name: str, subject: str) -> Callable[[_Check], _Check]:
    """A check that fails with ``AssertionError`` when the code under test raises: the failure
    names the property and quotes ``subject``'s error (a block with a wrong output shape or a
    missing attribute, an AGC function that crashes), instead of a raw error from inside."""

    def wrap(check: _Check) -> _Check:
        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> None:
            try:
                check(*args, **kwargs)
            except AssertionError:
                raise
            except Exception as exc:
                raise AssertionError(
                    f"{name}: the {subject} raised {type(exc).__name__}: {exc}"
                ) from exc

        return run  # type: ignore[return-value]

    return wrap


# ---------------------------------------------------------------------------------------------
# blocks


@dataclass(frozen=True)
class BlockCase:
    """A block configuration and its float64 input ``(batch, channels, height, width)``."""

    channels: int
    modes_x: int
    modes_y: int
    height: int
    width: int
    batch: int
    layerscale_init: float
    input_scale: float
    seed: int

    def input(self) -> Tensor:
        """The float64 input, ``input_scale`` times a standard normal field."""
        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.batch, self.channels, self.height, self.width)
        return self.input_scale * torch.randn(shape, generator=generator, dtype=torch.float64)


@st.composite
def block_cases(
    draw: st.DrawFn, max_channels: int = 3, grid: tuple[int, int] = (8, 16)
) -> BlockCase:
    """Block configurations with modes that fit the grid, LayerScale inits from 0 to 1."""
    height = draw(st.integers(*grid))
    width = draw(st.integers(*grid))
    return BlockCase(
        channels=draw(st.integers(1, max_channels)),
        modes_x=draw(st.integers(1, height // 2)),
        modes_y=draw(st.integers(1, width // 2 + 1)),
        height=height,
        width=width,
        batch=draw(st.integers(1, 2)),
        layerscale_init=draw(st.sampled_from([0.0, 1e-3, 1e-1, 1.0])),
        input_scale=draw(st.sampled_from([1e-2, 1.0, 1e2])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def instance_norm_bound(height: int, width: int) -> float:
    """Largest ``|z|`` InstanceNorm (weight 1, bias 0, any eps >= 0) can output on ``H x W``.

    With ``n = H*W`` values, deviations ``d_i`` from their mean sum to 0, so Cauchy-Schwarz on
    ``d_1 = -sum_{j>1} d_j`` gives ``d_1^2 <= (n-1)(n sigma^2 - d_1^2)``, i.e.
    ``|d_1| <= sqrt(n-1) sigma`` (``sigma^2`` the biased variance). Hence
    ``|z| = |d| / sqrt(sigma^2 + eps) <= sqrt(n - 1)``, reached by a single spike.
    """
    return math.sqrt(height * width - 1)


@_property("zero_params_identity", "block")
def check_zero_params_identity(block: nn.Module, x: Tensor) -> None:
    """With every parameter set to zero the residual block is the identity.

    The check runs in float64; ``block`` is converted and zeroed in place.
    """
    block, x = block.double(), x.double()
    with torch.no_grad():
        for param in block.parameters():
            param.zero_()
        y = block(x)
    _require_identity("zero_params_identity", y, x)


@_property("zero_layerscale_identity", "block")
def check_zero_layerscale_identity(
    block: nn.Module, x: Tensor, *, layerscale: str = "layerscale"
) -> None:
    """With its LayerScale ``gamma`` set to zero the block is the identity (float64, in place)."""
    block, x = block.double(), x.double()
    with torch.no_grad():
        getattr(block, layerscale).zero_()
        y = block(x)
    _require_identity("zero_layerscale_identity", y, x)


@_property("layerscale_update_bound", "block")
def check_layerscale_update_bound(
    block: nn.Module, x: Tensor, *, layerscale: str = "layerscale", norm: str = "norm"
) -> None:
    """``max |y_c - x_c| <= |gamma_c| * (|w_c| * sqrt(H*W - 1) + |b_c|)`` per channel ``c``.

    ``y = x + gamma * InstanceNorm(u)``; ``w``, ``b`` are the norm's affine weight and bias
    (1 and 0 at init, so the bound is ``layerscale_init * sqrt(H*W - 1)``); see
    :func:`instance_norm_bound`. A block without an affine ``block.<norm>`` counts as (1, 0).
    Runs in float64 (``block`` converted in place).
    """
    block, x = block.double(), x.double()
    gamma = getattr(block, layerscale).detach().abs().reshape(-1)
    affine = getattr(block, norm, None)
    weight = getattr(affine, "weight", None)
    bias = getattr(affine, "bias", None)
    w = torch.ones_like(gamma) if weight is None else weight.detach().abs().reshape(-1)
    b = torch.zeros_like(gamma) if bias is None else bias.detach().abs().reshape(-1)
    with torch.no_grad():
        update = (block(x) - x).abs().amax(dim=(0, 2, 3))
    bound = gamma * (w * instance_norm_bound(*x.shape[-2:]) + b)
    worst = _first_failure(update <= bound * (1 + RTOL))
    if worst is not None:
        raise AssertionError(
            f"layerscale_update_bound: channel {worst}: max |y - x| = {float(update[worst]):.6g} "
            f"> |gamma| * (|w| sqrt(HW - 1) + |b|) = {float(bound[worst]):.6g} "
            f"(gamma={float(gamma[worst]):g}, grid {tuple(x.shape[-2:])})"
        )


def _first_failure(ok: Tensor) -> int | None:
    """Index of the first False (NaN comparisons are False, so NaN fails), or None."""
    bad = torch.nonzero(~ok).flatten()
    return int(bad[0]) if bad.numel() else None


def _require_identity(name: str, y: Tensor, x: Tensor) -> None:
    err = float((y - x).abs().max()) if y.shape == x.shape else math.inf
    if not err <= RTOL * max(float(x.abs().max()), 1e-300):
        raise AssertionError(
            f"{name}: max |y - x| = {err:.3e} (output shape {tuple(y.shape)}, input "
            f"{tuple(x.shape)}, max |x| = {float(x.abs().max()):.3g})"
        )


# ---------------------------------------------------------------------------------------------
# unit-wise adaptive gradient clipping (Brock et al. 2021, arXiv:2102.06171, eq. (3))


@dataclass(frozen=True)
class AgcCase:
    """A gradient, its parameter and the clipping settings; ``unit_dim`` indexes the units."""

    grad: Tensor
    param: Tensor
    clipping: float
    eps: float
    unit_dim: int

    def units(self, x: Tensor) -> Tensor:
        """``x`` as ``(units, elements)``: scalars and vectors (after squeezing singleton
        dims) are one unit, as in the NFNets code; otherwise one unit per index of
        ``unit_dim``."""
        if x.ndim == 0 or sum(size > 1 for size in x.shape) <= 1:
            return x.reshape(1, -1)
        return x.movedim(self.unit_dim, 0).reshape(x.shape[self.unit_dim], -1)

    def limits(self) -> Tensor:
        """``clipping * max(||W_u||, eps)`` per unit."""
        norms = torch.linalg.vector_norm(self.units(self.param), dim=1)
        return self.clipping * norms.clamp_min(self.eps)

    def __repr__(self) -> str:
        return (
            f"AgcCase(shape={tuple(self.grad.shape)}, dtype={self.grad.dtype}, "
            f"clipping={self.clipping:g}, eps={self.eps:g}, unit_dim={self.unit_dim})"
        )


# (shape, unit_dim): Linear, Conv2d, ConvTranspose2d, SpectralConv2d weight, bias, LayerScale
AGC_LAYOUTS = [
    ((5, 3), 0),
    ((4, 3, 3, 3), 0),
    ((3, 4, 3, 3), 1),
    ((2, 2, 3, 2, 2, 2), 2),
    ((6,), 0),
    ((4, 1, 1), 0),
]


@st.composite
def agc_cases(draw: st.DrawFn) -> AgcCase:
    """Gradients and parameters whose unit norms span 1e-6..1e2, so that some units sit below
    ``eps``, some below their limit and some above it; real or complex."""
    shape, unit_dim = draw(st.sampled_from(AGC_LAYOUTS))
    dtype = draw(st.sampled_from([torch.float64, torch.complex128]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    unit_shape = [1] * len(shape)
    unit_shape[unit_dim] = shape[unit_dim]

    def field(low: float, high: float) -> Tensor:
        values = rng.standard_normal(shape)
        if dtype == torch.complex128:
            values = values + 1j * rng.standard_normal(shape)
        return torch.from_numpy(values * 10.0 ** rng.uniform(low, high, unit_shape)).to(dtype)

    return AgcCase(
        grad=field(-6.0, 1.0),
        param=field(-5.0, 1.0),
        clipping=draw(st.sampled_from([1e-2, 1e-1, 1.0])),
        eps=draw(st.sampled_from([1e-3, 1e-6])),
        unit_dim=unit_dim,
    )


@_property("agc_within_limit", "AGC function")
def check_agc_within_limit(agc: AgcFunction, case: AgcCase) -> None:
    """Every clipped unit obeys ``||G'_u|| <= limit_u``; a unit above it lands on it."""
    clipped = _clip(agc, case)
    before = torch.linalg.vector_norm(case.units(case.grad), dim=1)
    after = torch.linalg.vector_norm(case.units(clipped), dim=1)
    expected = torch.minimum(before, case.limits())
    err = (after - expected).abs() / expected.clamp_min(1e-300)
    worst = _first_failure(err <= RTOL)
    if worst is not None:
        raise AssertionError(
            f"agc_within_limit: unit {worst}: ||G'_u|| = {float(after[worst]):.6g}, expected "
            f"min(||G_u||, limit) = min({float(before[worst]):.6g}, "
            f"{float(case.limits()[worst]):.6g}) [{case!r}]"
        )


@_property("agc_keeps_small_units", "AGC function")
def check_agc_keeps_small_units(agc: AgcFunction, case: AgcCase) -> None:
    """A unit whose gradient norm is under its limit is returned unchanged."""
    clipped = case.units(_clip(agc, case))
    grad = case.units(case.grad)
    below = torch.linalg.vector_norm(grad, dim=1) < case.limits() * (1 - RTOL)
    change = torch.linalg.vector_norm(clipped - grad, dim=1)
    scale = torch.linalg.vector_norm(grad, dim=1).clamp_min(1e-300)
    err = torch.where(below, change / scale, torch.zeros_like(change))
    worst = _first_failure(err <= RTOL)
    if worst is not None:
        raise AssertionError(
            f"agc_keeps_small_units: unit {worst} is under its limit but changed by a "
            f"relative {float(err[worst]):.3e} [{case!r}]"
        )


@_property("agc_preserves_direction", "AGC function")
def check_agc_preserves_direction(agc: AgcFunction, case: AgcCase) -> None:
    """Each non-zero unit is scaled by one factor ``s_u`` in ``(0, 1]``: ``G'_u = s_u G_u``."""
    clipped = case.units(_clip(agc, case))
    grad = case.units(case.grad)
    norm2 = (grad.abs() ** 2).sum(dim=1).clamp_min(1e-300)
    factor = (clipped * grad.conj()).sum(dim=1).real / norm2
    off_axis = torch.linalg.vector_norm(clipped - factor[:, None] * grad, dim=1) / norm2.sqrt()
    for unit in torch.nonzero(norm2 > 1e-300).flatten().tolist():
        s, off = float(factor[unit]), float(off_axis[unit])
        if off > RTOL or not 0 < s <= 1 + RTOL:
            raise AssertionError(
                f"agc_preserves_direction: unit {unit}: G'_u = {s:.6g} * G_u + residual of "
                f"relative norm {off:.3e}; expected a factor in (0, 1] and no residual "
                f"[{case!r}]"
            )


def _clip(agc: AgcFunction, case: AgcCase) -> Tensor:
    out = agc(case.grad.clone(), case.param.clone(), case.clipping, case.eps, case.unit_dim)
    if out.shape != case.grad.shape:
        raise AssertionError(
            f"agc: output shape {tuple(out.shape)}, expected {tuple(case.grad.shape)}"
        )
    return out


__all__ = [
    "AGC_LAYOUTS",
    "AgcCase",
    "BlockCase",
    "agc_cases",
    "block_cases",
    "check_agc_keeps_small_units",
    "check_agc_preserves_direction",
    "check_agc_within_limit",
    "check_layerscale_update_bound",
    "check_zero_layerscale_identity",
    "check_zero_params_identity",
    "instance_norm_bound",
]
