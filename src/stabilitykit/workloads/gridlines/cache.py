"""The grid-lines data set in the content-addressed cache: ``<cache_dir>/<dataset_hash>.npz``.

Locking, atomic writes and rebuilding an untrusted file are the engine's
(:func:`stabilitykit.cache.load_or_build`); this module says what is stored and how a file is
validated against its spec. The key, ``dataset_hash``, lives beside the simulator whose version
it covers (``simulate.py``).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np

from stabilitykit import cache
from stabilitykit.cache import default_cache_dir
from stabilitykit.workloads.gridlines.simulate import (
    SIMULATOR_VERSION,
    GridLinesData,
    Split,
    build_dataset,
    dataset_hash,
    scan_coords,
)
from stabilitykit.workloads.gridlines.spec import GridLinesSpec

__all__ = [
    "FORMAT_VERSION",
    "SIMULATOR_VERSION",
    "dataset_hash",
    "default_cache_dir",
    "load_or_build",
]

FORMAT_VERSION = 1  # layout of the .npz; bump when keys or meanings change
_SPLIT_KEYS = ("diffraction", "coords", "image_index", "objects")


def load_or_build(spec: GridLinesSpec, cache_dir: str | os.PathLike) -> GridLinesData:
    """The data set of ``spec``, from ``cache_dir/<hash>.npz`` or built and stored there.

    Safe with concurrent callers (processes or threads): one builds, the others wait and load.
    """
    key = dataset_hash(spec)
    return cache.load_or_build(
        key,
        lambda: build_dataset(spec),
        cache_dir,
        load=partial(_load, spec=spec, key=key),
        save=_arrays,
    )


def _arrays(data: GridLinesData) -> dict[str, np.ndarray]:
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
    return arrays


def _load(path: Path, spec: GridLinesSpec, key: str) -> GridLinesData:
    arrays = cache.read_npz(path)
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
