"""Forward + backward timings of the generators and of the spectral layer (run by hand).

    python benchmarks/bench_models.py
    PYTHONPATH=/tmp/neuralop python benchmarks/bench_models.py   # with neuraloperator

Prints, on CPU unless ``--device`` says otherwise:
1. ``hybrid`` at 4 and 8 blocks, N = 64, batch 16: parameter count and median seconds per batch;
2. our ``SpectralConv2d`` against neuraloperator's ``SpectralConv`` at equal channels and retained
   modes, timed side by side (interleaved) in the same process, with the ratio.

neuraloperator counts ``n_modes`` as all kept modes of a dimension and keeps ``n // 2 + 1`` of the
last one, so our ``(modes_x, modes_y)`` per sign equals its ``n_modes=(2 * modes_x,
2 * (modes_y - 1))``; the script checks that both keep the same number of modes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from stabilitykit.models import SpectralConv2d, build_model, count_parameters


def fwd_bwd(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of ``mean |model(x)|^2``, gradients cleared first; waits for the
    device to finish, so a host clock around it measures the work."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).abs().square().mean().backward()
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    return step


def time_side_by_side(
    steps: dict[str, Callable[[], None]], warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds per call of each step; the steps alternate so that load hits all alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_hybrid(args: argparse.Namespace) -> None:
    x = torch.rand(args.batch, 1, args.grid, args.grid, device=args.device)
    steps, params = {}, {}
    for blocks in args.blocks:
        torch.manual_seed(0)
        model = build_model("hybrid", in_channels=1, grid=args.grid, fno_blocks=blocks)
        model.to(args.device)
        name = f"hybrid fno_blocks={blocks}"
        steps[name] = fwd_bwd(model, x)
        params[name] = count_parameters(model)
    print(f"\nhybrid, N={args.grid}, batch {args.batch}, forward+backward")
    medians = time_side_by_side(steps, args.warmup, args.repeats)
    for name, seconds in medians.items():
        print(f"  {name:<22} {params[name]:>12,d} parameters  {seconds * 1e3:9.1f} ms/batch")


def bench_spectral(args: argparse.Namespace) -> None:
    try:
        from neuralop.layers.spectral_convolution import SpectralConv
    except ImportError as error:
        print(f"\nneuraloperator not importable ({error}); spectral comparison skipped.")
        print("  install: pip install --target /tmp/neuralop --no-deps neuraloperator tensorly")
        print("           tensorly-torch opt-einsum; then set PYTHONPATH=/tmp/neuralop")
        return
    import neuralop

    ch, mx, my = args.channels, args.modes, args.modes
    torch.manual_seed(0)
    ours = SpectralConv2d(ch, ch, mx, my).to(args.device)
    theirs = SpectralConv(ch, ch, n_modes=(2 * mx, 2 * (my - 1)), bias=False).to(args.device)
    kept = theirs.weight.shape[-2] * theirs.weight.shape[-1]
    if kept != 2 * mx * my:
        raise RuntimeError(f"mode counts differ: ours {2 * mx * my}, neuraloperator {kept}")
    x = torch.randn(args.batch, ch, args.grid, args.grid, device=args.device)
    medians = time_side_by_side(
        {"ours": fwd_bwd(ours, x), "neuralop": fwd_bwd(theirs, x)}, args.warmup, args.repeats
    )
    print(
        f"\nspectral layer {ch}->{ch}, modes ({mx}, {my}) per sign = {kept} kept modes, "
        f"N={args.grid}, batch {args.batch}, forward+backward"
    )
    print(f"  stabilitykit.SpectralConv2d             {medians['ours'] * 1e3:9.2f} ms")
    print(
        f"  neuralop {neuralop.__version__} SpectralConv (dense)  "
        f"{medians['neuralop'] * 1e3:9.2f} ms"
    )
    print(f"  ratio ours / neuralop: {medians['ours'] / medians['neuralop']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--modes", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-hybrid", action="store_true")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    if not args.skip_hybrid:
        bench_hybrid(args)
    bench_spectral(args)


if __name__ == "__main__":
    main()
