"""Layouts of the generators: levels, resolutions, channels and modes, validated before any
weight is allocated.

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

At N = 64, width 32, 4 blocks: 64/32/16/8 px with 32/64/128/256 channels (as in the original
study, docs/gridlines.md §3); 6 and 8 blocks add 2 and 4 blocks of 256 channels at 8 px.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

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


def check_int(arch: str, name: str, value: object, minimum: int = 1) -> None:
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
    check_int(arch, "grid", grid)
    for name, value in (("width", width), ("modes", modes), ("fno_blocks", fno_blocks)):
        check_int(arch, name, value)
    check_int(arch, "min_resolution", min_resolution, minimum=2)
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


def check_layerscale_init(arch: str, value: object) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{arch}: layerscale_init must be a finite number >= 0, got {value!r}")


def fno_layout(arch: str, grid: int, *, width: int, modes: int, fno_blocks: int) -> Layout:
    """One full-resolution level holding every block; ``ValueError`` if invalid."""
    check_int(arch, "grid", grid)
    for name, value in (("width", width), ("modes", modes), ("fno_blocks", fno_blocks)):
        check_int(arch, name, value)
    _check_full_grid_modes(arch, grid, modes)
    return Layout((grid,), (width,), ((modes, modes),), (fno_blocks,), None)


def cnn_layout(arch: str, grid: int, *, width: int, levels: int) -> Layout:
    """A plain U-Net halving ``levels - 1`` times and doubling channels; ``ValueError``."""
    check_int(arch, "grid", grid)
    check_int(arch, "width", width)
    check_int(arch, "levels", levels)
    _check_divisible(arch, grid, levels, f"levels={levels}")
    return Layout(
        resolutions=tuple(grid >> i for i in range(levels)),
        channels=tuple(width << i for i in range(levels)),
        modes=(),
        blocks_per_level=(),
        bottleneck_modes=None,
    )
