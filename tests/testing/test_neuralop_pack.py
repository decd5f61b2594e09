"""Optional: the spectral pack against neuraloperator's ``SpectralConv`` (skipped without it).

``SpectralConv(n_modes=(m0, m1))`` keeps rows ``kx in [-m0/2, m0/2)`` (fftshift, even ``m0``) and
the first ``m1 // 2 + 1`` rfft columns, so ``m0 = 2 * modes_x`` and ``m1 = 2 * modes_y - 1``.
Its spectrum buffer is complex64 whatever the input, so the pack runs it in float32; its
bias (an affine offset, not a Fourier multiplier) is off. Weights: ``(in, out, m0, my)``.

Found by the pack (neuraloperator 2.0.0): on grids with an odd number of rows the layer is not
shift-equivariant and leaks outside its modes. Its forward pass moves the spectrum back with
``fftshift`` where ``ifftshift`` is needed; the two agree only on even sizes, so on odd ``H``
the output spectrum lands one row off (a modulation by ``exp(-2 pi i x / H)``). Even grids pass.
"""

from __future__ import annotations

import pytest
import torch

from stabilitykit.testing.spectral import SpectralLayerSpec, run_property

spectral_convolution = pytest.importorskip("neuralop.layers.spectral_convolution")


def _factory(cin: int, cout: int, mx: int, my: int) -> torch.nn.Module:
    return spectral_convolution.SpectralConv(cin, cout, n_modes=(2 * mx, 2 * my - 1), bias=False)


EVEN_GRIDS = SpectralLayerSpec(
    factory=_factory,
    fft_norm="forward",
    weights=lambda layer: layer.weight.to_tensor(),
    weight_dims=(0, 1),
    dtype=torch.float32,
    grid_step=2,
)
ANY_GRID = SpectralLayerSpec(
    factory=_factory,
    fft_norm="forward",
    weights=lambda layer: layer.weight.to_tensor(),
    weight_dims=(0, 1),
    dtype=torch.float32,
)


@pytest.mark.parametrize("name", EVEN_GRIDS.property_names())
def test_neuralop_spectral_conv_on_even_grids(name: str) -> None:
    run_property(EVEN_GRIDS, name)


@pytest.mark.xfail(
    raises=AssertionError,
    reason="neuraloperator 2.0.0 uses fftshift for the inverse shift: wrong on odd grids",
)
@pytest.mark.parametrize(
    "name", ["shift_equivariance", "output_band_limited", "discretisation_consistency"]
)
def test_neuralop_spectral_conv_on_odd_grids(name: str) -> None:
    run_property(ANY_GRID, name)
