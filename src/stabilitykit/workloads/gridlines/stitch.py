"""Reassemble one object from its test patches (docs/gridlines.md §5).

Each patch keeps only its central ``stride x stride`` block; on a regular scan grid of that stride
the blocks tile the object without gaps or overlaps (33 x 10 = 330 px at N = 64, stride 10).
"""

from __future__ import annotations

import numpy as np


def block_offset(N: int, stride: int) -> int:
    """Offset ``(N - stride) // 2`` of the central ``stride x stride`` block of an N x N patch."""
    if not (isinstance(stride, int | np.integer) and 1 <= stride <= N):
        raise ValueError(f"stride must be an int in [1, {N}] for N = {N}, got {stride!r}")
    return (N - stride) // 2


def grid_indices(coords: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Grid position ``(i, j)`` of each patch and the grid size ``(rows, cols)``.

    ``coords`` ``(n, 2)`` are top-left ``(row, col)`` pixels. Raises ``ValueError`` unless every
    position of a full ``rows x cols`` grid of step ``stride`` appears exactly once.
    """
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
        raise ValueError(f"coords must have shape (n, 2) with n >= 1, got {coords.shape}")
    offsets = coords - coords.min(axis=0)
    ij = np.rint(offsets / stride).astype(np.int64)
    off_grid = ~np.isclose(ij * stride, offsets).all(axis=1)
    if off_grid.any():
        raise ValueError(
            f"coords must lie on a grid of stride {stride} from {coords.min(axis=0).tolist()}, "
            f"got {int(off_grid.sum())} off it, first {coords[off_grid][0].tolist()}"
        )
    rows, cols = ij.max(axis=0) + 1
    flat = ij[:, 0] * cols + ij[:, 1]
    if len(coords) != rows * cols or len(np.unique(flat)) != len(flat):
        raise ValueError(
            f"coords must cover a full {rows} x {cols} grid once each ({rows * cols} patches), "
            f"got {len(coords)} patches at {len(np.unique(flat))} distinct positions"
        )
    return ij[:, 0], ij[:, 1], int(rows), int(cols)


def stitch_patches(patches: np.ndarray, coords: np.ndarray, stride: int) -> np.ndarray:
    """Tile the central ``stride x stride`` blocks of one image's patches.

    Args:
        patches: ``(n, N, N)``, real or complex.
        coords: ``(n, 2)`` top-left ``(row, col)`` of each patch on a regular grid of ``stride``,
            in any order.
        stride: scan step in pixels.

    Returns:
        ``(rows * stride, cols * stride)``: the object over :func:`stitched_region`.
    """
    patches = np.asarray(patches)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (n, N, N), got {patches.shape}")
    if len(patches) != len(coords):
        raise ValueError(
            f"expected one coordinate per patch: {len(patches)} patches, {len(coords)} coords"
        )
    offset = block_offset(patches.shape[1], stride)
    i, j, rows, cols = grid_indices(coords, stride)
    blocks = patches[np.argsort(i * cols + j), offset : offset + stride, offset : offset + stride]
    return (
        blocks.reshape(rows, cols, stride, stride)
        .transpose(0, 2, 1, 3)
        .reshape(rows * stride, cols * stride)
    )


def stitched_region(coords: np.ndarray, N: int, stride: int) -> tuple[slice, slice]:
    """Rows and columns of the full object that :func:`stitch_patches` reproduces.

    ``obj[stitched_region(coords, N, stride)]`` cuts the ground truth to match the stitched image.
    """
    offset = block_offset(N, stride)
    _, _, rows, cols = grid_indices(coords, stride)
    r0, c0 = (int(v) + offset for v in np.asarray(coords).min(axis=0))
    return slice(r0, r0 + rows * stride), slice(c0, c0 + cols * stride)


def trim(image: np.ndarray, border: int = 2) -> np.ndarray:
    """Drop ``border`` pixels from each side of the last two dims (330 -> 326 px at border 2)."""
    image = np.asarray(image)
    height, width = image.shape[-2:]
    if border < 0 or 2 * border >= min(height, width):
        raise ValueError(
            f"border must be in [0, {(min(height, width) - 1) // 2}] for a {height} x {width} "
            f"image, got {border}"
        )
    return image[..., border : height - border, border : width - border]
