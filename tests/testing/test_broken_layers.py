"""The spectral pack catches deliberately broken Fourier layers, each by the named property.

Every defect is a switch on one reference multiplier; with every switch off the same layer
passes the same property, so the failure comes from the defect, not from the test layer.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import Phase, settings
from torch import nn

from stabilitykit.testing.spectral import SpectralLayerSpec, check_all, run_property


class Multiplier(nn.Module):
    """A spectral multiplier ``(B, in, H, W) -> (B, out, H, W)`` with switchable defects.

    Args:
        keep_negative_band: False reproduces the original fallback layer (rows ``[:mx]`` only).
        norms: ``torch.fft`` norms of the forward and the inverse transform.
        extra_modes: retained modes per axis beyond the requested ones (off by one: 1 or -1).
        leak: weight of a quadratic term added to the output (a non-linear leak).
        pad: zero padding per side before the transform, cropped after (breaks periodicity).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes_x: int,
        modes_y: int,
        *,
        keep_negative_band: bool = True,
        norms: tuple[str, str] = ("forward", "forward"),
        extra_modes: int = 0,
        leak: float = 0.0,
        pad: int = 0,
    ) -> None:
        super().__init__()
        self.mx, self.my = modes_x + extra_modes, modes_y + extra_modes
        self.keep_negative_band = keep_negative_band
        self.norms, self.leak, self.pad = norms, leak, pad
        scale = 1.0 / math.sqrt(in_channels * out_channels)
        shape = (2, in_channels, out_channels, self.mx, self.my)
        self.weight = nn.Parameter(scale * torch.randn(*shape, dtype=torch.complex128))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        h, w = x.shape[-2:]
        mx, my = min(self.mx, h // 2), min(self.my, w // 2 + 1)
        x_ft = torch.fft.rfft2(x, norm=self.norms[0])
        weight = self.weight.to(x_ft.dtype)
        out = x_ft.new_zeros(x.shape[0], self.out_channels, h, w // 2 + 1)
        out[..., :mx, :my] = torch.einsum(
            "bixy,ioxy->boxy", x_ft[..., :mx, :my], weight[0, ..., :mx, :my]
        )
        if self.keep_negative_band:
            neg = x_ft[..., h - mx :, :my]  # not [-mx:]: that is every row when mx is 0
            out[..., h - mx :, :my] = torch.einsum("bixy,ioxy->boxy", neg, weight[1, ..., :mx, :my])
        y = torch.fft.irfft2(out, s=(h, w), norm=self.norms[1])
        if self.pad:
            y = y[..., self.pad : self.pad + height, self.pad : self.pad + width]
        return y + self.leak * y * y


def _spec(**defects: object) -> SpectralLayerSpec:
    return SpectralLayerSpec(
        factory=lambda cin, cout, mx, my: Multiplier(cin, cout, mx, my, **defects),
        fft_norm="forward",
        weights=lambda layer: layer.weight,
    )


# defect -> (switches, the property that must catch it)
BROKEN = {
    "dropped_negative_band": ({"keep_negative_band": False}, "both_bands_act"),
    "forward_norm_then_ortho_inverse": (
        {"norms": ("forward", "ortho")},
        "discretisation_consistency",
    ),
    "ortho_norm_then_forward_inverse": (
        {"norms": ("ortho", "forward")},
        "discretisation_consistency",
    ),
    "ortho_norm_then_forward_inverse_parseval": ({"norms": ("ortho", "forward")}, "parseval_bound"),
    "modes_off_by_one_band": ({"extra_modes": 1}, "output_band_limited"),
    "modes_off_by_one_high_input": ({"extra_modes": 1}, "high_modes_annihilated"),
    "modes_one_short": ({"extra_modes": -1}, "both_bands_act"),
    "non_linear_leak": ({"leak": 1e-6}, "linearity"),
    "zero_padding": ({"pad": 2}, "shift_equivariance"),
}


# The first failing example is proof enough; shrinking it would cost seconds per defect.
NO_SHRINK = settings(database=None, phases=[Phase.explicit, Phase.generate])


@pytest.mark.parametrize("defect", sorted(BROKEN))
def test_broken_layer_is_caught(defect: str) -> None:
    switches, prop = BROKEN[defect]
    with pytest.raises(AssertionError, match=prop):
        run_property(_spec(**switches), prop, settings=NO_SHRINK)


@pytest.mark.parametrize("prop", sorted({prop for _, prop in BROKEN.values()}))
def test_reference_multiplier_passes(prop: str) -> None:
    run_property(_spec(), prop)


def test_check_all_lists_every_failing_property() -> None:
    names = ["both_bands_act", "linearity", "discretisation_consistency"]
    with pytest.raises(AssertionError, match="1 spectral properties fail") as info:
        check_all(_spec(keep_negative_band=False), names=names, settings=NO_SHRINK)
    assert "both_bands_act" in str(info.value)
