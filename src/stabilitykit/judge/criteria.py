"""Stability criteria: small composable checks over what a run observed.

A criterion looks at an :class:`Observation` (summary stats, named metrics, per-epoch history, and
the workload's metric declarations) and returns ``None`` when satisfied, else the verdict kind it
implies and its evidence. The defaults hold for every workload: finite; loss and grad norm
bounded; no collapse to the workload's trivial predictor; learns (the primary metric beats its
floor). A stage may add :class:`NoWorseThan` a reference arm. Write your own by implementing
``check``.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stabilitykit.judge.spikes import DEFAULT_RULES, LOSS_SPIKES, SpikeRule
from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind

Failure = tuple[VerdictKind, Evidence]


@dataclass(frozen=True)
class Observation:
    """What a run left: ``stats`` and ``metrics`` dicts, the per-epoch ``history``, and
    ``workload``: the workload's block of ``config.json`` (primary metric, metric declarations
    with direction and floor, ``collapse_std``)."""

    stats: Mapping[str, Any]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    history: Sequence[Mapping[str, Any]] = ()
    workload: Mapping[str, Any] = field(default_factory=dict)

    def metric_spec(self, name: str | None = None) -> Mapping[str, Any] | None:
        """The declaration of metric ``name`` (default: the primary metric), if any."""
        name = name or self.workload.get("primary_metric")
        for spec in self.workload.get("metrics") or ():
            if spec.get("name") == name:
                return spec
        return None

    def primary(self) -> tuple[str, str, float, float | None] | None:
        """``(label, direction, value, floor)`` of the primary metric, when it has a value."""
        spec = self.metric_spec()
        if spec is None:
            return None
        value = _num(self.metrics.get(spec["name"]))
        if value is None:
            return None
        floor = _num(self.metrics.get(spec["floor"])) if spec.get("floor") else None
        return spec.get("label") or spec["name"], spec["direction"], value, floor


def _beyond(direction: str, value: float, limit: float) -> bool:
    """``value`` is at or on the worse side of ``limit``."""
    return value <= limit if direction == "higher" else value >= limit


def _toward(direction: str, floor: float, margin: float) -> float:
    """``floor`` moved ``margin`` the better way."""
    return floor + margin if direction == "higher" else floor - margin


class Criterion(Protocol):
    name: str

    def check(self, obs: Observation) -> Failure | None: ...


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


@dataclass(frozen=True)
class Finite:
    """Every logged loss and gradient norm is finite (docs/gridlines.md §6: "no NaN")."""

    name: str = "finite"

    def check(self, obs: Observation) -> Failure | None:
        if not obs.stats.get("nonfinite"):
            return None
        step = obs.stats.get("nonfinite_step")
        return VerdictKind.DIVERGED, Evidence(
            self.name, "loss or gradient became non-finite", step=step
        )


@dataclass(frozen=True)
class LossBounded:
    """The training loss did not run away: diverged when it ended over ``factor`` times the
    first step's loss, or stayed over that bound for a sustained stretch (docs/criteria.md,
    "Divergence").

    The stats say how high the loss stayed for ``loss_sustained_steps`` consecutive logged
    steps (``loss_sustained``, from
    :func:`~stabilitykit.train.telemetry.summarise_steps`: max(5, 2 % of the logged steps)), and
    where it ended (``final_loss``). A shorter excursion over the bound that comes back is a
    spike, the ``Spikes`` criteria's evidence, not a divergence. A record written before
    ``loss_sustained`` existed is judged by its peak, as it was then.
    """

    factor: float = 100.0
    name: str = "loss_bounded"

    def check(self, obs: Observation) -> Failure | None:
        s = obs.stats
        first = _num(s.get("first_loss"))
        if first is None:
            return None
        bound = self.factor * first
        over = f"over {self.factor:g} x the first loss {first:.4g}"
        final = _num(s.get("final_loss"))
        if final is not None and final > bound:
            return VerdictKind.DIVERGED, Evidence(
                self.name,
                f"loss ended at {final:.4g}, {over}",
                value=final,
                limit=bound,
                step=s.get("final_loss_step"),
            )
        peak = _num(s.get("max_loss"))
        if "loss_sustained" in s:
            level, steps = _num(s.get("loss_sustained")), s.get("loss_sustained_steps")
            if level is None or level <= bound:
                return None
            return VerdictKind.DIVERGED, Evidence(
                self.name,
                f"loss stayed at or above {level:.4g} for {steps} consecutive logged steps, "
                f"{over}"
                + (f" (peak {peak:.4g} at step {s.get('max_loss_step')})" if peak else ""),
                value=level,
                limit=bound,
                step=s.get("loss_sustained_step"),
            )
        if peak is None or peak <= bound:
            return None
        return VerdictKind.DIVERGED, Evidence(
            self.name,
            f"loss rose to {peak:.4g}, {over} (a record without loss_sustained: judged by its "
            "peak)",
            value=peak,
            limit=bound,
            step=s.get("max_loss_step"),
        )


@dataclass(frozen=True)
class GradNormBounded:
    """The pre-clip global gradient norm stays at or below ``limit``."""

    limit: float = 1e5
    name: str = "grad_norm_bounded"

    def check(self, obs: Observation) -> Failure | None:
        peak = _num(obs.stats.get("grad_norm_preclip_max"))
        if peak is None or peak <= self.limit:
            return None
        return VerdictKind.SPIKING, Evidence(
            self.name,
            f"pre-clip grad norm reached {peak:.4g} > {self.limit:g}",
            value=peak,
            limit=self.limit,
            step=obs.stats.get("grad_norm_preclip_max_step"),
        )


def learned_gain(direction: str, value: float, floor: float, ideal: float) -> float | None:
    """The fraction of the possible gain above the trivial predictor that a run learned:
    ``(value - floor) / (ideal - floor)``, the same for lower-is-better metrics; 0 at the floor,
    1 at the ideal, negative below the floor. ``None`` when the floor is already ideal."""
    span = ideal - floor
    if span == 0 or (span < 0) != (direction == "lower"):
        return None
    return (value - floor) / span


@dataclass(frozen=True)
class NoCollapse:
    """The prediction is not the workload's trivial predictor (docs/criteria.md).

    Collapsed when the workload reports prediction and truth stds (``collapse_std``) and the
    prediction's is below ``rel_std`` times the truth's (a constant output); or when the primary
    metric learned less than ``min_gain`` of the possible gain above its floor
    (:func:`learned_gain`, for metrics that declare an ``ideal``). ``min_gain`` = 5 %: at the
    grid-lines ci tier (lr 3e-3, 25 epochs) the weakest healthy arm, AGC, learns about 10 % and
    the LayerScale arm that reproduces the original study's collapse 0.5 %; a Darcy control
    learns about 90 %. Without an ideal, the old signature applies: the metric within
    ``margin`` of its floor while the final val loss is over ``relapse`` times the best.
    """

    rel_std: float = 0.05
    min_gain: float = 0.05
    margin: float = 0.01
    relapse: float = 2.0
    name: str = "no_collapse"

    def check(self, obs: Observation) -> Failure | None:
        m, s = obs.metrics, obs.stats
        pair = obs.workload.get("collapse_std")
        if pair:
            pred_std, gt_std = _num(m.get(pair[0])), _num(m.get(pair[1]))
            if pred_std is not None and gt_std and pred_std < self.rel_std * gt_std:
                return VerdictKind.COLLAPSED, Evidence(
                    self.name,
                    f"the prediction is constant: {pair[0]} {pred_std:.3g} < {self.rel_std:g} x "
                    f"{pair[1]} {gt_std:.3g}",
                    value=pred_std,
                    limit=self.rel_std * gt_std,
                )
        primary, spec = obs.primary(), obs.metric_spec()
        if primary is None or primary[3] is None or spec is None:
            return None
        label, direction, value, floor = primary
        ideal = _num(spec.get("ideal"))
        gain = learned_gain(direction, value, floor, ideal) if ideal is not None else None
        if gain is not None:
            if gain >= self.min_gain:
                return None
            return VerdictKind.COLLAPSED, Evidence(
                self.name,
                f"{label} {value:.4g} learned {gain:.1%} of the possible gain from the trivial "
                f"predictor's floor {floor:.4g} to {ideal:g} (at least {self.min_gain:.0%} "
                "needed)",
                value=gain,
                limit=self.min_gain,
            )
        best, final = _num(s.get("best_val_loss")), _num(s.get("final_val_loss"))
        if best is None or final is None:
            return None
        limit = _toward(direction, floor, self.margin)
        if _beyond(direction, value, limit) and final > self.relapse * best:
            return VerdictKind.COLLAPSED, Evidence(
                self.name,
                f"{label} {value:.3f} at the trivial predictor's floor {floor:.3f} and final val "
                f"loss {final:.4g} > {self.relapse:g} x best {best:.4g}",
                value=value,
                limit=limit,
                epoch=s.get("best_val_epoch"),
            )
        return None


@dataclass(frozen=True)
class Learns:
    """Best val loss drops by ``min_drop`` (fraction) from its initial value and the primary
    metric beats its floor (the trivial predictor)."""

    min_drop: float = 0.1
    name: str = "learns"

    def check(self, obs: Observation) -> Failure | None:
        s = obs.stats
        initial, best = _num(s.get("initial_val_loss")), _num(s.get("best_val_loss"))
        if initial is not None and best is not None and best > (1 - self.min_drop) * initial:
            return VerdictKind.STAGNATED, Evidence(
                self.name,
                f"best val loss {best:.4g} did not drop {self.min_drop:.0%} below its initial "
                f"{initial:.4g}",
                value=best,
                limit=(1 - self.min_drop) * initial,
            )
        primary = obs.primary()
        if primary is not None and primary[3] is not None:
            label, direction, value, floor = primary
            if _beyond(direction, value, floor):
                return VerdictKind.STAGNATED, Evidence(
                    self.name,
                    f"{label} {value:.3f} is not better than the trivial predictor's floor "
                    f"{floor:.3f}",
                    value=value,
                    limit=floor,
                )
        return None


@dataclass(frozen=True)
class NoWorseThan:
    """Best val loss and the primary metric no worse than a reference arm's, within tolerance.

    ``reference`` holds ``best_val_loss`` and the primary metric (e.g. Stage A's control). Val
    loss may be ``val_loss_rtol`` (relative) higher; the primary metric may be worse by
    ``metric_atol`` (absolute, default: the metric's declared ``abs_tol``, else 0).
    """

    reference: Mapping[str, Any]
    reference_name: str = "reference"
    val_loss_rtol: float = 0.5
    metric_atol: float | None = None
    name: str = "no_worse_than_reference"

    def check(self, obs: Observation) -> Failure | None:
        problems = []
        ref_loss = _num(self.reference.get("best_val_loss"))
        loss = _num(obs.stats.get("best_val_loss"))
        if ref_loss is not None and loss is not None:
            limit = ref_loss * (1 + self.val_loss_rtol)
            if not loss <= limit:
                problems.append((f"best val loss {loss:.4g} > {limit:.4g}", loss, limit))
        spec = obs.metric_spec()
        if spec is not None:
            ref, value = _num(self.reference.get(spec["name"])), _num(obs.metrics.get(spec["name"]))
            atol = self.metric_atol if self.metric_atol is not None else spec.get("abs_tol") or 0.0
            if ref is not None and value is not None:
                higher = spec["direction"] == "higher"
                limit = ref - atol if higher else ref + atol
                if not (value >= limit if higher else value <= limit):
                    label = spec.get("label") or spec["name"]
                    sign = "<" if higher else ">"
                    problems.append((f"{label} {value:.3f} {sign} {limit:.3f}", value, limit))
        if not problems:
            return None
        text = "; ".join(p[0] for p in problems)
        return VerdictKind.STAGNATED, Evidence(
            self.name,
            f"worse than {self.reference_name}: {text}",
            value=problems[0][1],
            limit=problems[0][2],
        )


@dataclass(frozen=True)
class Spikes:
    """Spikes of ``signal`` (``loss`` or ``grad_norm_preclip``) against the series' own spread.

    The training loop runs the rule online (:class:`~stabilitykit.judge.spikes.SpikeRule`:
    after ``warmup`` values, a value is a spike when it is over the mean of the last ``window``
    values by more than ``sigmas`` of their standard deviations, in log space when ``log``, and
    by more than the minimum jump ``max(atol, rtol * |baseline|)``) and records each spike with
    its evidence in ``stats["spikes"]``: step, epoch, the batch's sample indices, the value
    against the window's baseline and spread, and the top layers by gradient norm at that step.
    A spike the run recovers from is evidence, not a failure: the criterion fails (verdict
    ``spiking``) only when there are more than ``max_spikes`` (``None``: never).
    """

    signal: str = LOSS_SPIKES.signal
    window: int = LOSS_SPIKES.window
    warmup: int = LOSS_SPIKES.warmup
    sigmas: float = LOSS_SPIKES.sigmas
    atol: float = LOSS_SPIKES.atol
    rtol: float = LOSS_SPIKES.rtol
    log: bool = LOSS_SPIKES.log
    max_spikes: int | None = None
    name: str = LOSS_SPIKES.name

    def __post_init__(self) -> None:
        self.rule  # validates the thresholds  # noqa: B018
        if self.max_spikes is not None and (
            not isinstance(self.max_spikes, int)
            or isinstance(self.max_spikes, bool)
            or self.max_spikes < 0
        ):
            raise ValueError(
                f"Spikes.max_spikes: got {self.max_spikes!r}; allowed: an int >= 0 or None"
            )

    @classmethod
    def from_rule(cls, rule: SpikeRule, max_spikes: int | None = None) -> Spikes:
        """The criterion that runs ``rule`` and allows ``max_spikes``."""
        return cls(**rule.to_dict(), max_spikes=max_spikes)

    @property
    def rule(self) -> SpikeRule:
        return SpikeRule(
            signal=self.signal,
            window=self.window,
            warmup=self.warmup,
            sigmas=self.sigmas,
            atol=self.atol,
            rtol=self.rtol,
            log=self.log,
            name=self.name,
        )

    def check(self, obs: Observation) -> Failure | None:
        spikes = [
            s
            for s in obs.stats.get("spikes") or ()
            if isinstance(s, Mapping) and s.get("criterion") == self.name
        ]
        counts = obs.stats.get("spike_counts")
        count = counts.get(self.name, len(spikes)) if isinstance(counts, Mapping) else len(spikes)
        if self.max_spikes is None or count <= self.max_spikes or not spikes:
            return None
        worst = max(spikes, key=lambda s: (s.get("value") or 0) / max(s.get("limit") or 1, 1e-30))
        return VerdictKind.SPIKING, Evidence(
            self.name,
            f"{count} {self.signal} spike(s), more than {self.max_spikes}; worst: "
            + describe_spike(worst),
            value=_num(worst.get("value")),
            limit=_num(worst.get("limit")),
            step=worst.get("step"),
            epoch=worst.get("epoch"),
        )


def describe_spike(spike: Mapping[str, Any], max_indices: int = 8) -> str:
    """One line: the value against its running baseline (the mean of the window before it,
    geometric for a log-space rule) and limit, the batch, the top layers."""
    batch = list(spike.get("batch") or [])
    more = ", ..." if len(batch) > max_indices else ""
    shown = ", ".join(str(i) for i in batch[:max_indices]) + more
    layers = ", ".join(f"{n} {v:.3g}" for n, v in spike.get("top_layers") or [])
    value, baseline, limit = (
        math.nan if (x := _num(spike.get(k))) is None else x for k in ("value", "baseline", "limit")
    )
    times = f"{value / baseline:.3g} x " if baseline > 0 else ""
    text = (
        f"{spike.get('signal')} {value:.4g}, {times}its running mean {baseline:.4g} "
        f"(limit {limit:.4g}) at step {spike.get('step')}, epoch {spike.get('epoch')}"
    )
    if batch:
        text += f"; batch samples [{shown}]"
    if layers:
        text += f"; top layers by grad norm: {layers}"
    return text


DEFAULT_CRITERIA: tuple[Criterion, ...] = (
    Finite(),
    LossBounded(),
    GradNormBounded(),
    NoCollapse(),
    Learns(),
    *(Spikes.from_rule(rule) for rule in DEFAULT_RULES),
)


def with_criteria(base: Iterable[Criterion], *changes: Criterion) -> tuple[Criterion, ...]:
    """``base`` with each of ``changes`` replacing the criterion of the same name, or appended::

    criteria = with_criteria(DEFAULT_CRITERIA, GradNormBounded(limit=1e3))
    """
    out = list(base)
    for change in changes:
        names = [c.name for c in out]
        if change.name in names:
            out[names.index(change.name)] = change
        else:
            out.append(change)
    return tuple(out)


def criterion_name(criterion: Any) -> str:
    """The criterion's ``name``, else its type's name (a user's criterion may lack one)."""
    name = getattr(criterion, "name", None)
    return name if isinstance(name, str) and name else type(criterion).__name__


def check_one(criterion: Criterion, obs: Observation) -> Failure | None:
    """``criterion.check(obs)``; a criterion that raises or returns something other than
    ``None`` or ``(VerdictKind, Evidence)`` (a bug in a user's criterion) is an ``error``
    failure whose evidence names the criterion and quotes the exception."""
    name = criterion_name(criterion)
    try:
        failure = criterion.check(obs)
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        message = f"the criterion raised {type(exc).__name__}: {exc}{where}"
        return VerdictKind.ERROR, Evidence(name, message)
    if failure is None:
        return None
    if (
        isinstance(failure, tuple)
        and len(failure) == 2
        and isinstance(failure[0], VerdictKind)
        and isinstance(failure[1], Evidence)
    ):
        return failure
    message = f"the criterion returned {failure!r:.200}; expected None or (VerdictKind, Evidence)"
    return VerdictKind.ERROR, Evidence(name, message)


def judge(obs: Observation, criteria: Iterable[Criterion] = DEFAULT_CRITERIA) -> Verdict:
    """Apply ``criteria``; the verdict is the most severe failure, with all failures' evidence.

    Every criterion runs: one that raises is an ``error`` failure naming it (see
    :func:`check_one`), and the others still give their evidence.
    """
    return Verdict.from_failures([f for c in criteria if (f := check_one(c, obs)) is not None])
