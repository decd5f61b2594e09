"""Size and write time of an epoch checkpoint for the full-scale deep control (run by hand).

Builds the Stage B deep control (8 blocks) at ``--scale`` (default full), takes one Adam step on
a random batch so the optimiser holds both moments, and writes the state ``run_arm`` writes at
the end of an epoch (model, optimiser, scheduler, generator, RNG states, history), ``--repeats``
times, atomically, as the run does. Prints the size, the median write time, the read-back time
and the time a run on an accelerator waits instead (the copy to host memory; the write itself
goes on in a thread, ``CheckpointWriter(background=True)``).

    python benchmarks/bench_checkpoint.py [--scale full] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from stabilitykit.arm import apply_scale
from stabilitykit.models.registry import build_model
from stabilitykit.train.checkpoint import _to_cpu, load_checkpoint, rng_state, save_checkpoint
from stabilitykit.train.loop import build_optimizer
from stabilitykit.train.schedulers import build_scheduler
from stabilitykit.workloads.gridlines.study import DEEP_CONTROL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="full", choices=("smoke", "proxy", "ci", "full"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    arm = apply_scale(DEEP_CONTROL, args.scale)
    torch.manual_seed(arm.seed)
    model = build_model(
        arm.architecture, in_channels=arm.data.channels, grid=arm.data.N, **arm.model_kwargs()
    )
    optimizer = build_optimizer(arm.optimizer, model.parameters(), arm.lr, arm.betas, 0.0)
    scheduler = build_scheduler(optimizer, arm.scheduler, epochs=arm.epochs)
    x = torch.rand(arm.batch_size, arm.data.channels, arm.data.N, arm.data.N)
    model(x).abs().mean().backward()
    optimizer.step()
    state = {
        "arm_hash": arm.hash,
        "code_fingerprint": "bench",
        "epoch": 1,
        "step": 1,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": torch.Generator().get_state(),
        "rng": rng_state(torch.device("cpu")),
        "history": [{"epoch": 0, "train_loss": None, "val_loss": 1.0, "lr": arm.lr}],
        "telemetry": {},
    }
    parameters = sum(p.numel() for p in model.parameters())
    writes, reads, copies = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "epoch-0001.pt"
        for _ in range(args.repeats):
            start = time.perf_counter()
            size = save_checkpoint(path, state)
            writes.append(time.perf_counter() - start)
            start = time.perf_counter()
            load_checkpoint(path)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            _to_cpu(state)
            copies.append(time.perf_counter() - start)
    write, read, copy = (statistics.median(t) * 1000 for t in (writes, reads, copies))
    print(
        f"{arm.id} at {args.scale}: {parameters:,} parameters; checkpoint {size / 2**20:.1f} MiB; "
        f"write {write:.0f} ms, read {read:.0f} ms, copy for a background write {copy:.0f} ms "
        f"(median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
