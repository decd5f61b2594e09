"""The Fourier neural operator for 2-D fields (Li et al. 2021, "Fourier Neural Operator for
Parametric Partial Differential Equations", ICLR 2021, §4 and the Darcy experiment of §5.2).

Lift the input and its grid coordinates to ``width`` channels with a 1x1 convolution, apply
``fno_blocks`` Fourier layers ``x <- act(K x + W x)`` (``K``: :class:`SpectralConv2d` keeping
``modes`` x ``modes`` frequencies per band; ``W``: a 1x1 convolution; no activation after the
last), then project with two 1x1 convolutions. ``padding`` zero-pads the grid on the far sides
before the Fourier layers, which lets a non-periodic solution (a Dirichlet boundary) be fitted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stabilitykit.models.spectral import SpectralConv2d


class FNO2d(nn.Module):
    """``(B, in_channels, H, W)`` real -> ``(B, out_channels, H, W)`` real."""

    spectral_implementation = "stabilitykit.SpectralConv2d"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        width: int = 32,
        modes: int = 12,
        fno_blocks: int = 4,
        padding: int = 0,
        projection: int = 128,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("width", width, 1),
            ("modes", modes, 1),
            ("fno_blocks", fno_blocks, 1),
            ("padding", padding, 0),
            ("projection", projection, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"FNO2d: {name} must be an int >= {low}, got {value!r}")
        self.padding = padding
        self.lift = nn.Conv2d(in_channels + 2, width, 1)
        self.spectral = nn.ModuleList(
            SpectralConv2d(width, width, modes, modes) for _ in range(fno_blocks)
        )
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(fno_blocks))
        self.project = nn.Sequential(
            nn.Conv2d(width, projection, 1), nn.GELU(), nn.Conv2d(projection, out_channels, 1)
        )
        self._config = {"width": width, "modes": modes, "fno_blocks": fno_blocks}
        self._config.update(padding=padding, projection=projection)

    @staticmethod
    def check_grid(grid: int, modes: int, padding: int = 0) -> None:
        """Raise ``ValueError`` naming ``modes`` when it does not fit a ``grid`` (+ padding)."""
        size = grid + padding
        if 2 * modes > size:
            raise ValueError(
                f"modes: got {modes}; allowed: at most {size // 2} on a {grid}x{grid} grid "
                f"padded by {padding}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        gy = torch.linspace(0, 1, height, device=x.device, dtype=x.dtype)
        gx = torch.linspace(0, 1, width, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")).expand(batch, -1, -1, -1)
        x = self.lift(torch.cat([x, grid], dim=1))
        if self.padding:
            x = F.pad(x, (0, self.padding, 0, self.padding))
        last = len(self.spectral) - 1
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            x = spectral(x) + pointwise(x)
            if i < last:
                x = F.gelu(x)
        if self.padding:
            x = x[..., :height, :width]
        return self.project(x)

    def describe(self) -> dict[str, Any]:
        return dict(self._config)
