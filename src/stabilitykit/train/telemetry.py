"""Per-step telemetry: a buffer that streams rows to the record, and the summary numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from stabilitykit.judge.spikes import DEFAULT_RULES, SpikeRule, largest_excursions

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


#: A loss over its bound for this many consecutive logged steps (at least), or this fraction of
#: the run's logged steps, is sustained (docs/criteria.md, "Divergence").
SUSTAINED_MIN_STEPS = 5
SUSTAINED_FRACTION = 0.02


def sustained_steps(n: int) -> int:
    """How many consecutive logged steps a stretch of a run of ``n`` logged steps must last to
    be sustained: ``max(5, ceil(2 % of n))``."""
    return max(SUSTAINED_MIN_STEPS, math.ceil(SUSTAINED_FRACTION * n))


def sustained_level(values: np.ndarray, length: int) -> tuple[float, int] | None:
    """``(level, start)``: the highest level that ``values`` stayed at or above for ``length``
    consecutive entries (the largest minimum over any ``length`` consecutive ones; NaN counts
    as infinite) and the index where that stretch starts; ``None`` when there are fewer."""
    if length < 1 or len(values) < length:
        return None
    lows = np.where(np.isnan(values), np.inf, values)
    span = 1  # lows[i] = min(values[i : i + span])
    while 2 * span <= length:
        lows = np.minimum(lows[:-span], lows[span:])
        span *= 2
    if span < length:  # two overlapping spans cover length
        lows = np.minimum(lows[: len(lows) - (length - span)], lows[length - span :])
    start = int(np.argmax(lows))
    return float(lows[start]), start


def summarise_steps(
    steps: Sequence[dict[str, Any]], rules: Iterable[SpikeRule] = DEFAULT_RULES
) -> dict[str, Any]:
    """Summary numbers over logged steps: losses (first, max, final and how high the loss stayed
    for a sustained stretch: :func:`sustained_level` over :func:`sustained_steps`), grad-norm
    min/median/p99/max before and after clipping (with the step of the pre-clip maximum), and
    per signal the largest excursion against its running window, warm-up included
    (:func:`~stabilitykit.judge.spikes.largest_excursions` under ``rules``)."""
    out: dict[str, Any] = {"steps": len(steps)}
    losses = np.array([as_float(s["loss"]) for s in steps], dtype=float)
    finite = np.isfinite(losses)
    out["first_loss"] = float(losses[0]) if len(losses) and finite[0] else None
    if finite.any():
        i = int(np.nanargmax(np.where(finite, losses, -np.inf)))
        out["max_loss"], out["max_loss_step"] = float(losses[i]), steps[i]["step"]
        last = int(np.flatnonzero(finite)[-1])
        out["final_loss"], out["final_loss_step"] = float(losses[last]), steps[last]["step"]
    else:
        out["max_loss"] = out["max_loss_step"] = None
        out["final_loss"] = out["final_loss_step"] = None
    out["loss_sustained_steps"] = sustained_steps(len(losses))
    held = sustained_level(losses, out["loss_sustained_steps"])
    out["loss_sustained"] = None if held is None else _finite_or_none(held[0])
    out["loss_sustained_step"] = None if held is None else steps[held[1]]["step"]
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
    out["largest_excursion"] = largest_excursions(steps, rules)
    return out


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


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
