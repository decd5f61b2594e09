"""One run against the spread of a baseline's seeds: pass, regressed, or not decided.

Used where a same-seed comparison means nothing: the run's numerics differ from the baseline
seed's (another machine kind, a GPU, another torch build, or unknown), or the baseline never ran
the run's seed. The run is then one more draw from the arm's seed-to-seed distribution, and a
metric is judged in two steps, as asv does (a change must exceed its threshold *and* be
statistically distinguishable from noise; ``asv.statistics.is_different``):

1. no worse than ``median`` moved by the metric's declared tolerance: **passes**;
2. worse than that *and* outside the baseline's two-sided 95 % prediction interval for one new
   observation, ``mean ± t(0.975, n-1) · s · sqrt(1 + 1/n)`` over ``n >= MIN_SEEDS`` seeds
   (Student's t; e.g. Hahn & Meeker, *Statistical Intervals*, 1991, §4.7): **regressed**;
3. worse than the tolerance but inside the interval, or fewer than ``MIN_SEEDS`` seeds to
   estimate the spread: **not decided**, with the reason. A single run is never significant
   under a rank test against a handful of seeds (Mann-Whitney U with 1 against 5 cannot go
   below p = 1/6), so the interval assumes the metric is roughly normal over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from stabilitykit.gate.metrics import MetricRule

#: Seeds needed to estimate a spread; below, a worse value is not decided.
MIN_SEEDS = 3
#: Coverage of the prediction interval.
CONFIDENCE = 0.95

OK, WORSE, BETTER, NOT_DECIDED = "ok", "worse", "better", "not decided"


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def prediction_interval(
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Two-sided ``confidence`` prediction interval for one new draw from the distribution of
    ``values`` (normal, mean and variance unknown); ``None`` below :data:`MIN_SEEDS` values."""
    n = len(values)
    if n < MIN_SEEDS:
        return None
    array = np.asarray(values, dtype=float)
    mean, std = float(array.mean()), float(array.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


@dataclass(frozen=True)
class SpreadJudgement:
    """A value against the seeds' spread. ``limit``: the worst value that passes (the median
    moved the worse way by the declared tolerance); ``bound``: the prediction interval's worse
    end, beyond which (and beyond ``limit``) the value regressed (``None``: too few seeds)."""

    status: str
    median: float
    limit: float
    bound: float | None
    n: int
    tolerance: float
    why: str = ""


def judge_value(now: float, values: Sequence[float], rule: MetricRule) -> SpreadJudgement:
    """``now`` (one run's ``rule.name``) against ``values`` (the baseline's seeds), by the rule
    in the module docstring."""
    if not values:
        raise ValueError(f"judge_value: {rule.name}: expected baseline values, got none")
    n, median = len(values), float(np.median(values))
    tolerance = rule.tolerance(median)
    lower = rule.direction == "lower"
    limit = median + tolerance if lower else median - tolerance
    interval = prediction_interval(values)
    bound = good = None
    if interval is not None:
        bound, good = (interval[1], interval[0]) if lower else interval
    judged = SpreadJudgement(OK, median, limit, bound, n, tolerance)
    if not rule.is_worse(now, limit):
        beyond = good is not None and rule.is_worse(good, now) and rule.is_better(now, median)
        return judged if not beyond else _with(judged, BETTER)
    side = "above" if lower else "below"
    head = (
        f"{rule.name} {now:.5g} is {side} the median of {n} seed{'s' if n != 1 else ''} "
        f"{median:.5g} by more than the "
        f"tolerance {tolerance:.3g} (limit {limit:.5g})"
    )
    if bound is None:
        why = f"{head}, and {n} seed(s) are too few to estimate the spread ({MIN_SEEDS} needed)"
        return _with(judged, NOT_DECIDED, why)
    if rule.is_worse(now, bound):
        why = f"{head} and outside their {CONFIDENCE:.0%} prediction interval (to {bound:.5g})"
        return _with(judged, WORSE, why)
    why = (
        f"{head}, but inside their {CONFIDENCE:.0%} prediction interval (to {bound:.5g}): the "
        "spread over seeds is too wide to tell a regression from noise"
    )
    return _with(judged, NOT_DECIDED, why)


def regression_threshold(values: Sequence[float], rule: MetricRule) -> float | None:
    """The smallest move from the median, the worse way, that one run needs to be called
    regressed against ``values``: the larger of the tolerance and the distance to the
    prediction interval's worse end; ``None`` below :data:`MIN_SEEDS` values."""
    interval = prediction_interval(values)
    if interval is None:
        return None
    median = float(np.median(values))
    to_bound = interval[1] - median if rule.direction == "lower" else median - interval[0]
    return max(rule.tolerance(median), to_bound)


def _with(judged: SpreadJudgement, status: str, why: str = "") -> SpreadJudgement:
    return replace(judged, status=status, why=why)
