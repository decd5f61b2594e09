"""Grid-lines simulation (docs/gridlines.md §1): line objects, the scan, and far-field diffraction.

Choices where docs/gridlines.md §1 leaves room:

- ``norm`` (step 1) is computed on the train patches and reused for test, like ``S`` (step 2): both
  splits share one amplitude scale, so a model trained on train sees test data in the same units.
- The object phase uses the max and mean of the amplitude stack of its own split
  (docs/gridlines.md §1).
- gridsize 2: the channels of the group anchored at ``(r, c)`` are the patches at ``(r, c)``,
  ``(r, c+4)``, ``(r+4, c)``, ``(r+4, c+4)`` (channel ``k = 2*dr + dc``); anchors step by the
  split's stride and the whole group lies inside the object.
- Random streams: ``default_rng([spec.seed, k])`` with ``k`` 0/1 train/test objects and 2/3
  train/test Poisson noise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter
from skimage.draw import line

from stabilitykit.workloads.gridlines.probe import make_probe
from stabilitykit.workloads.gridlines.spec import GROUP_OFFSET, IDEAL_DISK, GridLinesSpec

SIMULATOR_VERSION = "1"  # bump whenever a change alters the arrays a spec produces
_STREAMS = {"train_objects": 0, "test_objects": 1, "train_noise": 2, "test_noise": 3}
_CHUNK_PATTERNS = 1024  # diffraction patterns (patches x channels) simulated at a time


def dataset_hash(spec: GridLinesSpec) -> str:
    """Content address of the data set of ``spec``: 16 hex chars of a sha256.

    Covers the canonical JSON of ``spec.to_dict()`` and ``SIMULATOR_VERSION``; a user probe enters
    by the sha256 of its file's bytes (not its path), so moving the file keeps the hash.
    """
    canonical = spec.to_dict()
    if spec.probe != IDEAL_DISK:
        with open(spec.probe, "rb") as f:
            canonical["probe"] = "sha256:" + hashlib.sha256(f.read()).hexdigest()
    payload = json.dumps(
        {"spec": canonical, "simulator_version": SIMULATOR_VERSION},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Split:
    """One split (train or test) of a grid-lines data set.

    Attributes:
        diffraction: ``(n, N, N, C)`` float32, measured amplitude X (Poisson noise applied).
        coords: ``(n, C, 2)`` int64, top-left ``(row, col)`` of each patch on its object.
        image_index: ``(n,)`` int64, the object each sample comes from; samples are in scan order.
        objects: ``(nimgs, size, size)`` complex64, amplitude divided by ``norm``, phase applied.
        stride: scan stride, px.
    """

    diffraction: np.ndarray
    coords: np.ndarray
    image_index: np.ndarray
    objects: np.ndarray
    stride: int

    def __post_init__(self) -> None:
        X, objects = self.diffraction, self.objects
        if X.ndim != 4 or X.shape[1] != X.shape[2]:
            raise ValueError(f"Split.diffraction: expected shape (n, N, N, C), got {X.shape}")
        if objects.ndim != 3 or objects.shape[1] != objects.shape[2]:
            raise ValueError(
                f"Split.objects: expected shape (nimgs, size, size), got {objects.shape}"
            )
        n, N, _, C = X.shape
        nimgs, size, _ = objects.shape
        _expect("diffraction", X, X.shape, np.float32)
        _expect("coords", self.coords, (n, C, 2), np.int64)
        _expect("image_index", self.image_index, (n,), np.int64)
        _expect("objects", objects, objects.shape, np.complex64)
        if n and not (self.image_index.min() >= 0 and self.image_index.max() < nimgs):
            raise ValueError(f"Split.image_index: expected values in [0, {nimgs})")
        if n and not (self.coords.min() >= 0 and self.coords.max() <= size - N):
            raise ValueError(f"Split.coords: expected {N} px patches inside {size} px objects")

    @property
    def patch_size(self) -> int:
        """N, px."""
        return self.diffraction.shape[1]

    def object_patches(self) -> np.ndarray:
        """Y: the object under each patch, ``(n, N, N, C)`` complex64 (a new array per call)."""
        patches = _gather(self.objects, self.coords, self.image_index, self.patch_size)
        return np.ascontiguousarray(np.moveaxis(patches, 1, -1))

    def illuminated_amplitude(self, probe: np.ndarray, intensity_scale: float) -> np.ndarray:
        """``|psi| / S`` with ``psi = S * Y * P`` (§1 step 3), ``(n, N, N, C)`` float32.

        This is ``|Y * P|`` in the units of X (``sum_px X² = sum_px |Y*P|²`` without noise).
        """
        psi = self.object_patches() * (np.float32(intensity_scale) * probe[:, :, None])
        return (np.abs(psi) / np.float32(intensity_scale)).astype(np.float32)

    @property
    def amplitude(self) -> np.ndarray:
        """``|Y|``, ``(n, N, N, C)`` float32 (computed on each access)."""
        return np.abs(self.object_patches())

    @property
    def phase(self) -> np.ndarray:
        """``angle(Y)`` in ``(-pi, pi]``, ``(n, N, N, C)`` float32 (computed on each access)."""
        return np.angle(self.object_patches()).astype(np.float32)

    def patches_of_image(self, i: int) -> np.ndarray:
        """Indices ``(m,)`` int64 of the samples of object ``i``, in scan order."""
        nimgs = self.objects.shape[0]
        if not 0 <= i < nimgs:
            raise ValueError(f"patches_of_image: expected 0 <= i < {nimgs}, got {i}")
        return np.flatnonzero(self.image_index == i)


@dataclass(frozen=True, eq=False)
class GridLinesData:
    """A built data set: both splits and the scalars that link them (docs/gridlines.md §1).

    Attributes:
        spec: the spec it was built from.
        train, test: the splits.
        probe: ``(N, N)`` complex64, after scaling.
        norm: mean over train patches of the patch maximum amplitude (reused for test).
        intensity_scale: S, from train (reused for test).
        data_hash: ``dataset_hash(spec)``.
    """

    spec: GridLinesSpec
    train: Split
    test: Split
    probe: np.ndarray
    norm: float
    intensity_scale: float
    data_hash: str


def scan_coords(spec: GridLinesSpec, stride: int, nimgs: int) -> tuple[np.ndarray, np.ndarray]:
    """Scan of ``nimgs`` objects: coords ``(n, C, 2)`` int64 and image index ``(n,)`` int64.

    Row-major over anchors ``0, stride, 2*stride, ...`` per axis; ``n = nimgs * m²`` with
    ``m = floor((size - reach) / stride) + 1`` and ``reach = N`` (gridsize 1) or ``N + 4`` (2).
    """
    reach = spec.N + (GROUP_OFFSET if spec.gridsize == 2 else 0)
    starts = np.arange(0, spec.object_size - reach + 1, stride, dtype=np.int64)
    rows, cols = np.meshgrid(starts, starts, indexing="ij")
    anchors = np.stack([rows.ravel(), cols.ravel()], axis=-1)  # (m², 2)
    steps = [(dr, dc) for dr in range(spec.gridsize) for dc in range(spec.gridsize)]
    offsets = GROUP_OFFSET * np.asarray(steps, dtype=np.int64)  # (C, 2)
    per_image = anchors[:, None, :] + offsets[None, :, :]
    coords = np.tile(per_image, (nimgs, 1, 1))
    image_index = np.repeat(np.arange(nimgs, dtype=np.int64), len(per_image))
    return coords, image_index


def line_object_amplitude(size: int, n_lines: int, rng: np.random.Generator) -> np.ndarray:
    """One object amplitude, ``(size, size)`` float32 (docs/gridlines.md §1).

    ``n_lines`` one-pixel segments with end points uniform on a ``2*size`` canvas (pixels set to
    1), blurred as ``g1 + 2*g5 + 5*g10`` (``gS``: Gaussian of sigma S px), centre crop.
    """
    side = 2 * size
    canvas = np.zeros((side, side), dtype=np.float32)
    ends = rng.integers(0, side, size=(n_lines, 4))
    pixels = [line(r0, c0, r1, c1) for r0, c0, r1, c1 in ends.tolist()]
    canvas[np.concatenate([p[0] for p in pixels]), np.concatenate([p[1] for p in pixels])] = 1.0
    blurred = (
        gaussian_filter(canvas, 1)
        + 2 * gaussian_filter(canvas, 5)
        + 5 * gaussian_filter(canvas, 10)
    )
    start = size // 2
    return blurred[start : start + size, start : start + size]


def object_phase(amplitudes: np.ndarray) -> np.ndarray:
    """``pi * tanh((A - max(A)/2) / (3 mean(A)))``, max and mean over the whole stack, float32."""
    shifted = (amplitudes - amplitudes.max() / 2) / (3 * amplitudes.mean())
    return (np.pi * np.tanh(shifted)).astype(np.float32)


def simulate_amplitude(
    object_patches: np.ndarray,
    probe: np.ndarray,
    intensity_scale: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Measured amplitude X of object patches (§1 steps 3-4), ``(n, N, N, C)`` float32.

    ``I = fftshift(|FFT2(S * Y * P)|²) / N²`` and ``X = sqrt(Poisson(I)) / S``; with ``rng=None``
    no noise is drawn and ``X = sqrt(I) / S = |fftshift(FFT2(Y * P))| / N``.

    Args:
        object_patches: Y, ``(n, N, N, C)`` complex.
        probe: P, ``(N, N)`` complex.
        intensity_scale: S.
        rng: source of the Poisson noise, or None for the noiseless amplitude.
    """
    if object_patches.ndim != 4 or probe.shape != object_patches.shape[1:3]:
        raise ValueError(
            f"simulate_amplitude: expected patches (n, N, N, C) and probe (N, N), got "
            f"{object_patches.shape} and {probe.shape}"
        )
    out = np.empty(object_patches.shape, dtype=np.float32)
    for rows in _chunks(object_patches.shape[0], object_patches.shape[3]):
        patches = np.moveaxis(object_patches[rows], -1, 1).astype(np.complex64)
        out[rows] = np.moveaxis(_far_field_intensity(patches, probe), 1, -1)
    _measure_in_place(out, intensity_scale, rng)
    return out


def build_dataset(spec: GridLinesSpec) -> GridLinesData:
    """Simulate the data set of ``spec`` (§1); equal specs give bit-identical arrays."""
    probe = make_probe(spec)
    amplitudes, coords, index = {}, {}, {}
    for name, nimgs, stride in (
        ("train", spec.nimgs_train, spec.train_stride),
        ("test", spec.nimgs_test, spec.test_stride),
    ):
        rng = np.random.default_rng([spec.seed, _STREAMS[f"{name}_objects"]])
        amplitudes[name] = np.stack(
            [line_object_amplitude(spec.object_size, spec.n_lines, rng) for _ in range(nimgs)]
        )
        coords[name], index[name] = scan_coords(spec, stride, nimgs)

    norm = _mean_patch_max(amplitudes["train"], coords["train"], index["train"], spec.N)
    objects = {name: _complex_objects(a, norm, spec.phase) for name, a in amplitudes.items()}
    intensity = {
        name: _intensity(objects[name], coords[name], index[name], probe) for name in objects
    }
    energy = intensity["train"].sum(axis=(1, 2), dtype=np.float64).mean()
    intensity_scale = float(np.sqrt(spec.nphotons / energy))

    splits = {}
    for name, stride in (("train", spec.train_stride), ("test", spec.test_stride)):
        X = intensity[name]
        rng = np.random.default_rng([spec.seed, _STREAMS[f"{name}_noise"]])
        _measure_in_place(X, intensity_scale, rng)
        splits[name] = Split(X, coords[name], index[name], objects[name], stride)
    return GridLinesData(
        spec=spec,
        train=splits["train"],
        test=splits["test"],
        probe=probe,
        norm=norm,
        intensity_scale=intensity_scale,
        data_hash=dataset_hash(spec),
    )


def _expect(name: str, array: np.ndarray, shape: tuple[int, ...], dtype: type) -> None:
    if array.shape != shape or array.dtype != dtype:
        raise ValueError(
            f"Split.{name}: expected {shape} {np.dtype(dtype)}, got {array.shape} {array.dtype}"
        )


def _chunks(n: int, channels: int) -> Iterator[slice]:
    step = max(1, _CHUNK_PATTERNS // channels)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def _gather(objects: np.ndarray, coords: np.ndarray, index: np.ndarray, N: int) -> np.ndarray:
    """The ``(n, C, N, N)`` windows of ``objects`` at ``coords`` (one fancy-indexing copy)."""
    windows = sliding_window_view(objects, (N, N), axis=(1, 2))
    return windows[index[:, None], coords[..., 0], coords[..., 1]]


def _mean_patch_max(amplitudes: np.ndarray, coords: np.ndarray, index: np.ndarray, N: int) -> float:
    """Mean over all patches (every channel) of the patch maximum; separable sliding max."""
    row_max = sliding_window_view(amplitudes, N, axis=2).max(axis=-1)
    window_max = sliding_window_view(row_max, N, axis=1).max(axis=-1)
    return float(window_max[index[:, None], coords[..., 0], coords[..., 1]].mean(dtype=np.float64))


def _complex_objects(amplitudes: np.ndarray, norm: float, phase: bool) -> np.ndarray:
    objects = (amplitudes / np.float32(norm)).astype(np.complex64)
    if phase:
        objects *= np.exp(1j * object_phase(amplitudes)).astype(np.complex64)
    return objects


def _far_field_intensity(patches: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """``fftshift(|FFT2(Y * P)|²) / N²`` of ``(m, C, N, N)`` complex64 patches, float32."""
    spectrum = scipy.fft.fft2(patches * probe, norm="ortho", overwrite_x=True)
    return np.fft.fftshift(spectrum.real**2 + spectrum.imag**2, axes=(-2, -1))


def _intensity(
    objects: np.ndarray, coords: np.ndarray, index: np.ndarray, probe: np.ndarray
) -> np.ndarray:
    """Unscaled intensity ``I / S²`` of every pattern, ``(n, N, N, C)`` float32."""
    n, C = coords.shape[:2]
    N = probe.shape[0]
    out = np.empty((n, N, N, C), dtype=np.float32)
    for rows in _chunks(n, C):
        patches = _gather(objects, coords[rows], index[rows], N)
        out[rows] = np.moveaxis(_far_field_intensity(patches, probe), 1, -1)
    return out


def _measure_in_place(
    intensity: np.ndarray, intensity_scale: float, rng: np.random.Generator | None
) -> None:
    """Overwrite the unscaled intensity ``F = I / S²``, ``(n, N, N, C)`` float32, with X.

    ``X = sqrt(Poisson(S² F)) / S``, or ``sqrt(F)`` when ``rng`` is None; chunked to bound memory.
    """
    for rows in _chunks(intensity.shape[0], intensity.shape[3]):
        F = intensity[rows]
        if rng is None:
            np.sqrt(F, out=F)
        else:
            counts = rng.poisson(F.astype(np.float64) * intensity_scale**2)
            F[...] = np.sqrt(counts) / intensity_scale
