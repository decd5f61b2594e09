"""Full-scale Darcy data set (FNO benchmark, s = 85, 1000 + 100 samples): build time, per-solve
time, the first cache write and a cached load (targets: build <= 30 s, cached load <= 0.2 s), and
summary statistics of the arrays.

Run by hand: ``python benchmarks/bench_darcy_data.py``. Not a pytest module. Wall times depend on
what else runs on the machine; CPU times are printed beside them.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from stabilitykit.workloads.darcy.simulate import dataset_hash, generate, sample_grf, solve_darcy
from stabilitykit.workloads.darcy.spec import DarcySpec
from stabilitykit.workloads.darcy.workload import DarcyWorkload

N_TIMED_SOLVES = 200


def _timed(fn, *args):
    start, cpu_start = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
    spec = DarcySpec()
    n = spec.n_train + spec.n_test
    data, build_s, build_cpu_s = _timed(generate, spec)

    rng = np.random.default_rng(0)
    _, grf_s, _ = _timed(sample_grf, n, spec.resolution, rng, spec.tau, spec.alpha)
    coefs = data["a_train"][:N_TIMED_SOLVES].astype(np.float64)
    _, solve_s, solve_cpu_s = _timed(lambda: [solve_darcy(a) for a in coefs])

    print(f"spec: {spec}")
    print(f"data hash: {dataset_hash(spec)}")
    print(f"generate (full scale, {n} samples): {build_s:6.2f} s (CPU {build_cpu_s:.2f} s)")
    print(f"  per sample:                      {1e3 * build_s / n:6.2f} ms")
    print(f"  sample_grf, all {n} fields:      {grf_s:6.2f} s")
    print(
        f"solve_darcy, s = {spec.resolution}:              {1e3 * solve_s / len(coefs):6.2f} ms "
        f"(CPU {1e3 * solve_cpu_s / len(coefs):.2f} ms; mean of {len(coefs)})"
    )
    workload = DarcyWorkload()
    with tempfile.TemporaryDirectory() as cache:
        _, first_s, _ = _timed(workload.build_data, spec, Path(cache))
        loaded, load_s, _ = _timed(workload.build_data, spec, Path(cache))
    assert np.array_equal(loaded.y_train[:, 0], data["u_train"])
    print(f"through the cache: first build + write {first_s:6.2f} s, cached load {load_s:6.3f} s")
    for split in ("train", "test"):
        a, u = data[f"a_{split}"], data[f"u_{split}"]
        print(
            f"{split:5s}: u mean {u.mean(dtype=np.float64):.6f} std {u.std(dtype=np.float64):.6f} "
            f"max {u.max():.6f}; fraction a == {spec.a_high:g}: "
            f"{np.mean(a == spec.a_high):.4f}"
        )


if __name__ == "__main__":
    main()
