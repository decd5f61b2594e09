"""Generators: measured amplitudes ``(B, C, N, N)`` float32 -> object ``(B, C, N, N)`` complex64.

The architectures of docs/gridlines.md §3. Every generator ends in a 1x1 head to ``2 * C``
channels, the real parts then the imaginary parts, combined with ``torch.complex``. Their
layouts (levels, channels, modes; the depth rule of ``hybrid``) come from
:mod:`stabilitykit.models.layout`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from stabilitykit.models.blocks import PtychoBlock, StablePtychoBlock
from stabilitykit.models.layout import (
    Layout,
    Modes,
    check_int,
    check_layerscale_init,
    cnn_layout,
    fno_layout,
    hybrid_layout,
)
from stabilitykit.models.spectral import SpectralConv2d


def _check_input(arch: str, x: torch.Tensor, in_channels: int, grid: int) -> None:
    if x.dim() != 4 or x.shape[1] != in_channels or tuple(x.shape[-2:]) != (grid, grid):
        raise ValueError(
            f"{arch}: expected input (B, {in_channels}, {grid}, {grid}), got {tuple(x.shape)}"
        )


def _lifter(in_channels: int, width: int) -> nn.Sequential:
    """Conv3x3 -> GELU -> Conv3x3, ``(B, in_channels, H, W) -> (B, width, H, W)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(width, width, 3, padding=1),
    )


def _decoder_stage(channels: int) -> nn.Sequential:
    """Conv3x3 -> GELU -> Conv3x3 on ``[upsampled, skip]``: ``2 * channels -> channels``."""
    return nn.Sequential(
        nn.Conv2d(2 * channels, channels, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(channels, channels, 3, padding=1),
    )


def _to_complex(out: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, 2C, H, W)`` real/imag stack -> ``(B, C, H, W)`` complex."""
    return torch.complex(out[:, :channels], out[:, channels:])


class _Generator(nn.Module):
    """Shared bookkeeping: ``describe()`` and the input check."""

    architecture: ClassVar[str]
    spectral_implementation: str | None
    layout: Layout

    def __init__(self, in_channels: int, grid: int, hyperparameters: dict[str, Any]) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.grid = grid
        self.hyperparameters = dict(hyperparameters)

    def describe(self) -> dict[str, Any]:
        """Architecture, levels, channels/resolutions/modes per level, extra coarse blocks,
        parameter count, spectral implementation and the keyword arguments it was built with."""
        return {
            "architecture": self.architecture,
            "in_channels": self.in_channels,
            "grid": self.grid,
            **self.layout.as_dict(),
            "parameters": sum(p.numel() for p in self.parameters()),
            "spectral_implementation": self.spectral_implementation,
            "hyperparameters": dict(self.hyperparameters),
        }

    def _check(self, x: torch.Tensor) -> None:
        _check_input(self.architecture, x, self.in_channels, self.grid)


class HybridGenerator(_Generator):
    """Hybrid U-Net (docs/gridlines.md §3 "hybrid") with the depth rule of this module.

    lifter -> per level [block(s), skip, stride-2 Conv2d] -> bottleneck block (half the modes)
    -> per level [ConvTranspose2d stride 2, concat skip, Conv3x3 -> GELU -> Conv3x3] -> 1x1 head.

    Shapes: ``(B, in_channels, grid, grid)`` float32 -> ``(B, in_channels, grid, grid)`` complex64.
    """

    architecture: ClassVar[str] = "hybrid"

    def __init__(
        self,
        in_channels: int,
        grid: int,
        *,
        width: int = 32,
        modes: int = 12,
        fno_blocks: int = 4,
        min_resolution: int = 8,
        max_channels: int | None = None,
    ) -> None:
        kwargs = {
            "width": width,
            "modes": modes,
            "fno_blocks": fno_blocks,
            "min_resolution": min_resolution,
            "max_channels": max_channels,
        }
        check_int(self.architecture, "in_channels", in_channels)
        layout = hybrid_layout(self.architecture, grid, **kwargs)
        super().__init__(in_channels, grid, {**kwargs, **self._block_options()})
        self.layout = layout
        self.spectral_implementation = SpectralConv2d.implementation
        ch, md = layout.channels, layout.modes
        self.lifter = _lifter(in_channels, width)
        self.encoder = nn.ModuleList(self._new_block(c, m) for c, m in zip(ch, md, strict=True))
        self.downsample = nn.ModuleList(
            nn.Conv2d(ch[i], ch[i + 1], kernel_size=2, stride=2) for i in range(layout.levels - 1)
        )
        self.coarse = nn.Sequential(
            *(self._new_block(ch[-1], md[-1]) for _ in range(layout.extra_blocks))
        )
        self.bottleneck = self._new_block(ch[-1], layout.bottleneck_modes)
        # Decoder stages run from coarse to fine: stage j lifts level L-1-j to level L-2-j.
        coarse_to_fine = range(layout.levels - 2, -1, -1)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(ch[i + 1], ch[i], kernel_size=2, stride=2) for i in coarse_to_fine
        )
        self.decoder = nn.ModuleList(_decoder_stage(ch[i]) for i in coarse_to_fine)
        self.head = nn.Conv2d(ch[0], 2 * in_channels, kernel_size=1)

    @classmethod
    def plan(cls, grid: int, **kwargs: Any) -> Layout:
        """The layout for ``grid`` and every keyword argument of ``__init__``; ``ValueError``."""
        return hybrid_layout(cls.architecture, grid, **kwargs)

    def _block_options(self) -> dict[str, Any]:
        return {}

    def _new_block(self, channels: int, modes: Modes) -> nn.Module:
        return PtychoBlock(channels, *modes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, N, N)`` float32 -> ``(B, C, N, N)`` complex64."""
        self._check(x)
        h = self.lifter(x)
        skips = []
        for i, block in enumerate(self.encoder):
            h = block(h)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        h = self.bottleneck(self.coarse(h))
        for up, stage, skip in zip(self.upsample, self.decoder, reversed(skips), strict=True):
            h = stage(torch.cat([up(h), skip], dim=1))
        return _to_complex(self.head(h), self.in_channels)


class StableHybridGenerator(HybridGenerator):
    """``hybrid`` with StablePtychoBlocks (LayerScale ``layerscale_init``) in encoder and
    bottleneck. Shapes as :class:`HybridGenerator`."""

    architecture: ClassVar[str] = "stable_hybrid"

    def __init__(
        self,
        in_channels: int,
        grid: int,
        *,
        width: int = 32,
        modes: int = 12,
        fno_blocks: int = 4,
        min_resolution: int = 8,
        max_channels: int | None = None,
        layerscale_init: float = 1e-3,
    ) -> None:
        check_layerscale_init(self.architecture, layerscale_init)
        # Read by _new_block while HybridGenerator.__init__ builds the blocks.
        self.layerscale_init = float(layerscale_init)
        super().__init__(
            in_channels,
            grid,
            width=width,
            modes=modes,
            fno_blocks=fno_blocks,
            min_resolution=min_resolution,
            max_channels=max_channels,
        )

    @classmethod
    def plan(cls, grid: int, *, layerscale_init: float, **kwargs: Any) -> Layout:
        """As :meth:`HybridGenerator.plan`, also checking ``layerscale_init``."""
        check_layerscale_init(cls.architecture, layerscale_init)
        return hybrid_layout(cls.architecture, grid, **kwargs)

    def _block_options(self) -> dict[str, Any]:
        return {"layerscale_init": self.layerscale_init}

    def _new_block(self, channels: int, modes: Modes) -> nn.Module:
        return StablePtychoBlock(channels, *modes, layerscale_init=self.layerscale_init)


class FNOGenerator(_Generator):
    """Cascaded FNO (docs/gridlines.md §3 "fno").

    lifter -> ``fno_blocks`` PtychoBlocks at full resolution -> 1x1 -> 2 x (Conv3x3 + GELU)
    -> 1x1 head. Shapes: ``(B, C, N, N)`` float32 -> ``(B, C, N, N)`` complex64.
    """

    architecture: ClassVar[str] = "fno"

    def __init__(
        self, in_channels: int, grid: int, *, width: int = 32, modes: int = 12, fno_blocks: int = 4
    ) -> None:
        kwargs = {"width": width, "modes": modes, "fno_blocks": fno_blocks}
        check_int(self.architecture, "in_channels", in_channels)
        layout = fno_layout(self.architecture, grid, **kwargs)
        super().__init__(in_channels, grid, kwargs)
        self.layout = layout
        self.spectral_implementation = SpectralConv2d.implementation
        self.lifter = _lifter(in_channels, width)
        self.blocks = nn.Sequential(*(PtychoBlock(width, modes) for _ in range(fno_blocks)))
        self.project = nn.Conv2d(width, width, kernel_size=1)
        self.refine = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
        )
        self.head = nn.Conv2d(width, 2 * in_channels, kernel_size=1)

    @classmethod
    def plan(cls, grid: int, **kwargs: Any) -> Layout:
        """The layout for ``grid`` and every keyword argument of ``__init__``; ``ValueError``."""
        return fno_layout(cls.architecture, grid, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, N, N)`` float32 -> ``(B, C, N, N)`` complex64."""
        self._check(x)
        h = self.refine(self.project(self.blocks(self.lifter(x))))
        return _to_complex(self.head(h), self.in_channels)


def _conv_stage(channels: int) -> nn.Sequential:
    """(Conv3x3 -> GELU) x 2 at constant channels."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.GELU(),
    )


class CNNGenerator(_Generator):
    """Plain U-Net baseline without spectral layers (docs/gridlines.md §3 "cnn").

    The hybrid's skeleton (lifter, stride-2 downsampling, decoder, head) with every spectral block
    replaced by (Conv3x3 -> GELU) x 2. Shapes: ``(B, C, N, N)`` float32 -> complex64, same shape.
    """

    architecture: ClassVar[str] = "cnn"

    def __init__(self, in_channels: int, grid: int, *, width: int = 32, levels: int = 4) -> None:
        kwargs = {"width": width, "levels": levels}
        check_int(self.architecture, "in_channels", in_channels)
        layout = cnn_layout(self.architecture, grid, **kwargs)
        super().__init__(in_channels, grid, kwargs)
        self.layout = layout
        self.spectral_implementation = None
        ch = layout.channels
        self.lifter = _lifter(in_channels, width)
        self.encoder = nn.ModuleList(_conv_stage(c) for c in ch)
        self.downsample = nn.ModuleList(
            nn.Conv2d(ch[i], ch[i + 1], kernel_size=2, stride=2) for i in range(levels - 1)
        )
        self.bottleneck = _conv_stage(ch[-1])
        coarse_to_fine = range(levels - 2, -1, -1)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(ch[i + 1], ch[i], kernel_size=2, stride=2) for i in coarse_to_fine
        )
        self.decoder = nn.ModuleList(_decoder_stage(ch[i]) for i in coarse_to_fine)
        self.head = nn.Conv2d(ch[0], 2 * in_channels, kernel_size=1)

    @classmethod
    def plan(cls, grid: int, **kwargs: Any) -> Layout:
        """The layout for ``grid`` and every keyword argument of ``__init__``; ``ValueError``."""
        return cnn_layout(cls.architecture, grid, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, N, N)`` float32 -> ``(B, C, N, N)`` complex64."""
        self._check(x)
        h = self.lifter(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            h = stage(h)
            if i < len(self.downsample):
                skips.append(h)
                h = self.downsample[i](h)
        h = self.bottleneck(h)
        for up, stage, skip in zip(self.upsample, self.decoder, reversed(skips), strict=True):
            h = stage(torch.cat([up(h), skip], dim=1))
        return _to_complex(self.head(h), self.in_channels)
