"""Per-step telemetry: a buffer that streams rows to the record, and the summary numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

STEP_FIELDS = ("loss", "grad_norm_preclip", "grad_norm_postclip")


class StepBuffer:
    """Collects per-step scalars as device tensors and hands them to ``sink`` every
    ``flush_every`` steps as plain rows, so a device run syncs once per flush, not per step.

    ``flush`` returns the step number of the first non-finite value flushed (or None).
    """

    def __init__(self, sink: Callable[[list[dict[str, Any]]], None], flush_every: int = 1):
        self.sink = sink
        self.flush_every = flush_every
        self._meta: list[tuple[int, int, float, bool]] = []
        self._values: list[torch.Tensor] = []

    def add(
        self,
        step: int,
        epoch: int,
        lr: float,
        loss: torch.Tensor,
        preclip: torch.Tensor | None,
        postclip: torch.Tensor | None,
    ) -> int | None:
        logged = preclip is not None
        nan = loss.new_full((), math.nan)
        self._meta.append((step, epoch, lr, logged))
        self._values.append(
            torch.stack(
                [loss.detach(), preclip if logged else nan, postclip if logged else nan]
            ).float()
        )
        if len(self._values) >= self.flush_every:
            return self.flush()
        return None

    def flush(self) -> int | None:
        if not self._values:
            return None
        values = torch.stack(self._values).cpu().tolist()
        rows, first_bad = [], None
        for (step, epoch, lr, logged), (loss, pre, post) in zip(self._meta, values, strict=True):
            row: dict[str, Any] = {
                "step": step,
                "epoch": epoch,
                "lr": lr,
                "loss": _json_float(loss),
            }
            if logged:
                row["grad_norm_preclip"] = _json_float(pre)
                row["grad_norm_postclip"] = _json_float(post)
            bad = not math.isfinite(loss) or (logged and not math.isfinite(pre))
            if bad and first_bad is None:
                first_bad = step
            rows.append(row)
        self._meta.clear()
        self._values.clear()
        self.sink(rows)
        return first_bad


def _json_float(x: float) -> float | str:
    """Finite floats as numbers; NaN/inf as strings, so the JSON stays standard."""
    return x if math.isfinite(x) else str(x)


def as_float(x: Any) -> float:
    return float(x) if not isinstance(x, str) else float(x.replace("Infinity", "inf"))


def summarise_steps(steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summary numbers over logged steps: losses, and grad-norm min/median/p99/max before and
    after clipping (with the step of the pre-clip maximum)."""
    out: dict[str, Any] = {"steps": len(steps)}
    losses = np.array([as_float(s["loss"]) for s in steps], dtype=float)
    finite = np.isfinite(losses)
    out["first_loss"] = float(losses[0]) if len(losses) and finite[0] else None
    if finite.any():
        i = int(np.nanargmax(np.where(finite, losses, -np.inf)))
        out["max_loss"], out["max_loss_step"] = float(losses[i]), steps[i]["step"]
        out["final_loss"] = float(losses[finite][-1])
    else:
        out["max_loss"] = out["max_loss_step"] = out["final_loss"] = None
    bad = [s["step"] for s, ok in zip(steps, finite, strict=True) if not ok]
    for s in steps:
        if "grad_norm_preclip" in s and not math.isfinite(as_float(s["grad_norm_preclip"])):
            bad.append(s["step"])
    out["nonfinite"] = bool(bad)
    out["nonfinite_step"] = min(bad) if bad else None
    for kind in ("preclip", "postclip"):
        key = f"grad_norm_{kind}"
        logged = [(s["step"], as_float(s[key])) for s in steps if key in s]
        values = np.array([v for _, v in logged if math.isfinite(v)], dtype=float)
        out[f"{key}_count"] = len(logged)
        if len(values):
            out[f"{key}_min"] = float(values.min())
            out[f"{key}_median"] = float(np.median(values))
            out[f"{key}_p99"] = float(np.percentile(values, 99))
            out[f"{key}_max"] = float(values.max())
        else:
            for stat in ("min", "median", "p99", "max"):
                out[f"{key}_{stat}"] = None
        if kind == "preclip" and len(values):
            out[f"{key}_max_step"] = max(
                ((st, v) for st, v in logged if math.isfinite(v)), key=lambda t: t[1]
            )[0]
    return out


def summarise_history(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Initial, best (with epoch) and final validation loss from per-epoch rows."""
    vals = [(h["epoch"], as_float(h["val_loss"])) for h in history if h.get("val_loss") is not None]
    finite = [(e, v) for e, v in vals if math.isfinite(v)]
    out: dict[str, Any] = {
        "epochs_completed": max((h["epoch"] for h in history), default=0),
        "initial_val_loss": vals[0][1] if vals and vals[0][0] == 0 else None,
        "final_val_loss": vals[-1][1] if vals and math.isfinite(vals[-1][1]) else None,
    }
    trained = [(e, v) for e, v in finite if e > 0]
    if trained:
        e, v = min(trained, key=lambda t: t[1])
        out["best_val_loss"], out["best_val_epoch"] = v, e
    else:
        out["best_val_loss"] = out["best_val_epoch"] = None
    return out
