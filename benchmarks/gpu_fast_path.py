"""ms/step of the eager path against each fast-path option, side by side (run by hand, on a GPU).

For the grid-lines 4-block control and the 8-block deep control at ``--scale`` (default full),
trains ``--steps`` steps after ``--warmup`` steps with each option set (eager, fused, tf32,
fused+tf32) through the engine's own loop (telemetry, spike detection and checkpoints off, as in
``gpu_stage_b.py``'s sync count), synchronising only around the timed stretch, and prints a table
of ms/step and the speed-up over eager. Try it on the CPU first:

    python benchmarks/gpu_fast_path.py --scale smoke --device cpu --steps 4 --warmup 1
    python benchmarks/gpu_fast_path.py --json fast_path.json        # on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from stabilitykit.arm import apply_scale
from stabilitykit.cache import default_cache_dir
from stabilitykit.run import seeds, setup_for
from stabilitykit.train.clipping import Clipper
from stabilitykit.train.fast import FastPath
from stabilitykit.train.loop import train
from stabilitykit.workloads.gridlines.study import CONTROL, DEEP_CONTROL

VARIANTS = ("", "fused", "tf32", "fused,tf32")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_per_step(arm, data, fast: FastPath, steps: int, warmup: int) -> float:
    """Train ``warmup`` then ``steps`` steps of ``arm`` with ``fast``; ms per timed step."""
    device = torch.device(arm.device)
    workload = arm.workload_impl

    def setup_of(n_steps: int):
        torch.manual_seed(seeds(arm)["model_init"])
        model = workload.build_model(data, arm.architecture, **arm.model_kwargs()).to(device)
        setup = setup_for(
            arm.replace(epochs=1), data, model, Clipper(arm.clip, arm.clip_value), device, fast
        )
        part = tuple(t[: n_steps * arm.batch_size] for t in setup.tensors.train)
        tensors = dataclasses.replace(setup.tensors, train=part)
        return dataclasses.replace(setup, tensors=tensors)

    with fast.applied(device):
        train(setup_of(warmup), lambda rows: None, lambda row: None)  # kernels, allocator
        setup = setup_of(steps)
        _sync(device)
        start = time.perf_counter()
        outcome = train(setup, lambda rows: None, lambda row: None)
        _sync(device)
        elapsed = time.perf_counter() - start
    if outcome.status != "completed":
        raise RuntimeError(f"{arm.id} with {fast.label}: {outcome.status} {outcome.error or ''}")
    return 1000 * elapsed / max(outcome.steps, 1)  # validation included, as in a real epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="full", choices=("smoke", "proxy", "ci", "full"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, scale {args.scale}, {args.steps} timed steps")
    rows = []
    for base in (CONTROL, DEEP_CONTROL):
        arm = apply_scale(base, args.scale).replace(device=args.device)
        data = arm.workload_impl.build_data(arm.data, default_cache_dir())
        eager = None
        for variant in VARIANTS:
            fast = FastPath.parse(variant)
            ms = ms_per_step(arm, data, fast, args.steps, args.warmup)
            eager = ms if eager is None else eager
            rows.append({"arm": arm.id, "option": fast.label, "ms_per_step": ms})
            print(f"  {arm.id:36s} {fast.label:11s} {ms:9.2f} ms/step  x{eager / ms:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
