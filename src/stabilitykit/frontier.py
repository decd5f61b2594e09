"""Stability frontiers: where each sweep family stops training, from the rows of its runs.

Pure functions over stage rows (:func:`~stabilitykit.report.collate.metrics_row`) of sweep
points (:mod:`stabilitykit.sweep`), and :func:`refine`, which reads a first pass's records to
plan the second (docs/frontiers.md).

- **Failure rate** per value: runs not ``stable`` over runs with a verdict (``interrupted``
  runs were stopped from outside and do not count), with a Wilson interval at ``confidence``.
- **Boundary**: going up from the lowest value with a failure rate below 1/2, the first value
  whose rate reaches 1/2; the estimate interpolates the crossing in log space between the last
  stable value and that one (the *bracket*). Its interval runs from the nearest value at or
  below the bracket whose Wilson interval lies wholly below 1/2 to the nearest at or above
  whose interval lies wholly above (``None``: no such value was swept, the end is open).
  The default confidence is 80 %: with 3 seeds a 95 % interval never excludes 1/2 (0 failures
  in 3 give [0, 0.56]), at 80 % 0/3 and 3/3 are decisive ([0, 0.35] and [0.65, 1]).
- **LR sensitivity** (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer
  training instabilities", §3.1): the expected deviation of the final value from the best over
  the sweep, ``E_v[ |capped(v) - best| ]``, the expectation over the swept range in log space
  (a value's weight is its share of the log range; equal weights on a uniform log grid), of the
  median over seeds. Capped: the primary metric of a diverged or collapsed run, or one worse than
  the floor, counts as the workload's floor (the trivial predictor's value); the final val loss
  counts as at most the loss at initialisation (a diverged run's: the initial loss).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.record.declared import workload_of

STABLE = VerdictKind.STABLE.value
INTERRUPTED = VerdictKind.INTERRUPTED.value
#: Verdicts whose final numbers are capped: the run did not end as a model of the data.
CAPPED = (VerdictKind.DIVERGED.value, VerdictKind.COLLAPSED.value)
#: The default confidence of the Wilson intervals (see the module docstring).
CONFIDENCE = 0.8
#: The factor a refined sweep brackets the boundary within.
FACTOR = 1.25


def z_of(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence`` (0.95 -> 1.96)."""
    from statistics import NormalDist

    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(failures: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson interval of ``failures / n`` at ``confidence`` ((0, 1) when ``n`` is 0)."""
    from stabilitykit.judge.rates import wilson_interval

    return wilson_interval(failures, n, z_of(confidence))


@dataclass(frozen=True)
class Point:
    """One value of a family's sweep over its seeds (runs with a verdict). ``metric``: median
    and (min, max) of the primary metric, capped at the floor (:func:`capped_metric`); ``loss``:
    median and (min, max) of the best val loss."""

    value: float
    runs: tuple[str, ...]
    seeds: tuple[int | None, ...]
    n: int
    failures: int
    verdicts: dict[str, int]
    ci: tuple[float, float]
    metric: float | None
    metric_band: tuple[float, float] | None
    loss: float | None
    loss_band: tuple[float, float] | None
    reused: int = 0

    @property
    def rate(self) -> float | None:
        return self.failures / self.n if self.n else None

    @property
    def ok(self) -> bool:
        """A failure rate below 1/2."""
        return self.n > 0 and self.failures / self.n < 0.5


@dataclass(frozen=True)
class Boundary:
    """Where the failure rate crosses 1/2 going up (see the module docstring). ``bracketed``
    False: the range swept did not bracket it, ``reason`` says which way."""

    bracketed: bool
    reason: str
    estimate: float | None = None
    bracket: tuple[float, float] | None = None
    interval: tuple[float | None, float | None] = (None, None)

    def resolved(self, factor: float = FACTOR) -> bool:
        """Whether the bracket is within ``factor`` (its upper end over its lower)."""
        return self.bracket is not None and self.bracket[1] / self.bracket[0] <= factor * (1 + 1e-9)


@dataclass(frozen=True)
class Frontier:
    """One sweep family: its points by value, the boundary, the stable range (the values from
    the lowest with a failure rate below 1/2 up to the bracket), the best value by the primary
    metric (by final val loss without one), and the LR sensitivities with their caps."""

    family: str
    field: str
    workload: str | None
    metric: str | None
    direction: str | None
    floor: float | None
    confidence: float
    points: tuple[Point, ...]
    boundary: Boundary
    stable_range: tuple[float, float] | None
    best_value: float | None
    best_metric: float | None
    sensitivity: float | None
    sensitivity_loss: float | None
    notes: tuple[str, ...] = field(default=())

    @property
    def runs(self) -> int:
        return sum(len(p.runs) for p in self.points)

    @property
    def reused(self) -> int:
        return sum(p.reused for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- rows ----------------------------------------------------------------------------------------


def sweep_of(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(family, field)`` of a sweep point's row, else ``None``."""
    sweep = (row.get("arm") or {}).get("sweep")
    if (
        isinstance(sweep, (list, tuple))
        and len(sweep) == 2
        and all(isinstance(s, str) for s in sweep)
    ):
        return sweep[0], sweep[1]
    return None


def group_sweeps(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping]]:
    """Sweep rows by ``(family, field)``, in order of first appearance; other rows left out."""
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for row in rows:
        key = sweep_of(row)
        if key is not None and isinstance((row.get("arm") or {}).get(key[1]), (int, float)):
            groups.setdefault(key, []).append(row)
    return groups


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _median_band(values: Sequence[float | None]) -> tuple[float | None, tuple[float, float] | None]:
    finite = [v for v in values if v is not None]
    if not finite:
        return None, None
    return float(np.median(finite)), (min(finite), max(finite))


def capped_metric(
    row: Mapping[str, Any],
    metric: str,
    direction: str,
    floor: str | None,
    default_floor: float | None = None,
) -> float | None:
    """The row's ``metric`` for the LR sensitivity: the floor's value for a diverged or
    collapsed run, a missing number or one worse than the floor; ``None`` without a floor and a
    number. The floor is the row's own ``floor`` value, else ``default_floor`` (a run that
    died before its evaluation has none)."""
    value = _number(row.get(metric))
    cap = _number(row.get(floor)) if floor else None
    cap = default_floor if cap is None else cap
    if cap is None:
        return value
    if value is None or row.get("verdict") in CAPPED:
        return cap
    return max(value, cap) if direction == "higher" else min(value, cap)


def capped_loss(row: Mapping[str, Any]) -> float | None:
    """The row's final val loss for the LR sensitivity, at most its initial val loss (the
    initial loss for a diverged or collapsed run, or one without a finite final loss)."""
    final, initial = _number(row.get("final_val_loss")), _number(row.get("initial_val_loss"))
    if initial is None:
        return final
    if final is None or row.get("verdict") in CAPPED:
        return initial
    return min(final, initial)


def log_weights(values: Sequence[float]) -> list[float]:
    """Each value's share of the swept range in log space (linear when a value is <= 0): the
    half-gaps to its neighbours, an end taking its whole gap; equal on a uniform grid."""
    if len(values) == 1:
        return [1.0]
    xs = [math.log(v) for v in values] if min(values) > 0 else [float(v) for v in values]
    gaps = [b - a for a, b in itertools.pairwise(xs)]
    cells = [gaps[0]]
    cells += [(gaps[i - 1] + gaps[i]) / 2 for i in range(1, len(xs) - 1)]
    cells.append(gaps[-1])
    total = sum(cells)
    return [c / total for c in cells]


def lr_sensitivity(
    values: Sequence[float], scores: Sequence[float | None], direction: str = "lower"
) -> float | None:
    """Wortsman et al. (2023): ``E_v[ |score(v) - best| ]`` over the swept ``values`` (ascending,
    weighted by :func:`log_weights`), ``best`` the best score (``direction``: ``lower`` or
    ``higher`` is better). ``scores`` are already capped; a ``None`` score leaves its value out.
    ``None`` when no value has a score."""
    pairs = [(v, s) for v, s in zip(values, scores, strict=True) if s is not None]
    if not pairs:
        return None
    best = min(s for _, s in pairs) if direction == "lower" else max(s for _, s in pairs)
    weights = log_weights([v for v, _ in pairs])
    return float(sum(w * abs(s - best) for w, (_, s) in zip(weights, pairs, strict=True)))


# --- the frontier --------------------------------------------------------------------------------


def locate_boundary(points: Sequence[Point], field_name: str = "lr") -> Boundary:
    """The :class:`Boundary` of ``points`` (ascending by value), see the module docstring."""
    decided = [p for p in points if p.n > 0]
    start = next((i for i, p in enumerate(decided) if p.ok), None)
    if start is None:
        low = decided[0].value if decided else None
        return Boundary(
            False,
            f"not bracketed: no {field_name} swept had a failure rate below 1/2 (the edge is "
            f"below the range, from {_g(low)})",
        )
    end = start
    while end + 1 < len(decided) and decided[end + 1].ok:
        end += 1
    if end + 1 == len(decided):
        return Boundary(
            False,
            f"not bracketed: stable up to the largest {field_name} swept, {_g(decided[end].value)} "
            "(the edge is above the range)",
        )
    a, b = decided[end], decided[end + 1]
    t = (0.5 - a.rate) / (b.rate - a.rate)  # type: ignore[operator]
    estimate = (
        a.value * (b.value / a.value) ** t if a.value > 0 else a.value + t * (b.value - a.value)
    )
    low = next((p.value for p in reversed(decided[start : end + 1]) if p.ci[1] < 0.5), None)
    high = next((p.value for p in decided[end + 1 :] if p.ci[0] > 0.5), None)
    return Boundary(
        True,
        f"between {field_name} {_g(a.value)} and {_g(b.value)}",
        estimate=float(estimate),
        bracket=(a.value, b.value),
        interval=(low, high),
    )


def _g(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def build_frontier(
    rows: Sequence[Mapping[str, Any]],
    family: str,
    field_name: str,
    *,
    confidence: float = CONFIDENCE,
    reused: Iterable[str] = (),
) -> Frontier:
    """The :class:`Frontier` of the rows of ``family``'s sweep over ``field_name`` (other rows
    are left out); ``reused``: the runs (row ``run``) read from an earlier session."""
    rows = [r for r in rows if sweep_of(r) == (family, field_name)]
    reused = set(reused)
    decl = workload_of(rows[0]) if rows else workload_of({})
    primary = decl.primary
    metric = primary.name if primary else None
    direction = primary.direction if primary else None
    floor_key = primary.floor if primary else None
    floor = _median_band([_number(r.get(floor_key)) for r in rows] if floor_key else [])[0]
    by_value: dict[float, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_value.setdefault(r["arm"][field_name], []).append(r)
    points, metric_scores, loss_scores = [], [], []
    for value in sorted(by_value):
        members = sorted(by_value[value], key=lambda r: (r.get("seed") is None, r.get("seed") or 0))
        decided = [r for r in members if r["verdict"] != INTERRUPTED]
        failures = sum(r["verdict"] != STABLE for r in decided)
        verdicts: dict[str, int] = {}
        for r in members:
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        capped = [capped_metric(r, metric, direction or "lower", floor_key, floor) for r in decided]
        m, m_band = _median_band(capped if metric else [])
        loss, l_band = _median_band([_number(r.get("best_val_loss")) for r in decided])
        points.append(
            Point(
                value=value,
                runs=tuple(r["run"] for r in members),
                seeds=tuple(r.get("seed") for r in members),
                n=len(decided),
                failures=failures,
                verdicts=verdicts,
                ci=wilson(failures, len(decided), confidence),
                metric=m,
                metric_band=m_band,
                loss=loss,
                loss_band=l_band,
                reused=sum(r["run"] in reused for r in members),
            )
        )
        metric_scores.append(m)
        loss_scores.append(_median_band([capped_loss(r) for r in decided])[0])
    values = [p.value for p in points]
    boundary = locate_boundary(points, field_name)
    stable_range = None
    start = next((p for p in points if p.ok), None)
    if start is not None:
        top = boundary.bracket[0] if boundary.bracket else max(p.value for p in points if p.ok)
        stable_range = (start.value, top)
    best_value = best_metric = None
    scored = [(p.value, p.metric) for p in points if p.metric is not None and p.ok]
    if scored:
        pick = min if direction == "lower" else max
        best_value, best_metric = pick(scored, key=lambda vm: vm[1])
    return Frontier(
        family=family,
        field=field_name,
        workload=decl.name,
        metric=metric,
        direction=direction,
        floor=floor,
        confidence=confidence,
        points=tuple(points),
        boundary=boundary,
        stable_range=stable_range,
        best_value=best_value,
        best_metric=best_metric,
        sensitivity=lr_sensitivity(values, metric_scores, direction or "lower") if metric else None,
        sensitivity_loss=lr_sensitivity(values, loss_scores, "lower"),
    )


def frontiers(
    rows: Sequence[Mapping[str, Any]], *, confidence: float = CONFIDENCE, reused: Iterable[str] = ()
) -> list[Frontier]:
    """One :class:`Frontier` per sweep family in ``rows``, in order of first appearance."""
    reused = set(reused)
    return [
        build_frontier(rows, family, name, confidence=confidence, reused=reused)
        for family, name in group_sweeps(rows)
    ]


# --- the second pass -----------------------------------------------------------------------------


def refine_values(
    frontier: Frontier, factor: float = FACTOR, per_pass: int | None = None
) -> list[float]:
    """The values the next pass adds to ``frontier``'s sweep: inside the bracket, log-spaced so
    that neighbours are within ``factor`` (``per_pass``: at most that many, evenly spaced in
    log, so that passes of one value bisect the bracket: fewer runs, more passes); when the
    range did not bracket the edge, three more values beyond it at the sweep's widest ratio
    (above when every value was stable, below when none was). Empty when the bracket is within
    ``factor``. Integer fields get integers."""
    from stabilitykit.sweep import round_sig

    values = [p.value for p in frontier.points]
    integer = frontier.field not in (
        "lr",
        "weight_decay",
        "clip_value",
        "lr_gamma",
        "layerscale_init",
    )
    if frontier.boundary.bracket is not None:
        a, b = frontier.boundary.bracket
        if frontier.boundary.resolved(factor):
            return []
        steps = math.ceil(math.log(b / a) / math.log(factor) - 1e-9)
        if per_pass is not None:
            steps = min(steps, per_pass + 1)
        new = [a * (b / a) ** (k / steps) for k in range(1, steps)]
    elif len(values) >= 1:
        ratio = max((y / x for x, y in itertools.pairwise(values)), default=10.0)
        if frontier.stable_range is not None:  # stable to the top: go higher
            new = [values[-1] * ratio**k for k in (1, 2, 3)]
        else:  # failing everywhere: go lower
            new = [values[0] / ratio**k for k in (1, 2, 3)]
    else:
        new = []
    if integer:
        out = sorted({round(v) for v in new} - set(values))
        return [v for v in out if v >= 1]
    return sorted({round_sig(v) for v in new} - set(values))


def refine(
    points: Sequence[Any],
    stage_dir: str | Path,
    *,
    scale: str = "ci",
    factor: float = FACTOR,
    per_pass: int | None = None,
    confidence: float = CONFIDENCE,
) -> list[Any]:
    """``points`` (a sweep's arms, as written) and, for each family whose runs at ``scale``
    (an ``--sk-scale`` value) are under ``stage_dir``, the values those runs hold and the ones
    :func:`refine_values` adds (``factor``, ``per_pass``), with the family's seeds. A point's
    runs are those of the same arm at that scale (any device); with no runs yet, ``points`` as
    given. Run again, each pass trains only its new points (the others are reused), so
    repeating one command converges on the edge; once the bracket is within ``factor`` it adds
    nothing. A family the written range does not bracket is extended once each way (three
    values at the sweep's widest ratio): one still failing below that, or still stable above
    it, is reported as not bracketed and not extended again, so that a family that fails at
    every lr (one that does not learn at this scale) does not extend without end."""
    from stabilitykit.arm import apply_scale, hash_of
    from stabilitykit.record.run_record import find_runs, read_record
    from stabilitykit.report.collate import metrics_row
    from stabilitykit.sweep import sweep

    families: dict[tuple[str, str], list[Any]] = {}
    for arm in points:
        if arm.sweep is not None:
            families.setdefault(arm.sweep, []).append(arm)
    recorded = "custom" if scale == "none" else scale  # --sk-scale none: each arm as written
    records = []
    for path in find_runs(Path(stage_dir)) if Path(stage_dir).is_dir() else []:
        try:
            record = read_record(path)
        except (ValueError, OSError):  # half-written or malformed: the report names it
            continue
        if record.complete:
            records.append(record)
    out = list(points)
    for (family, name), arms in families.items():
        base = min(arms, key=lambda a: a.seed)
        seeds = len({a.seed for a in arms})
        rows = []
        for record in records:
            arm = record.arm
            if tuple(arm.get("sweep") or ()) != (family, name) or arm.get("scale") != recorded:
                continue
            try:
                twin = apply_scale(base.replace(**{name: arm[name]}), scale)
                twin = twin.replace(device=arm.get("device", twin.device))
            except (KeyError, ValueError, TypeError):
                continue
            if hash_of(arm, family=True) == twin.family_hash:
                rows.append(metrics_row(record))
        if not rows:
            continue
        frontier = build_frontier(rows, family, name, confidence=confidence)
        written = {getattr(a, name) for a in arms}
        ran = {p.value for p in frontier.points}
        more = refine_values(frontier, factor, per_pass)
        if frontier.boundary.bracket is None and more:
            below, above = min(written), max(written)
            if (all(v < below for v in more) and any(v < below for v in ran)) or (
                all(v > above for v in more) and any(v > above for v in ran)
            ):
                more = []  # extended that way once already: not bracketed, as the report says
        new = sorted((ran | set(more)) - written)
        if new:
            out += sweep(base, name, new, seeds=seeds, family=family)
    return out


# --- comparing families --------------------------------------------------------------------------


def interval_text(boundary: Boundary) -> str:
    """``[0.01, 0.0125]``; an open end is ``–``."""
    low, high = boundary.interval
    return f"[{_g(low)}, {_g(high)}]"


def overlap(a: Boundary, b: Boundary) -> bool:
    """Whether the intervals of two bracketed boundaries overlap. The edge lies strictly inside
    its interval (stable at the lower end, failing at the upper), so intervals that only touch
    do not overlap; an open end (``None``) reaches out."""
    a_low, a_high = (
        x if x is not None else s for x, s in zip(a.interval, (-math.inf, math.inf), strict=True)
    )
    b_low, b_high = (
        x if x is not None else s for x, s in zip(b.interval, (-math.inf, math.inf), strict=True)
    )
    return a_low < b_high and b_low < a_high


def reference_family(items: Sequence[Frontier]) -> Frontier | None:
    """The family the others are compared with: one named ``control``, else the first."""
    return next((f for f in items if f.family == "control"), items[0] if items else None)


def compare_edges(reference: Frontier, other: Frontier) -> str:
    """One line: ```agc` moves the edge up from lr 0.01 [0.008, 0.0125] (`control`) to 0.03
    [0.025, 0.04]``, or that the two are not told apart (the intervals overlap), or what was
    not bracketed."""
    name = other.field
    ref, oth = reference.boundary, other.boundary
    if not ref.bracketed or not oth.bracketed:
        said = [
            f"`{f.family}`: {f.boundary.reason}"
            for f in (reference, other)
            if not f.boundary.bracketed
        ]
        return f"`{other.family}` against `{reference.family}`: " + "; ".join(said) + "."
    a = f"{name} {_g(ref.estimate)} {interval_text(ref)}"
    b = f"{_g(oth.estimate)} {interval_text(oth)}"
    if overlap(ref, oth):
        return (
            f"`{other.family}` and `{reference.family}` are not told apart: edge at {name} {b} "
            f"against {_g(ref.estimate)} {interval_text(ref)} (the intervals overlap)."
        )
    way = "up" if oth.estimate > ref.estimate else "down"  # type: ignore[operator]
    return f"`{other.family}` moves the edge {way} from {a} (`{reference.family}`) to {b}."


def narrative(items: Sequence[Frontier]) -> list[str]:
    """One :func:`compare_edges` line per family other than the reference, for families that
    sweep the same field."""
    ref = reference_family(items)
    if ref is None:
        return []
    return [compare_edges(ref, f) for f in items if f is not ref and f.field == ref.field]
