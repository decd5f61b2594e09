"""Fourier layer: a learned complex multiplier on the lowest Fourier modes.

Reference: Li et al. 2021, "Fourier Neural Operator for Parametric PDEs", eq. (4).
"""

from __future__ import annotations

import math
from types import MappingProxyType

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

    The transform is computed separably (rFFT along ``W``, truncated to ``modes_y`` columns, then
    FFT along ``H``) and all retained modes are mixed by one batched complex matmul; the result
    equals the ``rfft2``/``irfft2`` formulation to float32 rounding.

    Args:
        in_channels: channels of ``x``.
        out_channels: channels of the output.
        modes_x: retained row modes per sign.
        modes_y: retained column modes (defaults to ``modes_x``).
        fft_norm: ``torch.fft`` normalisation used by both transforms.
    """

    implementation = IMPLEMENTATION
    # The axis of each parameter that indexes output channels (read by unit-wise clipping).
    output_unit_dims = MappingProxyType({"weight": 4})

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
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SpectralConv2d: {name} must be a positive int, got {value!r}")
        if fft_norm not in FFT_NORMS:
            raise ValueError(
                f"SpectralConv2d: fft_norm must be one of {FFT_NORMS}, got {fft_norm!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes_x = modes_x
        self.modes_y = modes_y
        self.fft_norm = fft_norm
        # (band, modes_x, modes_y, in, out, re/im); band 0 = non-negative kx, band 1 = negative kx.
        # Real storage (clipping and optimisers see real tensors) that views as a contiguous
        # complex (modes, in, out) stack for torch.bmm.
        scale = 1.0 / math.sqrt(in_channels * out_channels)
        self.weight = nn.Parameter(
            scale * torch.randn(2, modes_x, modes_y, in_channels, out_channels, 2)
        )

    def spectral_weights(self) -> torch.Tensor:
        """Complex weights ``(2, in_channels, out_channels, modes_x, modes_y)``, band first.

        A view of ``weight``: band 0 multiplies rows ``kx = 0 .. modes_x - 1``, band 1 the rows
        ``kx = -modes_x .. -1``.
        """
        return torch.view_as_complex(self.weight).permute(0, 3, 4, 1, 2)

    def check_grid(self, height: int, width: int) -> None:
        """Raise ``ValueError`` when the retained modes do not fit an ``height x width`` grid."""
        if 2 * self.modes_x > height or self.modes_y > width // 2 + 1:
            raise ValueError(
                f"SpectralConv2d: modes (modes_x={self.modes_x}, modes_y={self.modes_y}) do not "
                f"fit a {height}x{width} grid; allowed: modes_x <= {height // 2}, "
                f"modes_y <= {width // 2 + 1}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` real -> ``(B, out_channels, H, W)`` real."""
        batch, _, height, width = x.shape
        self.check_grid(height, width)
        mx, my = self.modes_x, self.modes_y
        modes = 2 * mx * my
        x_ft = torch.fft.rfft(x, dim=-1, norm=self.fft_norm)[..., :my]
        x_ft = torch.fft.fft(x_ft, dim=-2, norm=self.fft_norm).permute(2, 3, 0, 1)  # (H, my, B, I)
        kept = torch.cat([x_ft[:mx], x_ft[-mx:]]).reshape(modes, batch, self.in_channels)
        weights = torch.view_as_complex(self.weight).reshape(
            modes, self.in_channels, self.out_channels
        )
        out = torch.bmm(kept, weights).reshape(2 * mx, my, batch, self.out_channels)
        gap = out.new_zeros(height - 2 * mx, my, batch, self.out_channels)
        out_ft = torch.cat([out[:mx], gap, out[mx:]]).permute(2, 3, 0, 1)  # (B, O, H, my)
        out_ft = torch.fft.ifft(out_ft, dim=-2, norm=self.fft_norm)
        # irfft zero-pads the columns beyond modes_y up to width // 2 + 1.
        return torch.fft.irfft(out_ft, n=width, dim=-1, norm=self.fft_norm)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, modes=({self.modes_x}, {self.modes_y}), "
            f"fft_norm={self.fft_norm!r}"
        )
