"""The illumination probe P (docs/gridlines.md §1): the ideal disk, user probes, their scaling."""

from __future__ import annotations

import os
import zipfile
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter

from stabilitykit.workloads.gridlines.spec import IDEAL_DISK

if TYPE_CHECKING:
    from stabilitykit.workloads.gridlines.spec import GridLinesSpec

PROBE_MEAN_AMPLITUDE = 0.1  # target of mean(|P| * [r < N/4]) over all N² px


def ideal_disk_probe(N: int) -> np.ndarray:
    """The unscaled "ideal disk" probe, ``(N, N)`` complex64 with zero phase.

    A Gaussian window ``g`` of std ``N / (0.7 pi²)`` centred at ``(N - 1) / 2``, the disk
    ``outer(g, g) > 0.5`` (radius ``std * sqrt(2 ln 2)``, ≈ 10.9 px at N = 64), smoothed by a
    Gaussian of sigma 1 px, plus 1e-9.
    """
    if isinstance(N, bool) or not isinstance(N, int) or N < 2:
        raise ValueError(f"ideal_disk_probe: expected N an int >= 2, got {N!r}")
    std = N / (0.7 * np.pi**2)
    x = np.arange(N) - (N - 1) / 2
    g = np.exp(-0.5 * (x / std) ** 2)
    disk = (np.outer(g, g) > 0.5).astype(np.float64)
    return (gaussian_filter(disk, 1.0) + 1e-9).astype(np.complex64)


def probe_mask(N: int) -> np.ndarray:
    """``(N, N)`` bool: pixels with ``r < N/4`` from the centre ``((N - 1)/2, (N - 1)/2)``."""
    x = np.arange(N) - (N - 1) / 2
    return x[:, None] ** 2 + x[None, :] ** 2 < (N / 4) ** 2


def scale_probe(probe: np.ndarray) -> np.ndarray:
    """``probe`` scaled so that ``mean(|P| * [r < N/4]) = 0.1``, the mean over all N² pixels.

    Shapes: ``(N, N)`` complex in, ``(N, N)`` complex64 out. The mean is over all N² pixels (not
    only those inside the disk), as in docs/gridlines.md §1.
    """
    probe = np.asarray(probe)
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(f"scale_probe: expected a square (N, N) array, got shape {probe.shape}")
    masked_mean = float(np.mean(np.abs(probe) * probe_mask(probe.shape[0])))
    if not (np.isfinite(masked_mean) and masked_mean > 0):
        raise ValueError(
            f"scale_probe: mean |P| inside r < N/4 must be finite and > 0, got {masked_mean}"
        )
    return (probe * (PROBE_MEAN_AMPLITUDE / masked_mean)).astype(np.complex64)


def load_probe(path: str | os.PathLike, N: int) -> np.ndarray:
    """The unscaled probe stored in ``path``: an ``.npz`` holding exactly one complex ``(N, N)``
    array, finite, with a non-zero amplitude inside ``r < N/4``. Returns ``(N, N)`` complex64.

    Every problem raises ValueError naming the file and what is wrong.
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"probe file {path!r}: expected an .npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"probe file {path!r}: cannot read it as .npz ({err})") from err
    if len(arrays) != 1:
        raise ValueError(
            f"probe file {path!r}: expected exactly one array, got {len(arrays)} ({sorted(arrays)})"
        )
    (probe,) = arrays.values()
    if not np.iscomplexobj(probe):
        raise ValueError(f"probe file {path!r}: expected a complex array, got dtype {probe.dtype}")
    if probe.shape != (N, N):
        raise ValueError(f"probe file {path!r}: expected shape ({N}, {N}), got {probe.shape}")
    if not np.all(np.isfinite(probe)):
        raise ValueError(f"probe file {path!r}: the probe has non-finite values")
    if not np.any(np.abs(probe) * probe_mask(N) > 0):
        raise ValueError(f"probe file {path!r}: the probe is zero everywhere inside r < N/4")
    return probe.astype(np.complex64)


def make_probe(spec: GridLinesSpec) -> np.ndarray:
    """The scaled probe of ``spec``, ``(N, N)`` complex64 (ideal disk or ``spec.probe`` file)."""
    raw = ideal_disk_probe(spec.N) if spec.probe == IDEAL_DISK else load_probe(spec.probe, spec.N)
    return scale_probe(raw)
