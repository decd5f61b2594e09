"""Speed options that leave an arm's meaning alone (docs/long-runs.md, "The GPU fast path").

Each option changes how the numbers are computed, not what is computed, so it is not part of the
arm (nor of its hash); it is recorded in the run's ``config.json`` (``fast_path``), and its
effect on the numbers is held to the gate's tolerances (``tests/test_fast.py``).

- ``fused``: the optimiser's fused kernel (``torch.optim.Adam(fused=True)``, also AdamW and
  SGD): one kernel for the whole update instead of a few per parameter group.
- ``tf32``: TF32 matrix multiplications and convolutions on CUDA (Ampere and newer); nothing on
  the CPU.

``torch.compile`` is not offered yet: inductor (torch 2.13) fails on the backward of the
spectral layers (a strided complex tensor viewed as real).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch

FAST_OPTIONS = ("fused", "tf32")


@dataclass(frozen=True)
class FastPath:
    """Which speed options a run uses (all off: the eager path)."""

    fused: bool = False
    tf32: bool = False

    @classmethod
    def parse(cls, text: str | None, field: str = "--sk-fast") -> FastPath:
        """``"fused,tf32"`` (any order; empty or ``None``: none); ``ValueError`` naming
        ``field`` and the allowed options."""
        if not text:
            return cls()
        names = [n.strip() for n in str(text).split(",") if n.strip()]
        unknown = [n for n in names if n not in FAST_OPTIONS]
        if unknown or not names:
            raise ValueError(
                f"{field}: got {text!r}; allowed: a comma-separated list of {FAST_OPTIONS}"
            )
        return cls(**dict.fromkeys(names, True))

    def describe(self) -> dict[str, Any]:
        """For ``config.json``: each option and whether it is on."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def label(self) -> str:
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return "+".join(on) if on else "eager"

    @contextlib.contextmanager
    def applied(self, device: torch.device) -> Iterator[None]:
        """The process-wide settings the options need, restored afterwards."""
        if not (self.tf32 and device.type == "cuda"):
            yield
            return
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
