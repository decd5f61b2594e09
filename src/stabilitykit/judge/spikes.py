"""Loss and gradient-norm spikes against a running baseline (docs/criteria.md, "Spikes").

A :class:`SpikeRule` watches one per-step signal (``loss`` or ``grad_norm_preclip``). After
``warmup`` values, a value is a spike when it exceeds the running baseline (the mean of the last
``window`` values that were not spikes) by more than ``atol`` and by more than ``rtol`` times
the baseline's magnitude: ``value - baseline > max(atol, rtol * |baseline|)``. A spike does not
enter the window, so a run that stays high keeps being flagged until it comes back. Non-finite
values are not spikes (the ``finite`` criterion owns them) and do not enter the window either.

:class:`SpikeDetector` runs several rules online over the step rows the loop flushes; the loop
adds the evidence only it has (the batch's sample indices, per-layer gradient norms).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

SIGNALS = ("loss", "grad_norm_preclip")


@dataclass(frozen=True)
class SpikeRule:
    """Spike thresholds for one signal; ``name`` labels the spikes it finds."""

    signal: str = "loss"
    window: int = 50
    warmup: int = 100
    atol: float = 0.0
    rtol: float = 1.0
    name: str = "spikes"

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"SpikeRule.signal: got {self.signal!r}; allowed: one of {SIGNALS}")
        for key, low in (("window", 1), ("warmup", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"SpikeRule.{key}: got {value!r}; allowed: an int >= {low}")
        for key in ("atol", "rtol"):
            value = getattr(self, key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and value >= 0):
                raise ValueError(f"SpikeRule.{key}: got {value!r}; allowed: a finite number >= 0")

    def limit(self, baseline: float) -> float:
        """The value above which a step is a spike, given the running baseline."""
        return baseline + max(self.atol, self.rtol * abs(baseline))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signal": self.signal,
            "window": self.window,
            "warmup": self.warmup,
            "atol": self.atol,
            "rtol": self.rtol,
        }


@dataclass
class _State:
    rule: SpikeRule
    seen: int = 0
    window: deque[float] = field(default_factory=deque)


class SpikeDetector:
    """Online detection over step rows (``{"step", "epoch", "loss", "grad_norm_preclip"}``).

    :meth:`feed` returns, for each spike in the rows, a dict ``{criterion, signal, step, epoch,
    value, baseline, limit}``; the detector's state carries over between calls, so rows may come
    one at a time or in flushes of any size with the same result.
    """

    def __init__(self, rules: Iterable[SpikeRule]) -> None:
        self.rules = tuple(rules)
        self._states = [_State(rule) for rule in self.rules]

    def feed(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        spikes: list[dict[str, Any]] = []
        for row in rows:
            for state in self._states:
                spike = _observe(state, row)
                if spike is not None:
                    spikes.append(spike)
        return spikes

    def state_dict(self) -> dict[str, Any]:
        """Plain data (for a checkpoint): each rule's count of values seen and its window."""
        return {
            "rules": [s.rule.to_dict() for s in self._states],
            "seen": [s.seen for s in self._states],
            "windows": [list(s.window) for s in self._states],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if state.get("rules") != [r.to_dict() for r in self.rules]:
            raise ValueError("SpikeDetector: the saved state is of other spike rules")
        for s, seen, window in zip(self._states, state["seen"], state["windows"], strict=True):
            s.seen, s.window = int(seen), deque(float(v) for v in window)


def _observe(state: _State, row: dict[str, Any]) -> dict[str, Any] | None:
    rule = state.rule
    value = row.get(rule.signal)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    spike = None
    if state.seen >= rule.warmup and state.window:
        baseline = math.fsum(state.window) / len(state.window)
        limit = rule.limit(baseline)
        if value > limit:
            spike = {
                "criterion": rule.name,
                "signal": rule.signal,
                "step": row.get("step"),
                "epoch": row.get("epoch"),
                "value": float(value),
                "baseline": baseline,
                "limit": limit,
            }
    state.seen += 1
    if spike is None:
        state.window.append(float(value))
        if len(state.window) > rule.window:
            state.window.popleft()
    return spike


def find_spikes(rows: Sequence[dict[str, Any]], rules: Iterable[SpikeRule]) -> list[dict[str, Any]]:
    """The spikes in a whole run's step rows (what the loop finds online, without the evidence
    only the loop has)."""
    return SpikeDetector(rules).feed(rows)
