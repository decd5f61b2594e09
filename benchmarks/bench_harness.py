"""Overhead of the stabilitykit training loop over a bare PyTorch loop (run by hand).

Both loops train the same model on the same data for the same steps, log the global grad norm
before and after clipping every step, and compute the validation loss every epoch. The harness
also streams every step to ``steps.jsonl`` and writes ``history.json``. "harness + forensics"
adds what ``run_arm`` runs by default: per-layer gradient norms and update ratios every
``--layer-every`` steps (``layers.jsonl``), online spike detection (the default criteria's
rules) and an atomic checkpoint at the end of every epoch. Runs alternate (bare, harness,
harness + forensics, bare, ...) to share any drift in machine load; ratios of medians are printed.

    python benchmarks/bench_harness.py [--scale ci] [--epochs 4] [--repeats 5] [--threads 1]
        [--layer-every 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from stabilitykit.arm import apply_scale
from stabilitykit.judge.criteria import DEFAULT_CRITERIA
from stabilitykit.models.registry import build_model
from stabilitykit.record.run_record import CHECKPOINTS, RunWriter, new_run_dir
from stabilitykit.run import spike_rules
from stabilitykit.train.checkpoint import checkpoint_name, save_checkpoint
from stabilitykit.train.clipping import Clipper
from stabilitykit.train.layers import LayerTelemetry
from stabilitykit.train.loop import Hooks, TrainSetup, build_optimizer, train
from stabilitykit.workloads.gridlines.cache import default_cache_dir, load_or_build
from stabilitykit.workloads.gridlines.forward import far_field_amplitude
from stabilitykit.workloads.gridlines.losses import mae_loss
from stabilitykit.workloads.gridlines.study import CONTROL


def fresh_model(arm):
    torch.manual_seed(arm.seed)
    return build_model(
        arm.architecture, in_channels=arm.data.channels, grid=arm.data.N, **arm.model_kwargs()
    )


def tensors(data):
    def on(d):
        return torch.as_tensor(d).permute(0, 3, 1, 2).contiguous()

    return on(data.train.diffraction), on(data.test.diffraction), torch.as_tensor(data.probe)


def bare_loop(arm, x_train, x_test, probe) -> float:
    model = fresh_model(arm)
    opt = torch.optim.Adam(model.parameters(), lr=arm.lr, betas=arm.betas)
    gen = torch.Generator().manual_seed(arm.seed + 1)
    log = []
    start = time.perf_counter()
    for _ in range(arm.epochs):
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(x_train), arm.batch_size):
            x = x_train[order[i : i + arm.batch_size]]
            opt.zero_grad(set_to_none=True)
            loss = mae_loss(far_field_amplitude(model(x), probe), x)
            loss.backward()
            pre = torch.nn.utils.clip_grad_norm_(model.parameters(), arm.clip_value)
            post = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
            opt.step()
            log.append((loss.item(), pre.item(), post.item()))
        with torch.no_grad():
            model.eval()
            val = sum(
                float(
                    mae_loss(
                        far_field_amplitude(model(x_test[j : j + 128]), probe), x_test[j : j + 128]
                    )
                )
                * len(x_test[j : j + 128])
                for j in range(0, len(x_test), 128)
            )
            model.train()
        log.append((val,))
    return time.perf_counter() - start


def harness_loop(arm, data, out, layer_every: int | None = None) -> float:
    """The engine's loop on the workload's tensors and loss, writing steps and history; with
    ``layer_every``, also per-layer telemetry, spike detection and epoch checkpoints."""
    model = fresh_model(arm)
    writer = RunWriter(new_run_dir(out, "bench"))
    history = []
    workload, cpu = arm.workload_impl, torch.device("cpu")
    setup = TrainSetup(
        model=model,
        tensors=workload.tensors(data, cpu),
        loss_fn=workload.loss_fn(arm.loss, data, cpu),
        optimizer=build_optimizer("adam", model.parameters(), arm.lr, arm.betas, 0.0),
        clipper=Clipper("norm", arm.clip_value),
        epochs=arm.epochs,
        batch_size=arm.batch_size,
        grad_norm_every=1,
        shuffle_seed=arm.seed + 1,
    )
    hooks = None
    if layer_every is not None:
        telemetry = LayerTelemetry(
            model,
            layer_every,
            spike_rules(DEFAULT_CRITERIA),
            lambda rows: writer.append_layers(telemetry.header(), rows),
        )

        def checkpoint(state):
            save_checkpoint(writer.path / CHECKPOINTS / checkpoint_name(state["epoch"]), state)

        hooks = Hooks(telemetry=telemetry, on_checkpoint=checkpoint)
    start = time.perf_counter()
    outcome = train(
        setup,
        writer.append_steps,
        lambda row: (history.append(row), writer.write_history(history)),
        None,
        hooks,
    )
    elapsed = time.perf_counter() - start
    writer.close()
    assert outcome.status == "completed", outcome
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="ci", choices=("smoke", "proxy", "ci", "full"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layer-every", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arm = apply_scale(CONTROL, args.scale).replace(epochs=args.epochs)
    data = load_or_build(arm.data, default_cache_dir())
    x_train, x_test, probe = tensors(data)
    steps = args.epochs * -(-len(x_train) // arm.batch_size)
    print(f"{arm.id} at {args.scale}: {steps} steps, {args.threads} thread(s)")
    bare, harness, forensics = [], [], []
    with tempfile.TemporaryDirectory() as out:
        harness_loop(arm, data, out, args.layer_every)  # warm-up (first-call costs)
        for r in range(args.repeats):
            bare.append(bare_loop(arm, x_train, x_test, probe))
            harness.append(harness_loop(arm, data, out))
            forensics.append(harness_loop(arm, data, out, args.layer_every))
            print(
                f"  repeat {r + 1}: bare {bare[-1]:.2f} s, harness {harness[-1]:.2f} s, "
                f"harness + forensics {forensics[-1]:.2f} s"
            )
    b = statistics.median(bare)
    for label, times in (("harness", harness), ("harness + forensics", forensics)):
        h = statistics.median(times)
        print(
            f"median bare {b:.3f} s, {label} {h:.3f} s, ratio {h / b:.4f} "
            f"({(h / b - 1) * 100:+.2f} %)"
        )


if __name__ == "__main__":
    main()
