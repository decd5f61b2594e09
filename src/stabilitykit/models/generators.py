"""Generators: measured amplitudes ``(B, C, N, N)`` float32 -> object ``(B, C, N, N)`` complex64.

The architectures of DOMAIN §3. Every generator ends in a 1x1 head to ``2 * C`` channels, the real
parts then the imaginary parts, combined with ``torch.complex``.

The depth rule of ``hybrid``
----------------------------
The original hybrid halved the grid and doubled the channels once per block, so 8 blocks at
N = 64 asked for a sub-pixel level and 4.4 B parameters. Ours, for ``fno_blocks`` blocks on an
``N x N`` grid:

- encoder levels ``L = min(fno_blocks, 1 + floor(log2(N / min_resolution)))``; level ``i`` runs at
  ``N / 2**i`` px, so no level is coarser than ``min_resolution`` and ``N`` must be divisible by
  ``2**(L - 1)``;
- level ``i`` has ``min(width * 2**i, max_channels)`` channels (``max_channels`` defaults to
  ``8 * width``);
- one block per level; the remaining ``fno_blocks - L`` blocks are stacked at the coarsest level
  (same channels), followed by the bottleneck block;
- at a level of ``r`` px the modes are capped to ``modes_x <= r // 2``, ``modes_y <= r // 2 + 1``;
  the bottleneck uses ``max(1, modes // 2)`` modes, capped likewise. ``modes`` itself must fit the
  full grid (``2 * modes <= N``).

At N = 64, width 32, 4 blocks: 64/32/16/8 px with 32/64/128/256 channels (as in DOMAIN); 6 and 8
blocks add 2 and 4 blocks of 256 channels at 8 px.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import nn

from stabilitykit.models.blocks import PtychoBlock, StablePtychoBlock
from stabilitykit.models.spectral import SpectralConv2d

Modes = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Per-level structure of a generator, computed (and validated) before any weight exists.

    ``modes`` and ``blocks_per_level`` are empty for a network without spectral layers.
    """

    resolutions: tuple[int, ...]
    channels: tuple[int, ...]
    modes: tuple[Modes, ...]
    blocks_per_level: tuple[int, ...]
    bottleneck_modes: Modes | None

    @property
    def levels(self) -> int:
        return len(self.resolutions)

    @property
    def extra_blocks(self) -> int:
        """Spectral blocks at the coarsest level beyond the one every level has."""
        return self.blocks_per_level[-1] - 1 if self.blocks_per_level else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (lists, not tuples)."""
        bottleneck = self.bottleneck_modes
        return {
            "levels": self.levels,
            "resolutions": list(self.resolutions),
            "channels": list(self.channels),
            "modes": [list(m) for m in self.modes],
            "blocks_per_level": list(self.blocks_per_level),
            "extra_blocks": self.extra_blocks,
            "bottleneck_modes": None if bottleneck is None else list(bottleneck),
        }


def _check_int(arch: str, name: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{arch}: {name} must be {kind}, got {value!r}")


def _check_full_grid_modes(arch: str, grid: int, modes: int) -> None:
    if 2 * modes > grid:
        raise ValueError(
            f"{arch}: modes={modes} does not fit grid={grid}; allowed: modes <= {grid // 2} "
            f"(2 * modes <= grid)"
        )


def _check_divisible(arch: str, grid: int, levels: int, why: str) -> None:
    step = 2 ** (levels - 1)
    if grid % step:
        raise ValueError(
            f"{arch}: grid={grid} cannot be halved {levels - 1} times ({why}); "
            f"allowed: a multiple of {step}"
        )


def _capped_modes(modes: int, resolution: int) -> Modes:
    return max(1, min(modes, resolution // 2)), max(1, min(modes, resolution // 2 + 1))


def hybrid_layout(
    arch: str,
    grid: int,
    *,
    width: int,
    modes: int,
    fno_blocks: int,
    min_resolution: int,
    max_channels: int | None,
) -> Layout:
    """Levels of the hybrid U-Net under the depth rule of this module; ``ValueError`` if invalid."""
    _check_int(arch, "grid", grid)
    for name, value in (("width", width), ("modes", modes), ("fno_blocks", fno_blocks)):
        _check_int(arch, name, value)
    _check_int(arch, "min_resolution", min_resolution, minimum=2)
    if min_resolution > grid:
        raise ValueError(
            f"{arch}: min_resolution={min_resolution} exceeds grid={grid}; "
            f"allowed: 2 <= min_resolution <= grid"
        )
    cap = 8 * width if max_channels is None else max_channels
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < width:
        raise ValueError(
            f"{arch}: max_channels must be None or an int >= width={width}, got {max_channels!r}"
        )
    _check_full_grid_modes(arch, grid, modes)
    halvings = (grid // min_resolution).bit_length() - 1  # floor(log2(grid / min_resolution))
    levels = min(fno_blocks, 1 + halvings)
    why = f"{levels} levels from fno_blocks={fno_blocks}, min_resolution={min_resolution}"
    _check_divisible(arch, grid, levels, why)
    resolutions = tuple(grid >> i for i in range(levels))
    return Layout(
        resolutions=resolutions,
        channels=tuple(min(width << i, cap) for i in range(levels)),
        modes=tuple(_capped_modes(modes, r) for r in resolutions),
        blocks_per_level=(1,) * (levels - 1) + (1 + fno_blocks - levels,),
        bottleneck_modes=_capped_modes(max(1, modes // 2), resolutions[-1]),
    )


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
    """Hybrid U-Net (DOMAIN §3 "hybrid") with the depth rule of this module.

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
        _check_int(self.architecture, "in_channels", in_channels)
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
        _check_layerscale_init(self.architecture, layerscale_init)
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
        _check_layerscale_init(cls.architecture, layerscale_init)
        return hybrid_layout(cls.architecture, grid, **kwargs)

    def _block_options(self) -> dict[str, Any]:
        return {"layerscale_init": self.layerscale_init}

    def _new_block(self, channels: int, modes: Modes) -> nn.Module:
        return StablePtychoBlock(channels, *modes, layerscale_init=self.layerscale_init)


def _check_layerscale_init(arch: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{arch}: layerscale_init must be a finite number >= 0, got {value!r}")


def fno_layout(arch: str, grid: int, *, width: int, modes: int, fno_blocks: int) -> Layout:
    """One full-resolution level holding every block; ``ValueError`` if invalid."""
    _check_int(arch, "grid", grid)
    for name, value in (("width", width), ("modes", modes), ("fno_blocks", fno_blocks)):
        _check_int(arch, name, value)
    _check_full_grid_modes(arch, grid, modes)
    return Layout((grid,), (width,), ((modes, modes),), (fno_blocks,), None)


class FNOGenerator(_Generator):
    """Cascaded FNO (DOMAIN §3 "fno").

    lifter -> ``fno_blocks`` PtychoBlocks at full resolution -> 1x1 -> 2 x (Conv3x3 + GELU)
    -> 1x1 head. Shapes: ``(B, C, N, N)`` float32 -> ``(B, C, N, N)`` complex64.
    """

    architecture: ClassVar[str] = "fno"

    def __init__(
        self, in_channels: int, grid: int, *, width: int = 32, modes: int = 12, fno_blocks: int = 4
    ) -> None:
        kwargs = {"width": width, "modes": modes, "fno_blocks": fno_blocks}
        _check_int(self.architecture, "in_channels", in_channels)
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


def cnn_layout(arch: str, grid: int, *, width: int, levels: int) -> Layout:
    """A plain U-Net halving ``levels - 1`` times and doubling channels; ``ValueError``."""
    _check_int(arch, "grid", grid)
    _check_int(arch, "width", width)
    _check_int(arch, "levels", levels)
    _check_divisible(arch, grid, levels, f"levels={levels}")
    return Layout(
        resolutions=tuple(grid >> i for i in range(levels)),
        channels=tuple(width << i for i in range(levels)),
        modes=(),
        blocks_per_level=(),
        bottleneck_modes=None,
    )


def _conv_stage(channels: int) -> nn.Sequential:
    """(Conv3x3 -> GELU) x 2 at constant channels."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.GELU(),
    )


class CNNGenerator(_Generator):
    """Plain U-Net baseline without spectral layers (DOMAIN §3 "cnn").

    The hybrid's skeleton (lifter, stride-2 downsampling, decoder, head) with every spectral block
    replaced by (Conv3x3 -> GELU) x 2. Shapes: ``(B, C, N, N)`` float32 -> complex64, same shape.
    """

    architecture: ClassVar[str] = "cnn"

    def __init__(self, in_channels: int, grid: int, *, width: int = 32, levels: int = 4) -> None:
        kwargs = {"width": width, "levels": levels}
        _check_int(self.architecture, "in_channels", in_channels)
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
