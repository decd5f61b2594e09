"""Fourier layer: a learned complex multiplier on the lowest Fourier modes.

Reference: Li et al. 2021, "Fourier Neural Operator for Parametric PDEs", eq. (4).
"""

from __future__ import annotations

import math

import torch
from torch import nn

IMPLEMENTATION = "stabilitykit.SpectralConv2d"

FFT_NORMS = ("forward", "backward", "ortho")


class SpectralConv2d(nn.Module):
    """2-D spectral convolution ``x -> irfft2(W * rfft2(x))`` on the retained modes.

    Shapes: input ``(B, in_channels, H, W)`` real, output ``(B, out_channels, H, W)`` real.

    Both row-frequency bands are kept: rows ``0 .. modes_x-1`` (non-negative ``kx``) and the last
    ``modes_x`` rows (negative ``kx``); columns ``0 .. modes_y-1`` of the half spectrum. A grid of
    ``H x W`` admits ``2 * modes_x <= H`` and ``modes_y <= W // 2 + 1``; a larger request raises
    ``ValueError`` at the first forward pass (the grid is not known before).

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of the output.
        modes_x: retained row modes per sign.
        modes_y: retained column modes (defaults to ``modes_x``).
        fft_norm: ``torch.fft`` normalisation used by both transforms.
    """

    implementation = IMPLEMENTATION

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes_x: int,
        modes_y: int | None = None,
        *,
        fft_norm: str = "forward",
    ) -> None:
        super().__init__()
        modes_y = modes_x if modes_y is None else modes_y
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("modes_x", modes_x),
            ("modes_y", modes_y),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SpectralConv2d: {name} must be a positive int, got {value!r}")
        if fft_norm not in FFT_NORMS:
            raise ValueError(f"SpectralConv2d: fft_norm must be one of {FFT_NORMS}, got {fft_norm!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes_x = modes_x
        self.modes_y = modes_y
        self.fft_norm = fft_norm
        # (band, in, out, modes_x, modes_y, re/im); band 0 = non-negative kx, band 1 = negative kx.
        scale = 1.0 / math.sqrt(in_channels * out_channels)
        self.weight = nn.Parameter(
            scale * torch.randn(2, in_channels, out_channels, modes_x, modes_y, 2)
        )

    def spectral_weights(self) -> torch.Tensor:
        """Complex weights ``(2, in_channels, out_channels, modes_x, modes_y)``."""
        return torch.view_as_complex(self.weight)

    def check_grid(self, height: int, width: int) -> None:
        """Raise ``ValueError`` when the retained modes do not fit an ``height x width`` grid."""
        if 2 * self.modes_x > height or self.modes_y > width // 2 + 1:
            raise ValueError(
                f"SpectralConv2d: modes (modes_x={self.modes_x}, modes_y={self.modes_y}) do not fit "
                f"a {height}x{width} grid; allowed: modes_x <= {height // 2}, "
                f"modes_y <= {width // 2 + 1}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        self.check_grid(height, width)
        mx, my = self.modes_x, self.modes_y
        x_ft = torch.fft.rfft2(x, norm=self.fft_norm)
        w = self.spectral_weights()
        out_ft = x_ft.new_zeros(batch, self.out_channels, height, width // 2 + 1)
        out_ft[:, :, :mx, :my] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :mx, :my], w[0])
        out_ft[:, :, -mx:, :my] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, -mx:, :my], w[1])
        return torch.fft.irfft2(out_ft, s=(height, width), norm=self.fft_norm)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, modes=({self.modes_x}, {self.modes_y}), "
            f"fft_norm={self.fft_norm!r}"
        )
