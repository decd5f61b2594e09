"""Cost of portable numerics: ms per training step, native against portable (run by hand).

Each measurement is a fresh process (the kernel libraries choose their kernels once per
process) that trains the ci-scale control of a built-in workload for ``--epochs`` epochs on one
thread; the time per step comes from the run's own record (``train_seconds`` over its steps).
Modes alternate (native, portable, native, ...) so that drift in machine load is shared; the
medians and their ratio are printed.

    python benchmarks/bench_numerics.py [--workloads gridlines darcy] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import json, sys
from stabilitykit.numerics import pin
pin(sys.argv[1])
from stabilitykit import apply_scale, run_arm
from stabilitykit.record.run_record import read_record
study = {"gridlines": "stabilitykit.workloads.gridlines.study",
         "darcy": "stabilitykit.workloads.darcy.study"}[sys.argv[2]]
import importlib
arm = apply_scale(importlib.import_module(study).CONTROL, "ci").replace(epochs=int(sys.argv[3]))
result = run_arm(arm, out_dir=sys.argv[4], progress=False, threads=1)
steps = len(read_record(result.run_dir).steps)
print(json.dumps({"seconds": result.stats["train_seconds"], "steps": steps,
                  "mode": read_record(result.run_dir).config["numerics"]["mode"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["gridlines", "darcy"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for workload in args.workloads:
        times: dict[str, list[float]] = {"native": [], "portable": []}
        for _ in range(args.repeats):
            for mode in times:
                with tempfile.TemporaryDirectory() as out:
                    done = subprocess.run(
                        [sys.executable, "-c", CHILD, mode, workload, str(args.epochs), out],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                row = json.loads(done.stdout.strip().splitlines()[-1])
                assert row["mode"] == mode, row
                times[mode].append(1000 * row["seconds"] / row["steps"])
        native, portable = (statistics.median(times[m]) for m in ("native", "portable"))
        print(
            f"{workload} ci control, {args.epochs} epochs, {args.repeats} repeats: "
            f"native {native:.1f} ms/step, portable {portable:.1f} ms/step, "
            f"ratio {portable / native:.3f} (all: {json.dumps(times)})"
        )


if __name__ == "__main__":
    main()
