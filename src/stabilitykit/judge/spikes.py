"""Loss and gradient-norm spikes against the series' own spread (docs/criteria.md, "Spikes").

A :class:`SpikeRule` watches one per-step signal (``loss`` or ``grad_norm_preclip``) and judges
each value against the last ``window`` values before it, in log space when ``log`` (gradient
norms move by factors, not by amounts). With ``m`` and ``s`` the mean and standard deviation of
those values (of their logarithms when ``log``), ``baseline = m`` (``exp(m)``, a geometric mean,
when ``log``) and a value is a spike when it is above

    limit = max(m + sigmas * s, baseline + max(atol, rtol * |baseline|))    (exp(...) when log)

the first term after the spread of the series itself (OLMo-core's stability monitor: standard
deviations over a running window), the second a minimum jump, so that a flat series whose
spread is tiny does not flag its noise. Values are judged once ``warmup`` values were seen. A
spike enters the window at its limit (winsorised): one spike barely moves the window, and a
series that settles at a new level is taken as the new normal after a few steps rather than
flagged for ever. Non-finite values (the ``finite`` criterion owns them), and non-positive ones
under ``log``, are not judged and do not enter the window.

Warm-up never hides the worst step: every value measured against a non-empty window, in warm-up
or not, is a candidate for the rule's largest excursion (the largest jump over its baseline,
``value / baseline``), which :meth:`SpikeDetector.largest` reports.

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
    """Spike thresholds for one signal; ``name`` labels the spikes it finds.

    ``window``: values the spread is taken over; ``warmup``: values seen before any is judged;
    ``sigmas``: standard deviations above the window's mean; ``atol`` / ``rtol``: the smallest
    jump over the baseline that can be a spike (absolute / relative to the baseline); ``log``:
    judge the logarithm of the signal.
    """

    signal: str = "loss"
    window: int = 50
    warmup: int = 3
    sigmas: float = 4.0
    atol: float = 0.0
    rtol: float = 0.5
    log: bool = False
    name: str = "spikes"

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"SpikeRule.signal: got {self.signal!r}; allowed: one of {SIGNALS}")
        for key, low in (("window", 1), ("warmup", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"SpikeRule.{key}: got {value!r}; allowed: an int >= {low}")
        for key in ("sigmas", "atol", "rtol"):
            value = getattr(self, key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and value >= 0):
                raise ValueError(f"SpikeRule.{key}: got {value!r}; allowed: a finite number >= 0")
        if not isinstance(self.log, bool):
            raise ValueError(f"SpikeRule.log: got {self.log!r}; allowed: True or False")

    def judged(self, value: Any) -> bool:
        """Whether ``value`` is a number this rule judges (finite; positive under ``log``)."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return math.isfinite(value) and (value > 0 or not self.log)

    def threshold(self, window: Sequence[float]) -> tuple[float, float, float]:
        """``(baseline, spread, limit)`` over the ``window`` values (non-empty, judged ones):
        the mean (geometric under ``log``), the standard deviation (of the logarithms under
        ``log``) and the value above which a step is a spike."""
        xs = [math.log(v) for v in window] if self.log else list(window)
        mean = math.fsum(xs) / len(xs)
        spread = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
        baseline = math.exp(mean) if self.log else mean
        by_spread = mean + self.sigmas * spread
        by_spread = math.exp(min(by_spread, 700.0)) if self.log else by_spread
        return baseline, spread, max(by_spread, self.limit(baseline))

    def limit(self, baseline: float) -> float:
        """The smallest jump over ``baseline`` that can be a spike, as a value."""
        return baseline + max(self.atol, self.rtol * abs(baseline))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signal": self.signal,
            "window": self.window,
            "warmup": self.warmup,
            "sigmas": self.sigmas,
            "atol": self.atol,
            "rtol": self.rtol,
            "log": self.log,
        }


#: The rules of the default ``Spikes`` criteria (docs/criteria.md, "Spikes"), one per signal.
LOSS_SPIKES = SpikeRule("loss", name="loss_spikes")
GRAD_NORM_SPIKES = SpikeRule("grad_norm_preclip", log=True, rtol=1.0, name="grad_norm_spikes")
DEFAULT_RULES: tuple[SpikeRule, ...] = (LOSS_SPIKES, GRAD_NORM_SPIKES)


@dataclass
class _State:
    rule: SpikeRule
    seen: int = 0
    window: deque[float] = field(default_factory=deque)
    largest: dict[str, Any] | None = None


class SpikeDetector:
    """Online detection over step rows (``{"step", "epoch", "loss", "grad_norm_preclip"}``).

    :meth:`feed` returns, for each spike in the rows, a dict ``{criterion, signal, step, epoch,
    value, baseline, spread, limit}``; the detector's state carries over between calls, so rows
    may come one at a time or in flushes of any size with the same result.
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

    def largest(self) -> dict[str, dict[str, Any]]:
        """Per rule name, the largest excursion so far: the value with the largest ``jump =
        value / baseline`` over the window before it (positive baselines), warm-up included,
        with the fields of a spike, ``ratio = value / limit``, ``window`` (how many values it
        was judged against), ``warmup`` (whether it fell there) and ``flagged`` (whether it
        counted as a spike). Rules that judged nothing are left out."""
        return {s.rule.name: dict(s.largest) for s in self._states if s.largest is not None}

    def state_dict(self) -> dict[str, Any]:
        """Plain data (for a checkpoint): each rule's count of values seen, its window and its
        largest excursion."""
        return {
            "rules": [s.rule.to_dict() for s in self._states],
            "seen": [s.seen for s in self._states],
            "windows": [list(s.window) for s in self._states],
            "largest": [None if s.largest is None else dict(s.largest) for s in self._states],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if state.get("rules") != [r.to_dict() for r in self.rules]:
            raise ValueError("SpikeDetector: the saved state is of other spike rules")
        largest = state.get("largest") or [None] * len(self._states)
        for s, seen, window, big in zip(
            self._states, state["seen"], state["windows"], largest, strict=True
        ):
            s.seen, s.window = int(seen), deque(float(v) for v in window)
            s.largest = None if big is None else dict(big)


def _observe(state: _State, row: dict[str, Any]) -> dict[str, Any] | None:
    rule = state.rule
    value = row.get(rule.signal)
    if not rule.judged(value):
        return None
    value = float(value)
    spike, entry = None, value
    if state.window:
        baseline, spread, limit = rule.threshold(state.window)
        warm = state.seen < rule.warmup
        excursion = {
            "criterion": rule.name,
            "signal": rule.signal,
            "step": row.get("step"),
            "epoch": row.get("epoch"),
            "value": value,
            "baseline": baseline,
            "spread": spread,
            "limit": limit,
        }
        if value > limit and not warm:
            spike, entry = excursion, limit
        jump = value / baseline if baseline > 0 else None  # a ratio needs a positive baseline
        if jump is not None and (state.largest is None or jump > state.largest["jump"]):
            state.largest = {
                **excursion,
                "jump": jump,
                "ratio": value / limit,
                "window": len(state.window),
                "warmup": warm,
                "flagged": spike is not None,
            }
    state.seen += 1
    state.window.append(entry)
    if len(state.window) > rule.window:
        state.window.popleft()
    return None if spike is None else dict(spike)


def find_spikes(rows: Sequence[dict[str, Any]], rules: Iterable[SpikeRule]) -> list[dict[str, Any]]:
    """The spikes in a whole run's step rows (what the loop finds online, without the evidence
    only the loop has)."""
    return SpikeDetector(rules).feed(rows)


def largest_excursions(
    rows: Sequence[dict[str, Any]], rules: Iterable[SpikeRule] = DEFAULT_RULES
) -> dict[str, dict[str, Any]]:
    """Per signal, the largest excursion of a whole run's step rows under ``rules`` (the first
    rule of each signal; :meth:`SpikeDetector.largest`). A signal the rows never give a judged
    value against a window for is left out."""
    firsts: dict[str, SpikeRule] = {}
    for rule in rules:
        firsts.setdefault(rule.signal, rule)
    detector = SpikeDetector(firsts.values())
    detector.feed(rows)
    by_name = detector.largest()
    return {r.signal: by_name[r.name] for r in firsts.values() if r.name in by_name}
