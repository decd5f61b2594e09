import math

import pytest
import torch

from stabilitykit.models.spectral import IMPLEMENTATION, SpectralConv2d


def reference(layer: SpectralConv2d, x: torch.Tensor) -> torch.Tensor:
    """The textbook rfft2 -> both kx bands x W -> irfft2 formulation."""
    _, _, h, w = x.shape
    mx, my = layer.modes_x, layer.modes_y
    weights = layer.spectral_weights()
    x_ft = torch.fft.rfft2(x, norm=layer.fft_norm)
    out = x_ft.new_zeros(x.shape[0], layer.out_channels, h, w // 2 + 1)
    out[:, :, :mx, :my] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :mx, :my], weights[0])
    out[:, :, -mx:, :my] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, -mx:, :my], weights[1])
    return torch.fft.irfft2(out, s=(h, w), norm=layer.fft_norm)


def plane_wave(h: int, w: int, kx: int, ky: int) -> torch.Tensor:
    """``cos(2 pi (kx r / h + ky c / w))`` as ``(1, 1, h, w)``."""
    r = torch.arange(h, dtype=torch.float64)[:, None]
    c = torch.arange(w, dtype=torch.float64)[None, :]
    return torch.cos(2 * math.pi * (kx * r / h + ky * c / w)).float()[None, None]


def test_shapes_and_dtype():
    layer = SpectralConv2d(3, 5, 4, 3)
    y = layer(torch.randn(2, 3, 16, 12))
    assert y.shape == (2, 5, 16, 12)
    assert y.dtype == torch.float32
    assert layer.spectral_weights().shape == (2, 3, 5, 4, 3)
    assert layer.spectral_weights().dtype == torch.complex64
    assert layer.spectral_weights()._base is layer.weight  # a view: writes reach the layer
    assert layer.implementation == IMPLEMENTATION


@pytest.mark.parametrize(
    ("h", "w", "mx", "my", "norm"),
    [
        (16, 16, 4, 4, "forward"),
        (16, 12, 8, 7, "backward"),  # both bands fill every row; the Nyquist column is kept
        (15, 9, 3, 2, "ortho"),  # odd grid
        (8, 8, 1, 1, "forward"),
    ],
)
def test_matches_rfft2_reference_values_and_gradients(h, w, mx, my, norm):
    torch.manual_seed(0)
    layer = SpectralConv2d(3, 2, mx, my, fft_norm=norm)
    x = torch.randn(2, 3, h, w, requires_grad=True)
    y, y_ref = layer(x), reference(layer, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    probe = torch.randn_like(y)
    grads = torch.autograd.grad((y * probe).sum(), (x, layer.weight))
    grads_ref = torch.autograd.grad((y_ref * probe).sum(), (x, layer.weight))
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_negative_kx_band_acts():
    h = w = 16
    x = plane_wave(h, w, kx=-2, ky=3)
    spectrum = torch.fft.rfft2(x)[0, 0].abs()
    assert spectrum[h - 2, 3] > 1 and spectrum.sum() == pytest.approx(spectrum[h - 2, 3].item())

    torch.manual_seed(0)
    layer = SpectralConv2d(1, 1, 4)
    with torch.no_grad():
        layer.weight[0] = 0  # keep only the negative-kx band
    assert layer(x).abs().max() > 1e-3
    # ... which must not act on the mirrored positive-kx wave.
    assert layer(plane_wave(h, w, kx=2, ky=3)).abs().max() < 1e-6


def test_positive_kx_band_acts():
    torch.manual_seed(0)
    layer = SpectralConv2d(1, 1, 4)
    with torch.no_grad():
        layer.weight[1] = 0
    assert layer(plane_wave(16, 16, kx=2, ky=3)).abs().max() > 1e-3
    assert layer(plane_wave(16, 16, kx=-2, ky=3)).abs().max() < 1e-6


def test_modes_above_the_retained_ones_are_dropped():
    layer = SpectralConv2d(1, 1, 3)
    assert layer(plane_wave(16, 16, kx=5, ky=1)).abs().max() < 1e-6
    assert layer(plane_wave(16, 16, kx=1, ky=4)).abs().max() < 1e-6


def test_declared_output_unit_axis_indexes_output_channels():
    layer = SpectralConv2d(3, 5, 4, 2)
    axis = layer.output_unit_dims["weight"]
    assert layer.weight.shape[axis] == 5
    with torch.no_grad():
        layer.weight.select(axis, 1).zero_()
    assert torch.all(layer.spectral_weights()[:, :, 1] == 0)
    assert torch.all(layer.spectral_weights()[:, :, [0, 2, 3, 4]] != 0)


def test_both_bands_receive_gradient():
    layer = SpectralConv2d(2, 2, 3)
    layer(torch.randn(2, 2, 12, 12)).square().sum().backward()
    assert layer.weight.grad[0].abs().sum() > 0
    assert layer.weight.grad[1].abs().sum() > 0


@pytest.mark.parametrize(
    ("h", "w", "mx", "my", "allowed"),
    [
        (16, 16, 9, 4, "modes_x <= 8"),
        (16, 16, 4, 10, "modes_y <= 9"),
        (7, 16, 4, 4, "modes_x <= 3"),
    ],
)
def test_modes_too_large_for_grid(h, w, mx, my, allowed):
    layer = SpectralConv2d(1, 1, mx, my)
    with pytest.raises(ValueError, match=allowed) as info:
        layer(torch.randn(1, 1, h, w))
    assert f"{h}x{w}" in str(info.value)


@pytest.mark.parametrize(
    ("args", "field"),
    [((0, 1, 4), "in_channels"), ((1, -1, 4), "out_channels"), ((1, 1, 0), "modes_x"),
     ((1, 1, 4, 0), "modes_y"), ((1, 1, 2.5), "modes_x")],
)  # fmt: skip
def test_rejects_non_positive_sizes(args, field):
    with pytest.raises(ValueError, match=f"{field} must be a positive int"):
        SpectralConv2d(*args)


def test_rejects_unknown_fft_norm():
    with pytest.raises(ValueError, match="fft_norm must be one of"):
        SpectralConv2d(1, 1, 2, fft_norm="unitary")
