"""Property pack for Fourier layers: is a layer a correct Fourier multiplier?

Point the pack at any 2-D spectral layer through a factory; each property runs under hypothesis
(channel counts, grids, modes that fit, band-limited fields, shifts) and fails with an
``AssertionError`` naming the property, the drawn case and the observed number. Paste::

    import pytest
    from stabilitykit.models.spectral import SpectralConv2d
    from stabilitykit.testing.spectral import SpectralLayerSpec, check_all, run_property

    SPEC = SpectralLayerSpec(
        factory=lambda cin, cout, mx, my: SpectralConv2d(cin, cout, mx, my),
        fft_norm="forward",
        weights=lambda layer: layer.spectral_weights(),  # (2, in, out, mx, my): in/out dims 1, 2
    )

    @pytest.mark.parametrize("name", SPEC.property_names())
    def test_my_layer(name):
        run_property(SPEC, name)  # one property; settings: the loaded hypothesis profile

    def test_my_layer_at_once():
        check_all(SPEC)  # every property; one AssertionError lists all that fail

The factory contract: ``factory(in_channels, out_channels, modes_x, modes_y)`` returns a module
mapping real ``(B, in, H, W)`` to real ``(B, out, H, W)`` for every grid with ``2*modes_x <= H``
and ``modes_y <= W//2 + 1``, that keeps the rfft2 rows ``kx in [-modes_x, modes_x)`` (both signs)
and the columns ``ky in [0, modes_y)``, with a generic (non-zero) random initialisation. Its
real output has no spectrum outside the Hermitian closure of that set, the box
``|kx| <= modes_x, |ky| < modes_y`` (``kx`` centred: row ``r`` is ``r`` or ``r - H``), which is the
box the band properties use. The single check functions (``check_linearity(spec, case, ...)``)
and strategies (:func:`layer_cases`, :func:`band_limited_fields`, :func:`shifts`) are public too,
for a user's own ``@given`` tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import given
from hypothesis import settings as Settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from torch import Tensor, nn

FFT_NORMS = ("forward", "backward", "ortho")
LayerFactory = Callable[[int, int, int, int], nn.Module]


@dataclass(frozen=True)
class SpectralLayerSpec:
    """What the pack needs to know about a spectral layer.

    Args:
        factory: ``(in_channels, out_channels, modes_x, modes_y) -> nn.Module`` (contract above).
        fft_norm: the ``torch.fft`` norm of both transforms, or a pair ``(forward, inverse)``
            when they differ on purpose; sets the expected resolution gain (see
            :func:`resolution_gain`).
        weights: ``layer -> Tensor`` of the per-mode ``(in, out)`` matrices (complex or real),
            for the Parseval bound; None skips that property.
        weight_dims: the dims of ``weights(layer)`` that hold ``(in, out)``.
        dtype: dtype of the layer and its inputs (float64 keeps tolerances tight).
        rtol: relative tolerance; None: 1e-9 for float64, 1e-4 for float32.
        max_channels: channel counts are drawn from ``1..max_channels``.
        grid: ``(min, max)`` side of the drawn grids, in px (discretisation uses twice that).
        grid_step: sides are multiples of this (2: even grids only, for layers that need them).
        max_batch: batch sizes are drawn from ``1..max_batch`` (at least 2 where needed).
    """

    factory: LayerFactory
    fft_norm: str | tuple[str, str] = "forward"
    weights: Callable[[nn.Module], Tensor] | None = None
    weight_dims: tuple[int, int] = (1, 2)
    dtype: torch.dtype = torch.float64
    rtol: float | None = None
    max_channels: int = 3
    grid: tuple[int, int] = (8, 16)
    grid_step: int = 1
    max_batch: int = 2

    def __post_init__(self) -> None:
        pair = self.norms
        if len(pair) != 2 or any(n not in FFT_NORMS for n in pair):
            raise ValueError(
                f"SpectralLayerSpec: fft_norm must be one of {FFT_NORMS} or a (forward, inverse) "
                f"pair of them, got {self.fft_norm!r}"
            )
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"SpectralLayerSpec: dtype must be float32/64, got {self.dtype}")
        lo, hi = self.grid
        step = self.grid_step
        if not (step >= 1 and lo >= 4 and -(-lo // step) * step <= hi):
            raise ValueError(
                f"SpectralLayerSpec: grid must be (min, max), 4 <= min, with a multiple of "
                f"grid_step in between; got grid={self.grid}, grid_step={step}"
            )

    @property
    def norms(self) -> tuple[str, ...]:
        """``(forward, inverse)`` norms of the two transforms."""
        return (self.fft_norm,) * 2 if isinstance(self.fft_norm, str) else tuple(self.fft_norm)

    @property
    def tolerance(self) -> float:
        """The relative tolerance in use."""
        if self.rtol is not None:
            return self.rtol
        return 1e-9 if self.dtype == torch.float64 else 1e-4

    def property_names(self) -> list[str]:
        """Names of the properties that apply to this layer (Parseval needs ``weights``)."""
        return [n for n, p in PROPERTIES.items() if self.weights is not None or not p.needs_weights]

    def build(self, case: LayerCase) -> nn.Module:
        """The layer for ``case``, initialised from ``case.seed`` (global RNG state restored)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case.seed)
            layer = self.factory(case.in_channels, case.out_channels, case.modes_x, case.modes_y)
        # .double()/.float() leave complex parameters complex (Module.to(dtype) would drop imag)
        return layer.double() if self.dtype == torch.float64 else layer.float()


@dataclass(frozen=True)
class LayerCase:
    """One drawn configuration: layer geometry, grid ``height x width``, batch and seed."""

    in_channels: int
    out_channels: int
    modes_x: int
    modes_y: int
    height: int
    width: int
    batch: int
    seed: int

    def __str__(self) -> str:
        return (
            f"in={self.in_channels} out={self.out_channels} modes=({self.modes_x},{self.modes_y})"
            f" grid={self.height}x{self.width} batch={self.batch} seed={self.seed}"
        )


# ---------------------------------------------------------------------------------------------
# strategies and fields


@st.composite
def layer_cases(
    draw: st.DrawFn,
    spec: SpectralLayerSpec,
    *,
    min_batch: int = 1,
    min_modes_y: int = 1,
    spare_column: bool = False,
) -> LayerCase:
    """Configurations whose modes fit the grid (``2*mx <= H``, ``my <= W//2 + 1``).

    ``spare_column`` keeps ``my <= W//2`` so that a column above the modes exists.
    """
    lo, hi = spec.grid
    step = spec.grid_step
    height = step * draw(st.integers(-(-lo // step), hi // step))
    width = step * draw(st.integers(-(-max(lo, 2 * min_modes_y) // step), hi // step))
    max_my = width // 2 + (0 if spare_column else 1)
    return LayerCase(
        in_channels=draw(st.integers(1, spec.max_channels)),
        out_channels=draw(st.integers(1, spec.max_channels)),
        modes_x=draw(st.integers(1, height // 2)),
        modes_y=draw(st.integers(min_modes_y, max_my)),
        height=height,
        width=width,
        batch=draw(st.integers(min_batch, max(min_batch, spec.max_batch))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def centred_kx(height: int) -> np.ndarray:
    """Signed row frequency of each rfft2 row: ``r`` for ``r <= H//2``, else ``r - H``."""
    rows = np.arange(height)
    return np.where(rows <= height // 2, rows, rows - height)


def band_limited_field(
    seed: int, shape: tuple[int, int, int, int], keep: np.ndarray, dtype: torch.dtype
) -> Tensor:
    """Real field ``(B, C, H, W)`` whose rfft2 half spectrum is random on ``keep`` only.

    ``keep`` is a boolean ``(H, W//2 + 1)`` mask; values are ``irfft2(coeffs, norm="forward")``,
    so the field is ``sum_k c_k exp(2 pi i k.x)`` at the grid points. On the self-conjugate
    columns (``ky = 0`` and, for even ``W``, ``ky = W/2``) the field keeps the Hermitian part, so
    a ``keep`` that is not symmetric under ``kx -> -kx`` there spreads to the mirrored row.
    """
    coeffs = _coefficients(seed, shape, keep)
    return _synthesise(coeffs, shape[-2:], dtype)


def band_limited_fields(
    shape: tuple[int, int, int, int], keep: np.ndarray, dtype: torch.dtype = torch.float64
) -> st.SearchStrategy[Tensor]:
    """Strategy of :func:`band_limited_field` draws (the seed is what hypothesis draws)."""
    return st.integers(0, 2**32 - 1).map(lambda s: band_limited_field(s, shape, keep, dtype))


def shifts(height: int, width: int) -> st.SearchStrategy[tuple[int, int]]:
    """Circular shifts ``(sx, sy)`` of an ``height x width`` grid."""
    return st.tuples(st.integers(0, height - 1), st.integers(0, width - 1))


def retained_box(case: LayerCase) -> np.ndarray:
    """Half-spectrum mask of the box ``|kx| <= mx, ky < my`` (see the module docstring)."""
    kx = np.abs(centred_kx(case.height))[:, None]
    ky = np.arange(case.width // 2 + 1)[None, :]
    return (kx <= case.modes_x) & (ky < case.modes_y)


def retained_modes(case: LayerCase) -> np.ndarray:
    """Half-spectrum mask of the retained rows ``[:mx]``, ``[-mx:]`` and columns ``[:my]``."""
    keep = np.zeros((case.height, case.width // 2 + 1), dtype=bool)
    keep[: case.modes_x, : case.modes_y] = True
    keep[-case.modes_x :, : case.modes_y] = True
    return keep


def _coefficients(seed: int, shape: tuple[int, ...], keep: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = (*shape[:2], *keep.shape)
    coeffs = rng.standard_normal(size) + 1j * rng.standard_normal(size)
    return coeffs * keep


def _synthesise(coeffs: np.ndarray, grid: tuple[int, int], dtype: torch.dtype) -> Tensor:
    spectrum = torch.from_numpy(coeffs).to(torch.complex128)
    return torch.fft.irfft2(spectrum, s=grid, norm="forward").to(dtype)


# ---------------------------------------------------------------------------------------------
# normalisation


def resolution_gain(norms: tuple[str, str], n_points: int) -> float:
    """Factor by which ``irfft2(W * rfft2(x), norms)`` exceeds the norm-independent multiplier.

    The forward transform scales by ``1/n`` ('forward'), ``1`` ('backward'), ``n**-0.5``
    ('ortho'); the inverse by ``1``, ``1/n``, ``n**-0.5``; the layer's gain is the product times
    ``n`` (``n = H*W``). With the SAME norm on both sides the product is ``1/n`` for all three,
    so the gain is 1 at every resolution: 'forward', 'backward' and 'ortho' layers are the same
    operator. Only a mismatched pair depends on ``n`` (``('forward', 'ortho')``: ``n**-0.5``).
    """
    forward = {"forward": 1.0 / n_points, "backward": 1.0, "ortho": n_points**-0.5}
    inverse = {"forward": 1.0, "backward": 1.0 / n_points, "ortho": n_points**-0.5}
    return forward[norms[0]] * inverse[norms[1]] * n_points


# ---------------------------------------------------------------------------------------------
# properties


def check_real_finite_shape(spec: SpectralLayerSpec, case: LayerCase) -> None:
    """The output is real, finite and ``(B, out, H, W)``."""
    x = _broadband(spec, case)
    y = _apply(spec, case, x)
    expected = (case.batch, case.out_channels, case.height, case.width)
    _require(not y.is_complex(), "real_finite_shape", case, f"complex output {y.dtype}")
    _require(
        tuple(y.shape) == expected,
        "real_finite_shape",
        case,
        f"shape {tuple(y.shape)}, expected {expected}",
    )
    bad = int((~torch.isfinite(y)).sum())
    _require(bad == 0, "real_finite_shape", case, f"{bad} non-finite output values")


def check_linearity(spec: SpectralLayerSpec, case: LayerCase, a: float, b: float) -> None:
    """``K(a x1 + b x2) = a K x1 + b K x2``."""
    layer = spec.build(case)
    x1 = _broadband(spec, case)
    x2 = _broadband(spec, case, offset=1)
    with torch.no_grad():
        lhs = layer(a * x1 + b * x2)
        rhs = a * layer(x1) + b * layer(x2)
    err = _rel(lhs - rhs, rhs)
    _require(
        err <= spec.tolerance,
        "linearity",
        case,
        f"a={a:g} b={b:g}: relative error {err:.3e} > {spec.tolerance:g}",
    )


def check_shift_equivariance(
    spec: SpectralLayerSpec, case: LayerCase, shift: tuple[int, int]
) -> None:
    """``K(roll(x, s)) = roll(K x, s)`` for circular shifts ``s``."""
    layer = spec.build(case)
    x = _broadband(spec, case)
    with torch.no_grad():
        lhs = layer(torch.roll(x, shift, dims=(-2, -1)))
        rhs = torch.roll(layer(x), shift, dims=(-2, -1))
    err = _rel(lhs - rhs, rhs)
    _require(
        err <= spec.tolerance,
        "shift_equivariance",
        case,
        f"shift={shift}: relative error {err:.3e} > {spec.tolerance:g}",
    )


def check_output_band_limited(spec: SpectralLayerSpec, case: LayerCase) -> None:
    """The output spectrum is zero outside the box ``|kx| <= mx, ky < my``."""
    y = _apply(spec, case, _broadband(spec, case))
    spectrum = torch.fft.rfft2(y.double(), norm="ortho")
    outside = torch.from_numpy(~retained_box(case))
    leak = _rel(spectrum[..., outside], spectrum)
    _require(
        leak <= spec.tolerance,
        "output_band_limited",
        case,
        f"output energy outside the modes: relative norm {leak:.3e} > {spec.tolerance:g}",
    )


def check_high_modes_annihilated(spec: SpectralLayerSpec, case: LayerCase) -> None:
    """An input with energy only outside the box ``|kx| <= mx, ky < my`` maps to zero."""
    shape = (case.batch, case.in_channels, case.height, case.width)
    x = band_limited_field(case.seed, shape, ~retained_box(case), spec.dtype)
    y = _apply(spec, case, x)
    ratio = _norm(y) / _norm(x)
    _require(
        ratio <= spec.tolerance,
        "high_modes_annihilated",
        case,
        f"||K x|| / ||x|| = {ratio:.3e} > {spec.tolerance:g} for x above the modes",
    )


def check_batch_independence(spec: SpectralLayerSpec, case: LayerCase) -> None:
    """Each sample's output depends on that sample only."""
    layer = spec.build(case)
    x = _broadband(spec, case)
    with torch.no_grad():
        whole = layer(x)
        single = torch.cat([layer(x[i : i + 1]) for i in range(case.batch)])
    err = _rel(whole - single, single)
    _require(
        err <= spec.tolerance,
        "batch_independence",
        case,
        f"batched vs one-by-one: relative error {err:.3e} > {spec.tolerance:g}",
    )


def check_both_bands_act(
    spec: SpectralLayerSpec, case: LayerCase, kx: tuple[int, int], ky: int
) -> None:
    """A single mode in the non-negative band (``kx[0]``) and one in the negative band
    (``kx[1] < 0``, the rows the original fallback layer dropped), at column ``1 <= ky < W/2``,
    each give a non-zero output.

    A layer that drops a band maps that band's mode to zero; with a generic init a correct one
    almost surely does not (floor: ``10 * rtol``, above the round-off of a dropped band).
    """
    floor = 10 * spec.tolerance
    layer = spec.build(case)
    shape = (case.batch, case.in_channels, case.height, case.width)
    for band, row in (("non-negative", kx[0]), ("negative", kx[1])):
        keep = np.zeros((case.height, case.width // 2 + 1), dtype=bool)
        keep[row % case.height, ky] = True
        x = band_limited_field(case.seed, shape, keep, spec.dtype)
        with torch.no_grad():
            ratio = _norm(layer(x)) / _norm(x)
        _require(
            ratio > floor,
            "both_bands_act",
            case,
            f"{band} kx band ignored: mode (kx={row}, ky={ky}) gives ||K x|| / ||x|| = "
            f"{ratio:.3e} <= {floor:g}",
        )


def check_discretisation_consistency(spec: SpectralLayerSpec, case: LayerCase) -> None:
    """A band-limited input sampled on ``H x W`` and on ``2H x 2W`` gives the same function.

    Expected relation: ``K(x_2N)[::2, ::2] = g * K(x_N)`` with ``g = resolution_gain(4n) /
    resolution_gain(n)``: ``g = 1`` for 'forward', 'backward' and 'ortho' alike (same norm on
    both transforms); for a declared mismatched pair, e.g. ``('forward', 'ortho')``, ``g = 1/2``.
    The input keeps modes ``|kx| < mx``, ``ky < my``, below both grids' Nyquist frequencies.
    """
    h, w = case.height, case.width
    kx = centred_kx(h)[:, None]
    ky = np.arange(w // 2 + 1)[None, :]
    keep = (np.abs(kx) < case.modes_x) & (2 * np.abs(kx) < h) & (ky < case.modes_y) & (2 * ky < w)
    coarse = _coefficients(case.seed, (case.batch, case.in_channels), keep)
    fine = np.zeros((*coarse.shape[:2], 2 * h, w + 1), dtype=complex)
    fine[..., kx[:, 0] % (2 * h), : w // 2 + 1] = coarse
    layer = spec.build(case)
    with torch.no_grad():
        y_coarse = layer(_synthesise(coarse, (h, w), spec.dtype))
        y_fine = layer(_synthesise(fine, (2 * h, 2 * w), spec.dtype))[..., ::2, ::2]
    n = h * w
    gain = resolution_gain(spec.norms, 4 * n) / resolution_gain(spec.norms, n)
    err = _rel(y_fine - gain * y_coarse, gain * y_coarse)
    seen = float((y_fine * y_coarse).sum() / (y_coarse * y_coarse).sum().clamp_min(1e-300))
    _require(
        err <= spec.tolerance,
        "discretisation_consistency",
        case,
        f"fft_norm={spec.fft_norm!r}: K(x_2N)[::2, ::2] vs {gain:g} * K(x_N): relative error "
        f"{err:.3e} > {spec.tolerance:g} (observed scale {seen:.4g})",
    )


def check_parseval_bound(spec: SpectralLayerSpec, case: LayerCase) -> None:
    """``||K x|| <= g * max_k ||W_k||_2 * ||x||`` per sample (``g``: :func:`resolution_gain`).

    Derivation (unitary DFT): ``||x||^2 = sum_k c_ky |X_k|^2`` over the half spectrum, ``c = 1``
    on the ``ky = 0`` and Nyquist columns and 2 elsewhere; the output half spectrum is
    ``W_k^T X_k`` on the kept modes, and ``irfft2`` keeps only the Hermitian part of the two
    self-conjugate columns (an orthogonal projection), so ``||K x||^2 <= sum_k c_ky
    ||W_k||_2^2 |X_k|^2 <= max_k ||W_k||_2^2 ||x||^2``. The input lives on the kept modes.
    """
    layer = spec.build(case)
    weights = spec.weights(layer).detach()
    matrices = weights.movedim(spec.weight_dims, (-2, -1)).to(torch.complex128)
    w_max = float(torch.linalg.matrix_norm(matrices, ord=2).max())
    shape = (case.batch, case.in_channels, case.height, case.width)
    x = band_limited_field(case.seed, shape, retained_modes(case), spec.dtype)
    with torch.no_grad():
        y = layer(x)
    bound = resolution_gain(spec.norms, case.height * case.width) * w_max
    ratios = _norms_per_sample(y) / _norms_per_sample(x)
    worst = float(ratios.max())
    _require(
        worst <= bound * (1 + spec.tolerance),
        "parseval_bound",
        case,
        f"||K x|| / ||x|| = {worst:.6g} > bound g * max_k ||W_k||_2 = {bound:.6g}",
    )


def check_finite_gradients(spec: SpectralLayerSpec, case: LayerCase) -> None:
    """Every parameter gets a finite gradient from a random linear functional of the output."""
    layer = spec.build(case)
    x = _broadband(spec, case)
    y = layer(x)
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(case.seed), dtype=y.dtype)
    (y * probe).sum().backward()
    for name, param in layer.named_parameters():
        if not param.requires_grad:
            continue
        _require(
            param.grad is not None, "finite_gradients", case, f"parameter {name!r} got no gradient"
        )
        bad = int((~torch.isfinite(param.grad)).sum())
        _require(
            bad == 0,
            "finite_gradients",
            case,
            f"parameter {name!r}: {bad} non-finite gradient values",
        )


# ---------------------------------------------------------------------------------------------
# registry and runners


@dataclass(frozen=True)
class SpectralProperty:
    """A property: its check and the strategy of its keyword arguments."""

    check: Callable[..., None]
    arguments: Callable[[SpectralLayerSpec], st.SearchStrategy[dict]]
    needs_weights: bool = False


def _case_only(**options: object) -> Callable[[SpectralLayerSpec], st.SearchStrategy[dict]]:
    return lambda spec: st.builds(dict, case=layer_cases(spec, **options))


def _linearity_args(spec: SpectralLayerSpec) -> st.SearchStrategy[dict]:
    scalar = st.floats(-3.0, 3.0, allow_nan=False).filter(lambda v: abs(v) > 1e-2)
    return st.builds(dict, case=layer_cases(spec), a=scalar, b=scalar)


def _shift_args(spec: SpectralLayerSpec) -> st.SearchStrategy[dict]:
    return layer_cases(spec).flatmap(
        lambda c: st.builds(dict, case=st.just(c), shift=shifts(c.height, c.width))
    )


def _bands_args(spec: SpectralLayerSpec) -> st.SearchStrategy[dict]:
    def modes(c: LayerCase) -> st.SearchStrategy[dict]:
        kx = st.tuples(st.integers(0, c.modes_x - 1), st.integers(-c.modes_x, -1))
        ky = st.integers(1, min(c.modes_y - 1, (c.width - 1) // 2))
        return st.builds(dict, case=st.just(c), kx=kx, ky=ky)

    return layer_cases(spec, min_modes_y=2).flatmap(modes)


PROPERTIES: dict[str, SpectralProperty] = {
    "real_finite_shape": SpectralProperty(check_real_finite_shape, _case_only()),
    "linearity": SpectralProperty(check_linearity, _linearity_args),
    "shift_equivariance": SpectralProperty(check_shift_equivariance, _shift_args),
    "output_band_limited": SpectralProperty(check_output_band_limited, _case_only()),
    "high_modes_annihilated": SpectralProperty(
        check_high_modes_annihilated, _case_only(spare_column=True)
    ),
    "batch_independence": SpectralProperty(check_batch_independence, _case_only(min_batch=2)),
    "both_bands_act": SpectralProperty(check_both_bands_act, _bands_args),
    "discretisation_consistency": SpectralProperty(check_discretisation_consistency, _case_only()),
    "parseval_bound": SpectralProperty(check_parseval_bound, _case_only(), needs_weights=True),
    "finite_gradients": SpectralProperty(check_finite_gradients, _case_only()),
}


def run_property(spec: SpectralLayerSpec, name: str, *, settings: Settings | None = None) -> None:
    """Run one property under hypothesis; raise its ``AssertionError`` on the minimal failure.

    ``settings``: hypothesis settings; None uses the loaded profile without the example
    database (its key cannot tell one spec from another). Runs on one intra-op thread (restored
    after): the tensors are tiny, and on a busy machine spare threads only spin (measured on
    2 shared cores: tests/testing 63 s with the default threads, 4 s with one).
    """
    if name not in PROPERTIES:
        raise ValueError(
            f"run_property: unknown property {name!r}; expected one of {list(PROPERTIES)}"
        )
    prop = PROPERTIES[name]
    if prop.needs_weights and spec.weights is None:
        raise ValueError(f"run_property: {name!r} needs SpectralLayerSpec.weights, got None")

    @given(arguments=prop.arguments(spec))
    def run(arguments: dict) -> None:
        try:
            prop.check(spec, **arguments)
        except (AssertionError, HypothesisException):
            raise
        except Exception as exc:  # the layer itself failed: this property's failure
            raise AssertionError(
                f"{name}: the layer raised {type(exc).__name__}: {exc} [{arguments.get('case')}]"
            ) from exc

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (settings or Settings(database=None))(run)()
    finally:
        torch.set_num_threads(threads)


def check_all(
    spec: SpectralLayerSpec, *, names: list[str] | None = None, settings: Settings | None = None
) -> None:
    """Run every applicable property (or ``names``); one ``AssertionError`` lists the failures.

    A layer that raises inside a property (a wrong output shape, a parameter without gradient)
    fails that property, quoting the layer's error; the remaining properties still run.
    """
    names = list(names or spec.property_names())
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        raise ValueError(
            f"check_all: unknown properties {unknown}; expected some of {list(PROPERTIES)}"
        )
    if spec.weights is None:
        needy = [n for n in names if PROPERTIES[n].needs_weights]
        if needy:
            raise ValueError(f"check_all: {needy} need SpectralLayerSpec.weights, got None")
    failures = []
    for name in names:
        try:
            run_property(spec, name, settings=settings)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
        except Exception as exc:  # e.g. hypothesis' Flaky when the layer fails only sometimes
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    if failures:
        raise AssertionError(f"{len(failures)} spectral properties fail:\n" + "\n".join(failures))


# ---------------------------------------------------------------------------------------------
# internals


def _broadband(spec: SpectralLayerSpec, case: LayerCase, offset: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(case.seed + offset)
    shape = (case.batch, case.in_channels, case.height, case.width)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(spec.dtype)


def _apply(spec: SpectralLayerSpec, case: LayerCase, x: Tensor) -> Tensor:
    with torch.no_grad():
        return spec.build(case)(x)


def _norm(x: Tensor) -> float:
    return float(
        torch.linalg.vector_norm(x.to(torch.complex128 if x.is_complex() else torch.float64))
    )


def _norms_per_sample(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x.double().flatten(1), dim=1)


def _rel(diff: Tensor, ref: Tensor) -> float:
    return _norm(diff) / max(_norm(ref), 1e-300)


def _require(ok: bool, name: str, case: LayerCase, detail: str) -> None:
    if not ok:
        raise AssertionError(f"{name}: {detail} [{case}]")


__all__ = [
    "FFT_NORMS",
    "PROPERTIES",
    "LayerCase",
    "SpectralLayerSpec",
    "SpectralProperty",
    "band_limited_field",
    "band_limited_fields",
    "centred_kx",
    "check_all",
    "check_batch_independence",
    "check_both_bands_act",
    "check_discretisation_consistency",
    "check_finite_gradients",
    "check_high_modes_annihilated",
    "check_linearity",
    "check_output_band_limited",
    "check_parseval_bound",
    "check_real_finite_shape",
    "check_shift_equivariance",
    "layer_cases",
    "resolution_gain",
    "retained_box",
    "retained_modes",
    "run_property",
    "shifts",
]
