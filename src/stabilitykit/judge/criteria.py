"""Stability criteria: small composable checks over what a run observed.

A criterion looks at an :class:`Observation` (summary stats, named metrics, per-epoch history) and
returns ``None`` when satisfied, else the verdict kind it implies and its evidence. Defaults follow
DOMAIN.md §6 (finite; grad norm bounded; no collapse against the constant-image floor; learns).
Stage B adds :class:`NoWorseThan` a reference arm. Write your own by implementing ``check``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind

Failure = tuple[VerdictKind, Evidence]


@dataclass(frozen=True)
class Observation:
    """What a run left: ``stats`` and ``metrics`` dicts and the per-epoch ``history``."""

    stats: Mapping[str, Any]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    history: Sequence[Mapping[str, Any]] = ()


class Criterion(Protocol):
    name: str

    def check(self, obs: Observation) -> Failure | None: ...


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


@dataclass(frozen=True)
class Finite:
    """Every logged loss and gradient norm is finite (DOMAIN.md §6: "no NaN")."""

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
    """The training loss never exceeds ``factor`` times the first step's loss."""

    factor: float = 100.0
    name: str = "loss_bounded"

    def check(self, obs: Observation) -> Failure | None:
        first, peak = _num(obs.stats.get("first_loss")), _num(obs.stats.get("max_loss"))
        if first is None or peak is None or peak <= self.factor * first:
            return None
        return VerdictKind.DIVERGED, Evidence(
            self.name,
            f"loss rose to {peak:.4g}, over {self.factor:g} x the first loss {first:.4g}",
            value=peak,
            limit=self.factor * first,
            step=obs.stats.get("max_loss_step"),
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


@dataclass(frozen=True)
class NoCollapse:
    """The prediction is not a constant image (DOMAIN.md §6, collapse signature).

    Collapsed when the std of the rescaled predicted amplitude is below ``rel_std`` times the
    ground truth's, or when amp SSIM sits within ``ssim_margin`` of the constant-image floor while
    the final val loss is over ``relapse`` times the best (the run learned, then lost it).
    """

    rel_std: float = 0.05
    ssim_margin: float = 0.01
    relapse: float = 2.0
    name: str = "no_collapse"

    def check(self, obs: Observation) -> Failure | None:
        m, s = obs.metrics, obs.stats
        pred_std, gt_std = _num(m.get("pred_amp_std")), _num(m.get("gt_amp_std"))
        if pred_std is not None and gt_std and pred_std < self.rel_std * gt_std:
            return VerdictKind.COLLAPSED, Evidence(
                self.name,
                f"predicted amplitude is constant: std {pred_std:.3g} < {self.rel_std:g} x "
                f"ground-truth std {gt_std:.3g}",
                value=pred_std,
                limit=self.rel_std * gt_std,
            )
        ssim, floor = _num(m.get("amp_ssim")), _num(m.get("amp_ssim_floor"))
        best, final = _num(s.get("best_val_loss")), _num(s.get("final_val_loss"))
        if None in (ssim, floor, best, final):
            return None
        if ssim <= floor + self.ssim_margin and final > self.relapse * best:
            return VerdictKind.COLLAPSED, Evidence(
                self.name,
                f"amp SSIM {ssim:.3f} at the constant-image floor {floor:.3f} and final val loss "
                f"{final:.4g} > {self.relapse:g} x best {best:.4g}",
                value=ssim,
                limit=floor + self.ssim_margin,
                epoch=s.get("best_val_epoch"),
            )
        return None


@dataclass(frozen=True)
class Learns:
    """Best val loss drops by ``min_drop`` (fraction) from its initial value and amp SSIM beats
    the constant-image floor."""

    min_drop: float = 0.1
    name: str = "learns"

    def check(self, obs: Observation) -> Failure | None:
        s, m = obs.stats, obs.metrics
        initial, best = _num(s.get("initial_val_loss")), _num(s.get("best_val_loss"))
        if initial is not None and best is not None and best > (1 - self.min_drop) * initial:
            return VerdictKind.STAGNATED, Evidence(
                self.name,
                f"best val loss {best:.4g} did not drop {self.min_drop:.0%} below its initial "
                f"{initial:.4g}",
                value=best,
                limit=(1 - self.min_drop) * initial,
            )
        ssim, floor = _num(m.get("amp_ssim")), _num(m.get("amp_ssim_floor"))
        if ssim is not None and floor is not None and ssim <= floor:
            return VerdictKind.STAGNATED, Evidence(
                self.name,
                f"amp SSIM {ssim:.3f} is not above the constant-image floor {floor:.3f}",
                value=ssim,
                limit=floor,
            )
        return None


@dataclass(frozen=True)
class NoWorseThan:
    """Best val loss and amp SSIM no worse than a reference arm's, within tolerance.

    ``reference`` holds ``best_val_loss`` and ``amp_ssim`` (e.g. Stage A's control). Val loss may
    be ``val_loss_rtol`` (relative) higher, SSIM ``ssim_atol`` (absolute) lower.
    """

    reference: Mapping[str, Any]
    reference_name: str = "reference"
    val_loss_rtol: float = 0.5
    ssim_atol: float = 0.035
    name: str = "no_worse_than_reference"

    def check(self, obs: Observation) -> Failure | None:
        problems = []
        ref_loss = _num(self.reference.get("best_val_loss"))
        loss = _num(obs.stats.get("best_val_loss"))
        if ref_loss is not None and loss is not None:
            limit = ref_loss * (1 + self.val_loss_rtol)
            if not loss <= limit:
                problems.append((f"best val loss {loss:.4g} > {limit:.4g}", loss, limit))
        ref_ssim, ssim = _num(self.reference.get("amp_ssim")), _num(obs.metrics.get("amp_ssim"))
        if ref_ssim is not None and ssim is not None:
            limit = ref_ssim - self.ssim_atol
            if not ssim >= limit:
                problems.append((f"amp SSIM {ssim:.3f} < {limit:.3f}", ssim, limit))
        if not problems:
            return None
        text = "; ".join(p[0] for p in problems)
        return VerdictKind.STAGNATED, Evidence(
            self.name,
            f"worse than {self.reference_name}: {text}",
            value=problems[0][1],
            limit=problems[0][2],
        )


DEFAULT_CRITERIA: tuple[Criterion, ...] = (
    Finite(),
    LossBounded(),
    GradNormBounded(),
    NoCollapse(),
    Learns(),
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


def judge(obs: Observation, criteria: Iterable[Criterion] = DEFAULT_CRITERIA) -> Verdict:
    """Apply ``criteria``; the verdict is the most severe failure, with all failures' evidence."""
    return Verdict.from_failures([f for c in criteria if (f := c.check(obs)) is not None])
