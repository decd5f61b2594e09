"""The gated metrics (direction and tolerance of each) and the numbers of one arm run.

A :class:`MetricRule` says which way a metric is better and how much worse than its baseline is
still noise. :data:`DEFAULT_RULES` follows the original study's gates (DOMAIN.md §6); a benchmark
overrides them in one call::

    rules = DEFAULT_RULES.override(amp_ssim=MetricRule("amp_ssim", "higher", abs_tol=0.05))
    rules = DEFAULT_RULES.override({"grad_norm_preclip_p99": None})  # stop gating a metric

:class:`ArmRun` is what the gate reads of a run, built by :func:`arm_run` from a run record, a
run folder, an ``ArmResult`` or a stage-metrics row.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stabilitykit.record.run_record import RunRecord, read_record

Direction = Literal["lower", "higher"]
DIRECTIONS: tuple[str, ...] = ("lower", "higher")
_SEED_SUFFIX = re.compile(r"-seed\d+$")


@dataclass(frozen=True)
class MetricRule:
    """How one metric is gated.

    The allowed change from a reference value ``ref`` is ``abs_tol + rel_tol * |ref|`` (a missing
    tolerance counts as 0; at least one must be given), the form of ``numpy.isclose``. The gate is
    one-sided: a move the better way never fails.
    """

    name: str
    direction: Direction
    abs_tol: float | None = None
    rel_tol: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"MetricRule.name: got {self.name!r}; allowed: a metric name")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"MetricRule({self.name!r}).direction: got {self.direction!r}; allowed: one of "
                f"{DIRECTIONS}"
            )
        for key in ("abs_tol", "rel_tol"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(
                    f"MetricRule({self.name!r}).{key}: got {value!r}; allowed: a finite "
                    "number >= 0 or None"
                )
        if self.abs_tol is None and self.rel_tol is None:
            raise ValueError(f"MetricRule({self.name!r}): give abs_tol, rel_tol or both")

    def tolerance(self, reference: float) -> float:
        """How much worse than ``reference`` still passes."""
        return (self.abs_tol or 0.0) + (self.rel_tol or 0.0) * abs(reference)

    def limit(self, reference: float, spread: float = 0.0) -> float:
        """The worst value that passes: ``reference`` moved the worse way by the tolerance plus
        ``spread`` (the baseline's IQR over seeds, 0 for one seed)."""
        margin = self.tolerance(reference) + spread
        return reference + margin if self.direction == "lower" else reference - margin

    def is_worse(self, value: float, limit: float) -> bool:
        """``value`` lies beyond ``limit`` on the worse side."""
        return value > limit if self.direction == "lower" else value < limit

    def is_better(self, value: float, reference: float, spread: float = 0.0) -> bool:
        """``value`` beats ``reference`` by more than the tolerance (worth a new baseline)."""
        margin = self.tolerance(reference) + spread
        if self.direction == "lower":
            return value < reference - margin
        return value > reference + margin

    def describe(self) -> str:
        return f"{self.direction} is better"


class Rules(Mapping[str, MetricRule]):
    """An immutable registry of metric rules, by metric name."""

    def __init__(self, rules: Iterable[MetricRule] | Mapping[str, MetricRule] = ()) -> None:
        items = list(rules.values()) if isinstance(rules, Mapping) else list(rules)
        if isinstance(rules, Mapping):
            for key, rule in rules.items():
                _check_entry(key, rule)
        self._rules: dict[str, MetricRule] = {}
        for rule in items:
            if not isinstance(rule, MetricRule):
                raise TypeError(f"Rules: expected MetricRule, got {type(rule).__name__}")
            if rule.name in self._rules:
                raise ValueError(f"Rules: metric {rule.name!r} given twice")
            self._rules[rule.name] = rule

    def override(
        self, changes: Mapping[str, MetricRule | None] | None = None, /, **more: MetricRule | None
    ) -> Rules:
        """A copy with rules replaced or added; a value of ``None`` removes that metric."""
        merged = dict(self._rules)
        for key, rule in {**(changes or {}), **more}.items():
            if rule is None:
                merged.pop(key, None)
                continue
            _check_entry(key, rule)
            merged[key] = rule
        return Rules(merged.values())

    def __getitem__(self, name: str) -> MetricRule:
        return self._rules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"Rules({list(self._rules.values())!r})"


def _check_entry(key: str, rule: Any) -> None:
    if not isinstance(rule, MetricRule):
        raise TypeError(f"Rules[{key!r}]: expected MetricRule or None, got {type(rule).__name__}")
    if rule.name != key:
        raise ValueError(f"Rules[{key!r}]: the rule is for metric {rule.name!r}")


def as_rules(rules: Rules | Mapping[str, MetricRule] | Iterable[MetricRule] | None) -> Rules:
    """``rules`` as :class:`Rules`; ``None`` gives :data:`DEFAULT_RULES`."""
    if rules is None:
        return DEFAULT_RULES
    return rules if isinstance(rules, Rules) else Rules(rules)


DEFAULT_RULES = Rules(
    [
        # Image metrics: the original study's absolute gates (DOMAIN.md §6).
        MetricRule("amp_mae", "lower", abs_tol=0.015),
        MetricRule("phase_mae", "lower", abs_tol=0.025),
        MetricRule("amp_ssim", "higher", abs_tol=0.035),
        MetricRule("phase_ssim", "higher", abs_tol=0.015),
        # Val loss spans orders of magnitude across scales, so relative. A replicate of one seed
        # repeats to float noise on one machine, and seeds differ by well under 25 %; the
        # smallest harm the study saw (AGC vs control, 0.0138 -> 0.0243, +76 %) is three times
        # beyond it, a collapse (x13) far beyond.
        MetricRule("best_val_loss", "lower", rel_tol=0.25),
        # Gradient regime: the study's fallback had p99 at 2.7x the median; a doubled p99 means
        # spikes that clipping hides from the loss, a spiking arm is orders of magnitude up.
        MetricRule("grad_norm_preclip_p99", "lower", rel_tol=1.0),
    ]
)


# --- the numbers of one run ---------------------------------------------------------------------


@dataclass(frozen=True)
class ArmRun:
    """What the gate reads of one run: who it is, its verdict and its numbers.

    ``values`` maps metric names to finite floats; a metric the run logged as NaN or infinity is
    present as ``None``. ``family_hash`` is the arm's hash without the seed (equal for every seed
    replicate); ``arm_hash`` includes it.
    """

    arm_id: str
    arm_name: str
    arm_hash: str
    family_hash: str
    seed: int | None
    scale: str | None
    verdict: str
    values: Mapping[str, float | None] = field(default_factory=dict)
    stage: str | None = None
    complete: bool = True
    source: str = ""
    arm: Mapping[str, Any] = field(default_factory=dict)  # the arm's fields, where recorded

    @property
    def family_id(self) -> str:
        """The arm id without its seed suffix: the readable name of the seed family."""
        return family_id(self.arm_id)


def family_id(arm_id: str) -> str:
    """``"control-hybrid-b4-seed20260128"`` -> ``"control-hybrid-b4"``."""
    return _SEED_SUFFIX.sub("", arm_id)


def as_number(x: Any) -> float | None:
    """``x`` as a finite float; ``None`` for NaN, infinities, bools, text and anything else."""
    if isinstance(x, bool):
        return None
    if isinstance(x, str):
        try:
            x = float(x.replace("Infinity", "inf"))
        except ValueError:
            return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _values(*sources: Mapping[str, Any]) -> dict[str, float | None]:
    """Numeric entries of ``sources`` (later ones win); non-finite numbers kept as ``None``."""
    out: dict[str, float | None] = {}
    for source in sources:
        for key, value in source.items():
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                number = as_number(value)
                if number is not None or not isinstance(value, str) or _is_nonfinite(value):
                    out[key] = number
    return out


def _is_nonfinite(text: str) -> bool:
    return text.strip().lower().lstrip("+-") in {"nan", "inf", "infinity"}


def arm_run(source: ArmRun | RunRecord | Mapping[str, Any] | str | os.PathLike | Any) -> ArmRun:
    """The :class:`ArmRun` of ``source``: a run record, a run folder, an ``ArmResult`` (anything
    with ``run_dir``), or a stage-metrics row (a mapping with ``arm_id``, ``arm_hash``,
    ``family_hash``, ``verdict`` and metric values). Raises ``ValueError`` naming what is missing.
    """
    if isinstance(source, ArmRun):
        return source
    if isinstance(source, RunRecord):
        return _from_record(source)
    if isinstance(source, (str, os.PathLike)):
        return _from_record(read_record(source))
    if isinstance(source, Mapping):
        return _from_row(source)
    if hasattr(source, "run_dir"):
        return _from_record(read_record(source.run_dir))
    raise TypeError(
        "arm_run: expected an ArmRun, RunRecord, run folder, ArmResult or metrics row, got "
        f"{type(source).__name__}"
    )


def _from_record(record: RunRecord) -> ArmRun:
    config = record.config
    arm = config.get("arm") if isinstance(config.get("arm"), dict) else {}
    missing = [k for k in ("arm_id", "arm_hash", "family_hash") if not config.get(k)]
    if missing:
        raise ValueError(f"{record.path}: config.json has no {', '.join(missing)}")
    seed = arm.get("seed")
    tags = config.get("tags") if isinstance(config.get("tags"), dict) else {}
    return ArmRun(
        arm_id=config["arm_id"],
        arm_name=arm.get("name", family_id(config["arm_id"])),
        arm_hash=config["arm_hash"],
        family_hash=config["family_hash"],
        seed=seed if isinstance(seed, int) else None,
        scale=config.get("scale", arm.get("scale")),
        verdict=record.verdict.kind.value,
        values=_values(record.stats, record.metrics),
        stage=tags.get("stage"),
        complete=record.complete,
        source=str(record.path),
        arm=arm,
    )


_ROW_IDENTITY = frozenset({"arm_id", "arm_name", "arm_hash", "family_hash", "seed", "scale", "arm"})


def _from_row(row: Mapping[str, Any]) -> ArmRun:
    missing = [k for k in ("arm_id", "arm_hash", "family_hash", "verdict") if not row.get(k)]
    if missing:
        who = row.get("arm_id") or row.get("run") or "?"
        raise ValueError(f"metrics row {who}: no {', '.join(missing)}")
    seed = row.get("seed")
    return ArmRun(
        arm_id=row["arm_id"],
        arm_name=row.get("arm_name") or family_id(row["arm_id"]),
        arm_hash=row["arm_hash"],
        family_hash=row["family_hash"],
        seed=int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None,
        scale=row.get("scale"),
        verdict=str(row["verdict"]),
        values=_values({k: v for k, v in row.items() if k not in _ROW_IDENTITY}),
        stage=row.get("stage"),
        complete=bool(row.get("complete", True)),
        source=str(row.get("run", "")),
        arm=row["arm"] if isinstance(row.get("arm"), dict) else {},
    )


NOT_FAMILY = frozenset({"name", "scale", "seed"})  # arm fields outside the family hash


def family_fields(arm: Mapping[str, Any]) -> dict[str, Any]:
    """The arm's fields that make its family hash (all but name, scale and seed)."""
    return {k: v for k, v in arm.items() if k not in NOT_FAMILY}


def arm_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """``(field, old, new)`` for each arm field that differs (nested ones as ``data.N``)."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += arm_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def newest_per_arm(runs: Iterable[ArmRun]) -> list[ArmRun]:
    """One run per ``arm_hash``: the complete one with the greatest source name (run folders are
    named by start time), else the newest half-written one; sorted by arm id."""
    best: dict[str, ArmRun] = {}
    for run in runs:
        old = best.get(run.arm_hash)
        key = (run.complete, Path(run.source).name)
        if old is None or key > (old.complete, Path(old.source).name):
            best[run.arm_hash] = run
    return sorted(best.values(), key=lambda r: (r.arm_id, r.arm_hash))
