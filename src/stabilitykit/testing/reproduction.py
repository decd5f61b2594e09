"""The reproduction check: short arms whose numbers are committed at full precision.

Under portable numerics (:mod:`stabilitykit.numerics`) an arm, seed, thread count and torch build
give the same bits on any x86-64 machine with AVX2. ``tests/test_reproduction.py`` trains the
arms below and compares their final losses, metrics and a hash of their final weights with the
committed values, exactly: any machine that runs the test suite proves or disproves it. The arms
cover both built-in workloads (FFTs and complex matmuls through MKL, convolutions through oneDNN,
ATen's vectorised kernels) and a workload written the way a user writes one.

Regenerate the committed values (after a change that is meant to move numbers)::

    python -m stabilitykit.testing.reproduction tests/test_reproduction.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stabilitykit.arm import Arm, apply_scale
from stabilitykit.workloads.supervised import SupervisedWorkload


class TinyOperator(SupervisedWorkload):
    """A user-style workload: y = a smoothed, squared x, learned by a small conv net with one
    Fourier layer (so that FFT, conv, matmul and elementwise kernels all run)."""

    name = "reproduction_tiny_operator"

    def arrays(self, spec: Any) -> dict[str, np.ndarray]:
        x = np.random.default_rng(7).normal(size=(48, 1, 16, 16)).astype(np.float32)
        kernel = np.fft.rfft2(np.exp(-np.add.outer(np.arange(16) ** 2, np.arange(16) ** 2) / 8))
        y = np.fft.irfft2(np.fft.rfft2(x) * kernel, s=(16, 16)).astype(np.float32) ** 2
        return {"x_train": x[:40], "y_train": y[:40], "x_test": x[40:], "y_test": y[40:]}

    def build_model(self, data: Any, architecture: Any, **kwargs: Any) -> nn.Module:
        return _TinyNet()


class _TinyNet(nn.Module):
    def __init__(self, width: int = 8, modes: int = 4) -> None:
        super().__init__()
        self.lift = nn.Conv2d(1, width, 3, padding=1)
        scale = 1 / width
        self.weights = nn.Parameter(scale * torch.randn(width, width, modes, modes, 2))
        self.mix = nn.Linear(width, width)
        self.project = nn.Conv2d(width, 1, 1)
        self.modes = modes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.lift(x))
        spectrum = torch.fft.rfft2(h)
        m = self.modes
        w = torch.view_as_complex(self.weights)
        low = torch.einsum("bixy,ioxy->boxy", spectrum[:, :, :m, :m], w)
        out = torch.zeros_like(spectrum)
        out[:, :, :m, :m] = low
        h = h + torch.fft.irfft2(out, s=h.shape[-2:])
        h = self.mix(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.project(torch.nn.functional.gelu(h))


def arms() -> dict[str, Arm]:
    """The reproduction arms by name: both built-in workloads' controls at smoke scale, the
    grid-lines study's AGC and LayerScale arms (their clipper and architecture, which CI's gate
    does not train at ci), and the user-style workload."""
    from stabilitykit.workloads.darcy.study import CONTROL as DARCY
    from stabilitykit.workloads.gridlines.study import AGC, STABLE
    from stabilitykit.workloads.gridlines.study import CONTROL as GRIDLINES

    user = Arm(name="tiny_operator", workload=TinyOperator, epochs=3, lr=3e-3, batch_size=8)
    return {
        "gridlines_control": apply_scale(GRIDLINES, "smoke").replace(epochs=3),
        "gridlines_agc": apply_scale(AGC, "smoke").replace(epochs=3),
        "gridlines_stable": apply_scale(STABLE, "smoke").replace(epochs=3),
        "darcy_control": apply_scale(DARCY, "smoke").replace(epochs=3),
        "user_tiny_operator": user,
    }


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 (16 hex) over the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def measure(arm: Arm, out_dir: str | Path, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Train ``arm`` on one thread and return what the check compares: the verdict, every
    epoch's train and val loss, the metrics (floats as ``repr``, all 17 digits) and the weights'
    hash; ``numerics`` tells the mode the run had."""
    from stabilitykit.record.run_record import read_record
    from stabilitykit.run import run_arm

    result = run_arm(arm, out_dir=out_dir, cache_dir=cache_dir, progress=False, threads=1)
    state = torch.load(result.run_dir / "model.pt", weights_only=True)
    config = read_record(result.run_dir).config
    return {
        "verdict": result.verdict.kind.value,
        "train_loss": [repr(row.get("train_loss")) for row in result.history],
        "val_loss": [repr(row.get("val_loss")) for row in result.history],
        "metrics": {k: repr(v) for k, v in sorted(result.metrics.items())},
        "weights": weights_hash(state),
        "numerics": config["numerics"],
    }


def expected_file(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The committed file: the values without the machine-specific numerics block, plus the
    torch version and numerics fingerprint they hold for."""
    first = next(iter(values.values()))["numerics"]
    return {
        "torch": first["torch"],
        "numerics_mode": first["mode"],
        "numerics_fingerprint": first["fingerprint"],
        "arms": {
            name: {k: v for k, v in value.items() if k != "numerics"}
            for name, value in sorted(values.items())
        },
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m stabilitykit.testing.reproduction OUT.json", file=sys.stderr)
        return 2
    from stabilitykit.numerics import PORTABLE, pin

    pin(PORTABLE)
    with tempfile.TemporaryDirectory() as tmp:
        values = {name: measure(arm, tmp) for name, arm in arms().items()}
    Path(argv[0]).write_text(json.dumps(expected_file(values), indent=1, sort_keys=True) + "\n")
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
