"""Residual spectral blocks of the hybrid and FNO generators (docs/gridlines.md §3).

Both blocks map ``(B, channels, H, W)`` to the same shape and need ``2 * modes_x <= H`` and
``modes_y <= W // 2 + 1``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stabilitykit.models.spectral import SpectralConv2d


class _SpectralBranch(nn.Module):
    """The shared residual branch ``GELU(Spectral(x) + Conv3x3(x))``."""

    def __init__(self, channels: int, modes_x: int, modes_y: int | None = None) -> None:
        super().__init__()
        self.spectral = SpectralConv2d(channels, channels, modes_x, modes_y)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """``GELU(Spectral(x) + Conv3x3(x))``, shape of ``x``."""
        return F.gelu(self.spectral(x) + self.conv(x))


class PtychoBlock(_SpectralBranch):
    """Control block ``y = x + GELU(Spectral(x) + Conv3x3(x))``.

    Args:
        channels: input and output channels.
        modes_x: retained row modes per sign of the spectral path.
        modes_y: retained column modes (defaults to ``modes_x``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, channels, H, W)`` -> ``(B, channels, H, W)``."""
        return x + self.update(x)


class StablePtychoBlock(_SpectralBranch):
    """LayerScale block ``y = x + gamma * InstanceNorm(GELU(Spectral(x) + Conv3x3(x)))``.

    InstanceNorm is affine (weight 1, bias 0, eps 1e-5); ``gamma`` (``layerscale``) is a
    per-channel gate started at ``layerscale_init`` so that a deep stack starts near the
    identity but can leave it (Touvron et al. 2021, "Going deeper with Image Transformers").

    Args:
        channels: input and output channels.
        modes_x: retained row modes per sign of the spectral path.
        modes_y: retained column modes (defaults to ``modes_x``).
        layerscale_init: initial value of every entry of ``layerscale``; finite, >= 0.
    """

    def __init__(
        self,
        channels: int,
        modes_x: int,
        modes_y: int | None = None,
        *,
        layerscale_init: float = 1e-3,
    ) -> None:
        if not math.isfinite(layerscale_init) or layerscale_init < 0:
            raise ValueError(
                f"StablePtychoBlock: layerscale_init must be finite and >= 0, "
                f"got {layerscale_init!r}"
            )
        super().__init__(channels, modes_x, modes_y)
        self.norm = nn.InstanceNorm2d(channels, affine=True, eps=1e-5)
        self.layerscale = nn.Parameter(torch.full((channels,), float(layerscale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, channels, H, W)`` -> ``(B, channels, H, W)``."""
        return x + self.layerscale.view(1, -1, 1, 1) * self.norm(self.update(x))
