"""Phase images: the least-squares plane removed, as the grid-lines metrics compare them and the
reports draw them (a phase is defined up to a constant and, with a shifted probe, a ramp)."""

from __future__ import annotations

import numpy as np


def remove_plane(phi: np.ndarray) -> np.ndarray:
    """``phi`` minus its least-squares plane ``a*x + b*y + c`` (x: column, y: row index).

    On a full grid the centred coordinates and the constant are orthogonal, so the fit is three
    projections, no solver.
    """
    phi = np.asarray(phi, dtype=float)
    if phi.ndim != 2:
        raise ValueError(f"remove_plane: expected a 2-D image, got shape {phi.shape}")
    y = np.arange(phi.shape[0], dtype=float)[:, None]
    x = np.arange(phi.shape[1], dtype=float)[None, :]
    y, x = y - y.mean(), x - x.mean()
    sxx, syy = phi.shape[0] * np.sum(x**2), phi.shape[1] * np.sum(y**2)
    a = np.sum(phi * x) / sxx if sxx else 0.0
    b = np.sum(phi * y) / syy if syy else 0.0
    return phi - (a * x + b * y + phi.mean())
