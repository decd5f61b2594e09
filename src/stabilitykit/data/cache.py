"""Content-addressed cache of built data sets: ``<cache_dir>/<dataset_hash>.npz``.

Writers build under an exclusive ``flock`` on ``<hash>.lock``, write a temp file in the same folder
and ``os.replace`` it into place, so readers see a complete file or none. A file that fails to load
or validate is logged, deleted and rebuilt, never trusted. The key, ``dataset_hash``, lives beside
the simulator whose version it covers (``simulate.py``) and is re-exported here.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stabilitykit.data.simulate import (
    SIMULATOR_VERSION,
    GridLinesData,
    Split,
    build_dataset,
    dataset_hash,
    scan_coords,
)
from stabilitykit.data.spec import GridLinesSpec

__all__ = [
    "FORMAT_VERSION",
    "SIMULATOR_VERSION",
    "dataset_hash",
    "default_cache_dir",
    "load_or_build",
]

FORMAT_VERSION = 1  # layout of the .npz; bump when keys or meanings change
_SPLIT_KEYS = ("diffraction", "coords", "image_index", "objects")

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$STABILITYKIT_CACHE`` if set, else ``~/.cache/stabilitykit``."""
    env = os.environ.get("STABILITYKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stabilitykit"


def load_or_build(spec: GridLinesSpec, cache_dir: str | os.PathLike) -> GridLinesData:
    """The data set of ``spec``, from ``cache_dir/<hash>.npz`` or built and stored there.

    Safe with concurrent callers (processes or threads): one builds, the others wait and load.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = dataset_hash(spec)
    path = cache_dir / f"{key}.npz"
    if path.exists():  # fast path: files appear only by atomic rename, never half-written
        try:
            return _load(path, spec, key)
        except Exception:  # judged (and logged) again under the lock
            pass
    with _exclusive_lock(cache_dir / f"{key}.lock"):
        if path.exists():  # built by another process while we waited, or corrupt
            try:
                return _load(path, spec, key)
            except Exception as err:  # any failure to read or validate: do not trust the file
                log.warning("discarding cached data set %s: %s: %s", path, type(err).__name__, err)
                path.unlink()
        data = build_dataset(spec)
        _write_atomic(path, data)
    return data


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: GridLinesData) -> None:
    arrays: dict[str, np.ndarray] = {
        "format_version": np.asarray(FORMAT_VERSION),
        "data_hash": np.asarray(data.data_hash),
        "probe": data.probe,
        "norm": np.asarray(data.norm, dtype=np.float64),
        "intensity_scale": np.asarray(data.intensity_scale, dtype=np.float64),
    }
    for name, split in (("train", data.train), ("test", data.test)):
        for key in _SPLIT_KEYS:
            arrays[f"{name}_{key}"] = getattr(split, key)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, spec: GridLinesSpec, key: str) -> GridLinesData:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}  # reads every member, checks zip CRCs
    version = int(arrays["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"format version {version}, expected {FORMAT_VERSION}")
    if str(arrays["data_hash"]) != key:
        raise ValueError(f"data hash {arrays['data_hash']}, expected {key}")
    probe = arrays["probe"]
    if probe.shape != (spec.N, spec.N) or probe.dtype != np.complex64:
        raise ValueError(
            f"probe {probe.shape} {probe.dtype}, expected ({spec.N}, {spec.N}) complex64"
        )
    norm, scale = float(arrays["norm"]), float(arrays["intensity_scale"])
    if not (np.isfinite(norm) and norm > 0 and np.isfinite(scale) and scale > 0):
        raise ValueError(f"norm {norm} and intensity_scale {scale} must be finite and > 0")
    splits = {}
    for name, nimgs, stride in (
        ("train", spec.nimgs_train, spec.train_stride),
        ("test", spec.nimgs_test, spec.test_stride),
    ):
        split = Split(**{k: arrays[f"{name}_{k}"] for k in _SPLIT_KEYS}, stride=stride)
        coords, index = scan_coords(spec, stride, nimgs)
        expected = (len(index), spec.N, spec.N, spec.channels)
        if split.diffraction.shape != expected:
            raise ValueError(f"{name} diffraction {split.diffraction.shape}, expected {expected}")
        size = spec.object_size
        if split.objects.shape != (nimgs, size, size):
            raise ValueError(
                f"{name} objects {split.objects.shape}, expected {(nimgs, size, size)}"
            )
        if not (np.array_equal(split.coords, coords) and np.array_equal(split.image_index, index)):
            raise ValueError(f"{name} scan differs from the scan of the spec")
        splits[name] = split
    return GridLinesData(
        spec=spec,
        train=splits["train"],
        test=splits["test"],
        probe=probe,
        norm=norm,
        intensity_scale=scale,
        data_hash=key,
    )
