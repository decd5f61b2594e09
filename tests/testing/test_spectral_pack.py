"""The spectral property pack applied to ``SpectralConv2d`` under every FFT normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given

from stabilitykit.models.spectral import FFT_NORMS, SpectralConv2d
from stabilitykit.testing.spectral import (
    PROPERTIES,
    SpectralLayerSpec,
    band_limited_fields,
    resolution_gain,
    retained_box,
    retained_modes,
    run_property,
)


def _spec(fft_norm: str) -> SpectralLayerSpec:
    return SpectralLayerSpec(
        factory=lambda cin, cout, mx, my: SpectralConv2d(cin, cout, mx, my, fft_norm=fft_norm),
        fft_norm=fft_norm,
        weights=lambda layer: layer.spectral_weights(),
    )


@pytest.mark.parametrize("name", list(PROPERTIES))
@pytest.mark.parametrize("fft_norm", FFT_NORMS)
def test_spectral_conv_is_a_fourier_multiplier(fft_norm: str, name: str) -> None:
    run_property(_spec(fft_norm), name)


def test_float32_layer_passes_with_float32_tolerance() -> None:
    spec = SpectralLayerSpec(
        factory=lambda cin, cout, mx, my: SpectralConv2d(cin, cout, mx, my),
        weights=lambda layer: layer.spectral_weights(),
        dtype=torch.float32,
    )
    assert spec.tolerance == 1e-4
    for name in ("linearity", "discretisation_consistency", "parseval_bound"):
        run_property(spec, name)


@pytest.mark.parametrize(
    ("fft_norm", "gain"),
    [
        ("forward", 1.0),
        ("backward", 1.0),
        ("ortho", 1.0),
        (("forward", "ortho"), 0.5),
        (("ortho", "forward"), 2.0),
        (("backward", "forward"), 4.0),
    ],
)
def test_resolution_gain_from_n_to_2n(fft_norm, gain: float) -> None:
    norms = SpectralLayerSpec(_spec("forward").factory, fft_norm=fft_norm).norms
    n = 12 * 10
    assert resolution_gain(norms, 4 * n) / resolution_gain(norms, n) == pytest.approx(gain)


def test_spec_rejects_an_unknown_norm() -> None:
    with pytest.raises(ValueError, match="fft_norm must be one of"):
        SpectralLayerSpec(lambda *a: None, fft_norm="unitary")


def test_parseval_needs_weights() -> None:
    spec = SpectralLayerSpec(lambda cin, cout, mx, my: SpectralConv2d(cin, cout, mx, my))
    assert "parseval_bound" not in spec.property_names()
    with pytest.raises(ValueError, match=r"needs SpectralLayerSpec\.weights"):
        run_property(spec, "parseval_bound")


def test_retained_modes_lie_in_the_box() -> None:
    from stabilitykit.testing.spectral import LayerCase

    case = LayerCase(1, 1, modes_x=3, modes_y=2, height=9, width=8, batch=1, seed=0)
    assert not (retained_modes(case) & ~retained_box(case)).any()


KEEP = np.zeros((8, 6), dtype=bool)
KEEP[[1, 6], 2] = KEEP[3, 4] = True  # off the self-conjugate columns ky = 0 and ky = 5


@given(band_limited_fields((2, 1, 8, 10), KEEP))
def test_band_limited_field_has_only_the_kept_modes(x: torch.Tensor) -> None:
    spectrum = torch.fft.rfft2(x, norm="forward")
    assert x.dtype == torch.float64
    assert float(spectrum[..., torch.from_numpy(~KEEP)].abs().max()) < 1e-12
    assert float(spectrum[..., torch.from_numpy(KEEP)].abs().min()) > 0
