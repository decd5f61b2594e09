"""Full-scale grid-lines data set: build time, first cache write, cached load, photon budget.

Run by hand: ``python benchmarks/bench_data.py``. Not a pytest module. Wall times depend on what
else runs on the machine; the CPU time of the build is printed beside its wall time.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from stabilitykit.workloads.gridlines.cache import load_or_build
from stabilitykit.workloads.gridlines.simulate import build_dataset
from stabilitykit.workloads.gridlines.spec import GridLinesSpec


def _mean_counts(diffraction: np.ndarray, intensity_scale: float) -> float:
    energy = np.square(diffraction).sum(axis=(1, 2), dtype=np.float64)
    return float(energy.mean() * intensity_scale**2)


def main() -> None:
    spec = GridLinesSpec()
    start, cpu_start = time.perf_counter(), time.process_time()
    data = build_dataset(spec)
    build_s, build_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start

    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        load_or_build(spec, cache_dir)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        cached = load_or_build(spec, cache_dir)
        load_s = time.perf_counter() - start
    assert np.array_equal(cached.train.diffraction, data.train.diffraction)

    print(f"spec: {spec}")
    print(f"data hash: {data.data_hash}")
    print(f"build_dataset (full scale):        {build_s:6.2f} s (CPU {build_cpu_s:.2f} s)")
    print(f"load_or_build, cold (build+write): {first_s:6.2f} s")
    print(f"load_or_build, cached load:        {load_s:6.2f} s")
    print(f"patches: train {len(data.train.diffraction)}, test {len(data.test.diffraction)}")
    print(f"norm {data.norm:.4f}, intensity_scale {data.intensity_scale:.2f}")
    for name, split in (("train", data.train), ("test", data.test)):
        ratio = _mean_counts(split.diffraction, data.intensity_scale) / spec.nphotons
        print(f"mean counts / nphotons, {name}: {ratio:.6f}")


if __name__ == "__main__":
    main()
