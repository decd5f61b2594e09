"""Full-scale Stage B deep control on a GPU, shortened to a few epochs (run by hand).

Checks the SPEC's GPU target: the data lives on the device and training makes no host-device
sync beyond what telemetry needs (one per ``flush_every`` steps). Prints the step time, the
number of synchronising calls CUDA's sync-debug mode reports over a stretch of steps, peak
memory, and the run's verdict and metrics; writes them as JSON to ``--json``.

    python benchmarks/gpu_stage_b.py --epochs 2 --json gpu_stage_b.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings

import torch

from stabilitykit.arm import apply_scale
from stabilitykit.run import run_arm, setup_for
from stabilitykit.train.clipping import Clipper
from stabilitykit.train.loop import train
from stabilitykit.workloads.gridlines.cache import load_or_build
from stabilitykit.workloads.gridlines.study import DEEP_CONTROL


def count_syncs(arm, cache: str, steps: int) -> dict:
    """Train ``steps`` steps under CUDA sync-debug mode and count the synchronising calls."""
    from stabilitykit.models.registry import build_model

    data = load_or_build(arm.data, cache)
    torch.manual_seed(arm.seed)
    model = build_model(
        arm.architecture, in_channels=arm.data.channels, grid=arm.data.N, **arm.model_kwargs()
    ).to(arm.device)
    batches = steps * arm.batch_size
    short = arm.replace(epochs=1)
    clipper = Clipper(arm.clip, arm.clip_value)
    setup = setup_for(short, data, model, clipper, torch.device(arm.device))
    train_part = tuple(t[:batches] for t in setup.tensors.train)
    setup = dataclasses.replace(setup, tensors=dataclasses.replace(setup.tensors, train=train_part))
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        outcome = train(setup, lambda rows: None, lambda row: None)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    return {
        "steps": outcome.steps,
        "flush_every": setup.flush_every,
        "sync_calls": len(syncs),
        "sync_kinds": sorted(set(syncs))[:5],
        "seconds_incl_validation": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sync-steps", type=int, default=256)
    parser.add_argument("--cache", default="/tmp/sk-cache")
    parser.add_argument("--out", default="/tmp/sk-gpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    arm = apply_scale(DEEP_CONTROL, "full").replace(device="cuda", epochs=args.epochs)
    t0 = time.perf_counter()
    load_or_build(arm.data, args.cache)
    build = time.perf_counter() - t0
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    report["data_build_seconds"] = build
    report["syncs"] = count_syncs(arm, args.cache, args.sync_steps)
    torch.cuda.reset_peak_memory_stats()
    result = run_arm(arm, out_dir=args.out, cache_dir=args.cache)
    steps = result.stats["steps"]
    report.update(
        arm=arm.id,
        verdict=result.verdict.explain(),
        parameters=result.stats["parameters"],
        steps=steps,
        train_seconds=result.stats["train_seconds"],
        ms_per_step=1000 * result.stats["train_seconds"] / max(steps, 1),
        peak_memory_mib=torch.cuda.max_memory_allocated() / 2**20,
        history=result.history,
        metrics=result.metrics,
        grad_norm={k: v for k, v in result.stats.items() if k.startswith("grad_norm_preclip")},
    )
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
