"""Overhead of the experiment trackers on a run (run by hand; docs/trackers.md).

Trains the same arm at the same scale without trackers, with TensorBoard, with MLflow (a
SQLite store) and with both, alternating (none, tensorboard, mlflow, both, none, ...) to share
any drift in machine load. Prints the median training time (``train_seconds``: the loop, with
the trackers' streaming) and wall time (``run_arm`` whole: also the trackers' start and end)
of each, and their ratios to the run without trackers.

    python benchmarks/bench_trackers.py [--workload gridlines|darcy] [--scale ci] [--epochs 3]
        [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from stabilitykit import Arm, run_arm
from stabilitykit.arm import apply_scale
from stabilitykit.workloads.gridlines.study import CONTROL

ARMS = {"gridlines": CONTROL, "darcy": Arm(name="control", workload="darcy")}
CASES = ("none", "tensorboard", "mlflow", "both")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(ARMS), default="gridlines")
    parser.add_argument("--scale", default="ci")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    arm = apply_scale(ARMS[args.workload], args.scale).replace(epochs=args.epochs)
    train: dict[str, list[float]] = {case: [] for case in CASES}
    wall: dict[str, list[float]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_arm(arm.replace(epochs=1), out_dir=root / "warm", progress=False)  # data, kernels
        for repeat in range(args.repeats):
            for case in CASES:
                trackers = {
                    "tensorboard": root / "tb" if case in ("tensorboard", "both") else None,
                    "mlflow": root / "mlflow" if case in ("mlflow", "both") else None,
                }
                start = time.perf_counter()
                result = run_arm(
                    arm,
                    out_dir=root / "out",
                    progress=False,
                    threads=args.threads,
                    tags={"stage": "stage_bench", "session": f"r{repeat}"},
                    **trackers,
                )
                wall[case].append(time.perf_counter() - start)
                train[case].append(result.stats["train_seconds"])
                if any(v != "ok" for v in (result.stats.get("trackers") or {}).values()):
                    raise SystemExit(f"{case}: {result.stats['trackers']}")
    steps = result.stats["steps"]
    print(f"{arm.id} at {args.scale}, {args.epochs} epochs ({steps} steps), {args.repeats} repeats")
    base_train, base_wall = statistics.median(train["none"]), statistics.median(wall["none"])
    for case in CASES:
        t, w = statistics.median(train[case]), statistics.median(wall[case])
        print(
            f"{case:12s} train {t:8.2f} s ({t / base_train:.3f}x)   "
            f"run_arm {w:8.2f} s ({w / base_wall:.3f}x)"
        )


if __name__ == "__main__":
    main()
