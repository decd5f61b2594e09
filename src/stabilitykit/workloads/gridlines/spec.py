"""The grid-lines data-set specification (docs/gridlines.md §1): one frozen, validated value."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

IDEAL_DISK = "ideal_disk"
GROUP_OFFSET = 4  # px between the neighbouring patches of a gridsize-2 group (docs/gridlines.md §1)

#: Evaluation (``workload.predict_image``) trims this many px from each side of the stitched test
#: image (``stitch.trim``'s default) ...
EVAL_TRIM = 2
#: ... and SSIM (``skimage.metrics.structural_similarity``, default ``win_size``) needs at least
#: this many px per side of what is left.
SSIM_WINDOW = 7

#: Largest ``nphotons``. The largest Poisson mean the simulation draws is ``nphotons`` times the
#: brightest pixel's intensity over the mean total of a train pattern: that pixel's share of its
#: own pattern (at most 1; 0.09-0.16 for the ideal disk), times that pattern's total over the
#: train mean (1-1.4 at the study's 400 lines, up to ~10 for a few sparse lines). Measured ratios
#: stay below 1 (0.14-0.16 at 400 lines, 0.9 with 5 lines at N 64). numpy's
#: ``Generator.poisson`` refuses a mean above ~9.2e18 (``lam value too large``), so 1e15 leaves a
#: margin of ~9,000 for unusual probes and objects; it is a million times the study's 1e9.
NPHOTONS_MAX = 1e15


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"GridLinesSpec.{name}: expected an int >= {minimum}, got {value!r} "
            f"({type(value).__name__})"
        )
    if value < minimum:
        raise ValueError(f"GridLinesSpec.{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class GridLinesSpec:
    """Everything that determines a grid-lines data set; equal specs give bit-identical data.

    Args:
        N: patch side, px (even, <= ``object_size``).
        gridsize: 1, or 2 for groups of 4 neighbouring patches as channels (C = 4).
        object_size: side of each object, px (``size`` in docs/gridlines.md §1; canvas
            ``2 * size``).
            Large enough that the stitched test image, ``m * test_stride`` px with ``m`` scan
            positions per axis (:func:`stitched_test_side`), keeps ``SSIM_WINDOW`` = 7 px after
            the ``EVAL_TRIM`` = 2 px trim per side: ``m * test_stride >= 11``.
        nimgs_train: number of training objects.
        nimgs_test: number of test objects (drawn from a different seed than train).
        nphotons: mean total count per diffraction pattern (finite, > 0, <= ``NPHOTONS_MAX``
            = 1e15: numpy's Poisson sampler refuses means above ~9.2e18, see ``NPHOTONS_MAX``).
        train_stride: scan stride of the train split, px (``outer_offset_train / 2``).
        test_stride: scan stride of the test split, px (``outer_offset_test / 2``); at most
            ``N``: evaluation tiles the central ``test_stride x test_stride`` block of each
            test patch.
        n_lines: line segments drawn on each canvas.
        phase: apply the object phase; when False the phase is 0 and phase metrics are vacuous.
        probe: ``"ideal_disk"`` or the path of an ``.npz`` holding one complex ``N x N`` array.
        seed: root seed (int >= 0) of every random stream of the simulation.
    """

    N: int = 64
    gridsize: int = 1
    object_size: int = 392
    nimgs_train: int = 2
    nimgs_test: int = 2
    nphotons: float = 1e9
    train_stride: int = 4
    test_stride: int = 10
    n_lines: int = 400
    phase: bool = True
    probe: str = IDEAL_DISK
    seed: int = 20260128

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("N", _check_int("N", self.N, 2))
        if self.N % 2:
            raise ValueError(f"GridLinesSpec.N: expected an even int, got {self.N}")
        put("gridsize", _check_int("gridsize", self.gridsize, 1))
        if self.gridsize not in (1, 2):
            raise ValueError(f"GridLinesSpec.gridsize: expected 1 or 2, got {self.gridsize}")
        put("object_size", _check_int("object_size", self.object_size, 1))
        reach = self.N + (GROUP_OFFSET if self.gridsize == 2 else 0)
        if self.object_size < reach:
            raise ValueError(
                f"GridLinesSpec.object_size: expected >= {reach} (N = {self.N}, "
                f"gridsize = {self.gridsize}), got {self.object_size}"
            )
        for name in ("nimgs_train", "nimgs_test", "train_stride", "test_stride", "n_lines"):
            put(name, _check_int(name, getattr(self, name), 1))
        put("seed", _check_int("seed", self.seed, 0))
        self._check_evaluable(reach)

        nphotons = self.nphotons
        if isinstance(nphotons, bool) or not isinstance(nphotons, numbers.Real):
            raise ValueError(
                f"GridLinesSpec.nphotons: expected a finite number > 0, got {nphotons!r}"
            )
        if not (math.isfinite(nphotons) and nphotons > 0):
            raise ValueError(
                f"GridLinesSpec.nphotons: expected a finite number > 0, got {nphotons}"
            )
        if nphotons > NPHOTONS_MAX:
            raise ValueError(
                f"GridLinesSpec.nphotons: expected a number in (0, {NPHOTONS_MAX:g}] (larger "
                f"counts overflow numpy's Poisson sampler), got {nphotons:g}"
            )
        put("nphotons", float(nphotons))

        if not isinstance(self.phase, bool):
            raise ValueError(f"GridLinesSpec.phase: expected True or False, got {self.phase!r}")

        probe = self.probe
        if isinstance(probe, os.PathLike):
            probe = os.fspath(probe)
        if not isinstance(probe, str):
            raise ValueError(
                f"GridLinesSpec.probe: expected {IDEAL_DISK!r} or the path of an .npz file, "
                f"got {probe!r}"
            )
        if probe != IDEAL_DISK and not (probe.endswith(".npz") and Path(probe).is_file()):
            raise ValueError(
                f"GridLinesSpec.probe: expected {IDEAL_DISK!r} or the path of an existing .npz "
                f"file, got {probe!r}"
            )
        put("probe", probe)

    def _check_evaluable(self, reach: int) -> None:
        """The test split can be stitched and scored: ``test_stride <= N``, and the stitched
        image keeps ``SSIM_WINDOW`` px per side after the ``EVAL_TRIM`` px trim."""
        if self.test_stride > self.N:
            raise ValueError(
                f"GridLinesSpec.test_stride: expected an int in [1, N = {self.N}] (evaluation "
                f"tiles the central test_stride x test_stride block of each test patch), got "
                f"{self.test_stride}"
            )
        side = stitched_test_side(self.N, self.gridsize, self.object_size, self.test_stride)
        need = SSIM_WINDOW + 2 * EVAL_TRIM
        if side < need:
            positions = -(-need // self.test_stride)  # scan positions per axis needed
            minimum = reach + (positions - 1) * self.test_stride
            raise ValueError(
                f"GridLinesSpec.object_size: expected >= {minimum} for N = {self.N}, gridsize = "
                f"{self.gridsize}, test_stride = {self.test_stride}, got {self.object_size}: the "
                f"stitched test image would be {side} px, {side - 2 * EVAL_TRIM} px after the "
                f"{EVAL_TRIM} px trim, and SSIM needs {SSIM_WINDOW} x {SSIM_WINDOW}"
            )

    @property
    def channels(self) -> int:
        """C, patches per sample: ``gridsize**2``."""
        return self.gridsize**2

    def replace(self, **changes: Any) -> GridLinesSpec:
        """A validated copy with ``changes`` applied; unknown field names raise ValueError."""
        _reject_unknown(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-safe dict (ints, float, bool, str)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridLinesSpec:
        """Inverse of :meth:`to_dict`; missing keys take defaults, unknown keys raise ValueError."""
        _reject_unknown(d)
        return cls(**d)


def stitched_test_side(N: int, gridsize: int, object_size: int, test_stride: int) -> int:
    """Side, px, of the stitched test image before the trim: ``m * test_stride`` with
    ``m = (object_size - reach) // test_stride + 1`` scan positions per axis (``reach`` is ``N``,
    or ``N + 4`` for gridsize 2; see ``simulate.scan_coords`` and ``stitch.stitch_patches``)."""
    reach = N + (GROUP_OFFSET if gridsize == 2 else 0)
    return ((object_size - reach) // test_stride + 1) * test_stride


def _reject_unknown(d: dict[str, Any]) -> None:
    allowed = [f.name for f in fields(GridLinesSpec)]
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ValueError(f"GridLinesSpec: unknown field(s) {unknown}; allowed: {allowed}")
