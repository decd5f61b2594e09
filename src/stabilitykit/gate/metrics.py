"""The gated metrics (direction and tolerance of each) and the numbers of one arm run.

A :class:`MetricRule` says which way a metric is better and how much worse than its baseline is
still noise. :data:`DEFAULT_RULES` holds the engine's own metrics (best val loss, pre-clip grad
norm p99), which every workload has. The workload's metrics come from the run record: its
``config.json`` carries a ``workload`` block (:class:`WorkloadDecl`) declaring each metric's
label, direction, default tolerance and trivial-predictor floor, and :func:`rules_from_config`
turns it into rules (engine rules plus one per declared metric with a tolerance). A record
without the block (written before workloads declared their metrics) gates the engine metrics
only. A benchmark overrides rules in one call::

    rules = run.rules.override(rel_l2=MetricRule("rel_l2", "lower", rel_tol=0.5))
    rules = DEFAULT_RULES.override({"grad_norm_preclip_p99": None})  # stop gating a metric

:class:`ArmRun` is what the gate reads of a run, built by :func:`arm_run` from a run record, a
run folder, an ``ArmResult`` or a stage-metrics row (a row carries its record's ``workload``
block under the same key), with the rules of its workload in ``ArmRun.rules`` and the
fingerprint of its numerics (``config["numerics"]``, :func:`numerics_of`) in ``ArmRun.numerics``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stabilitykit.record.run_record import (
    RunRecord,
    parse_created,
    read_record,
    time_of_name,
)

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


def as_rules(
    rules: Rules | Mapping[str, MetricRule] | Iterable[MetricRule] | None,
    run: ArmRun | None = None,
) -> Rules:
    """``rules`` as :class:`Rules`; ``None`` gives ``run.rules`` (the rules of the run's
    workload, from its record) when a run is given, else :data:`DEFAULT_RULES`."""
    if rules is None:
        return run.rules if run is not None else DEFAULT_RULES
    return rules if isinstance(rules, Rules) else Rules(rules)


def merged_rules(runs: Iterable[ArmRun]) -> Rules:
    """The union of the runs' rules (the first run's rule wins for a metric they share); the
    engine's :data:`DEFAULT_RULES` when there are no runs."""
    merged: dict[str, MetricRule] = {}
    for run in runs:
        for name, rule in run.rules.items():
            merged.setdefault(name, rule)
    return Rules(merged.values()) if merged else DEFAULT_RULES


DEFAULT_RULES = Rules(
    [
        # The engine's own metrics, which every workload has. A workload's metrics (and their
        # tolerances) come from the record's ``workload`` block: rules_from_config.
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


# --- the workload's metric declarations ---------------------------------------------------------


@dataclass(frozen=True)
class DeclaredMetric:
    """One judged metric as the record's ``workload`` block declares it: ``label`` for people,
    which way is better, the default gate tolerance and ``floor``, the name of the diagnostic
    that holds the trivial predictor's value of this metric (or ``None``)."""

    name: str
    direction: Direction
    label: str = ""
    abs_tol: float | None = None
    rel_tol: float | None = None
    floor: str | None = None

    @property
    def title(self) -> str:
        """The label, or the name when the block gave no label."""
        return self.label or self.name

    def rule(self) -> MetricRule | None:
        """The gate rule of this metric; ``None`` when it declares no tolerance."""
        if self.abs_tol is None and self.rel_tol is None:
            return None
        return MetricRule(self.name, self.direction, self.abs_tol, self.rel_tol)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.title,
            "direction": self.direction,
            "abs_tol": self.abs_tol,
            "rel_tol": self.rel_tol,
            "floor": self.floor,
        }


@dataclass(frozen=True)
class WorkloadDecl:
    """The ``workload`` block of a run's ``config.json`` (or of a stage-metrics row)::

        {"name": "darcy", "fingerprint": "16 hex", "primary_metric": "rel_l2",
         "metrics": [{"name": "rel_l2", "label": "rel L2", "direction": "lower",
                      "abs_tol": null, "rel_tol": 0.2, "floor": "rel_l2_floor"}, ...],
         "diagnostics": ["rel_l2_floor", ...], "collapse_std": ["pred_std", "true_std"]}

    ``metrics`` are the judged metrics in display order; ``diagnostics`` other values of
    ``metrics.json``, shown and never gated; ``collapse_std`` (optional) the metrics holding the
    prediction's and the truth's std. A record without the block reads as the empty declaration
    (``declared`` False). :meth:`from_block` keeps what it can of a malformed block and lists
    what it dropped in ``problems``."""

    name: str | None = None
    fingerprint: str | None = None
    primary_metric: str | None = None
    metrics: tuple[DeclaredMetric, ...] = ()
    diagnostics: tuple[str, ...] = ()
    collapse_std: tuple[str, str] | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def declared(self) -> bool:
        return self.name is not None or bool(self.metrics)

    @property
    def primary(self) -> DeclaredMetric | None:
        """The primary metric's declaration (the first metric when the block names none)."""
        for m in self.metrics:
            if m.name == self.primary_metric:
                return m
        return self.metrics[0] if self.metrics else None

    def metric(self, name: str) -> DeclaredMetric | None:
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def floors(self) -> tuple[str, ...]:
        return tuple(m.floor for m in self.metrics if m.floor)

    def rules(self) -> Rules:
        """:data:`DEFAULT_RULES` plus one rule per declared metric with a tolerance (a
        declaration of an engine metric replaces the engine's rule); workload metrics first."""
        own = [rule for m in self.metrics if (rule := m.rule()) is not None]
        if not own:
            return DEFAULT_RULES
        names = {r.name for r in own}
        return Rules([*own, *(r for k, r in DEFAULT_RULES.items() if k not in names)])

    def to_json(self) -> dict[str, Any] | None:
        """The block as written to a stage-metrics row; ``None`` when nothing was declared."""
        if not self.declared:
            return None
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "primary_metric": self.primary_metric,
            "metrics": [m.to_json() for m in self.metrics],
            "diagnostics": list(self.diagnostics),
            "collapse_std": list(self.collapse_std) if self.collapse_std else None,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WorkloadDecl:
        """The declaration in ``config["workload"]`` (a ``config.json`` or a stage-metrics
        row); the empty one when there is no block."""
        return cls.from_block(config.get("workload") if isinstance(config, Mapping) else None)

    @classmethod
    def from_block(cls, block: Any) -> WorkloadDecl:
        if block is None:
            return cls()
        if not isinstance(block, Mapping):
            return cls(problems=(f"workload: got {_kind(block)}; expected an object",))
        problems: list[str] = []
        metrics: list[DeclaredMetric] = []
        entries = block.get("metrics", [])
        if not isinstance(entries, (list, tuple)):
            problems.append(f"workload.metrics: got {_kind(entries)}; expected a list")
            entries = []
        for i, entry in enumerate(entries):
            try:
                metric = _declared_metric(entry)
            except ValueError as exc:
                problems.append(f"workload.metrics[{i}]: {exc}")
                continue
            if any(m.name == metric.name for m in metrics):
                problems.append(f"workload.metrics[{i}]: metric {metric.name!r} given twice")
                continue
            metrics.append(metric)
        diagnostics = block.get("diagnostics") or []
        if not isinstance(diagnostics, (list, tuple)):
            problems.append(f"workload.diagnostics: got {_kind(diagnostics)}; expected a list")
            diagnostics = []
        std = block.get("collapse_std")
        ok_std = isinstance(std, (list, tuple)) and len(std) == 2 and all(_name(s) for s in std)
        if std is not None and not ok_std:
            problems.append(f"workload.collapse_std: got {_kind(std)}; expected two names")
        return cls(
            name=_text(block.get("name")),
            fingerprint=_text(block.get("fingerprint")),
            primary_metric=_text(block.get("primary_metric")),
            metrics=tuple(metrics),
            diagnostics=tuple(d for d in diagnostics if _name(d)),
            collapse_std=(std[0], std[1]) if ok_std else None,
            problems=tuple(problems),
        )


def _kind(x: Any) -> str:
    return "null" if x is None else f"{type(x).__name__} {x!r}"[:80]


def _name(x: Any) -> bool:
    return isinstance(x, str) and bool(x)


def _text(x: Any) -> str | None:
    return x if _name(x) else None


def _declared_metric(entry: Any) -> DeclaredMetric:
    if not isinstance(entry, Mapping) or not _name(entry.get("name")):
        raise ValueError(f"got {_kind(entry)}; expected an object with a name")
    name, direction = entry["name"], entry.get("direction")
    if direction not in DIRECTIONS:
        raise ValueError(f"{name}: direction {direction!r}; allowed: one of {DIRECTIONS}")
    tolerances = {}
    for key in ("abs_tol", "rel_tol"):
        value = entry.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"{name}: {key} {value!r}; allowed: a finite number >= 0 or null")
        tolerances[key] = value
    floor, label = entry.get("floor"), entry.get("label")
    return DeclaredMetric(
        name,
        direction,
        label=label if _name(label) else "",
        floor=floor if _name(floor) else None,
        **tolerances,
    )


def workload_of(config: Mapping[str, Any]) -> WorkloadDecl:
    """:meth:`WorkloadDecl.from_config`: the declaration of a config or stage-metrics row."""
    return WorkloadDecl.from_config(config)


def rules_from_config(config: Mapping[str, Any]) -> Rules:
    """:data:`DEFAULT_RULES` plus one :class:`MetricRule` per entry of
    ``config["workload"]["metrics"]`` (entries with neither tolerance are not gated). A config
    without the block gives :data:`DEFAULT_RULES`; a malformed block raises ``ValueError``
    naming the entry."""
    decl = WorkloadDecl.from_config(config)
    if decl.problems:
        raise ValueError("; ".join(decl.problems))
    return decl.rules()


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
    # The gate's rules for this run: its workload's declared metrics plus the engine's.
    rules: Rules = field(default_factory=lambda: DEFAULT_RULES, repr=False)
    # When the run began (UTC), where known: its record's ``created`` (see newest_per_arm).
    created: dt.datetime | None = None
    # What its bits depend on (numerics mode, torch, machine): two runs of one arm hash with the
    # same fingerprint give identical numbers. ``None``: unknown (a record without the block),
    # equal to nothing. ``numerics_label`` describes it for people.
    numerics: str | None = None
    numerics_label: str = ""

    @property
    def family_id(self) -> str:
        """The arm id without its seed suffix: the readable name of the seed family."""
        return family_id(self.arm_id)


def numerics_of(config: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(fingerprint, description)`` of the ``numerics`` block of a ``config.json`` (or a
    stage-metrics row)::

        {"mode": "portable", "fingerprint": "16 hex", "torch": "2.13.0+cpu", "machine": "x86_64",
         "device": "cpu", "threads": 2, "aten_capability": "AVX2", ...}

    ``(None, "unknown")`` without a block or a fingerprint (records before stabilitykit 0.4)."""
    block = config.get("numerics") if isinstance(config, Mapping) else None
    if not isinstance(block, Mapping) or not _name(block.get("fingerprint")):
        return None, "unknown"
    mode = block.get("mode") if _name(block.get("mode")) else "mode unknown"
    keys = _NUMERICS_DESCRIBED + (("cpu_model",) if mode == "native" else ())
    details = [f"{k} {block[k]}" for k in keys if isinstance(block.get(k), (str, int, float))]
    text = f"{mode} {block['fingerprint']}"
    return block["fingerprint"], f"{text} ({', '.join(details)})" if details else text


# The entries of a numerics block that describe it for people (the fingerprint covers them all).
_NUMERICS_DESCRIBED = (
    "torch",
    "machine",
    "device",
    "device_name",
    "threads",
    "aten_capability",
    "onednn_isa",
    "mkl_branch",
)


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
    try:
        rules = rules_from_config(config)
    except ValueError as exc:
        raise ValueError(f"{record.path}: config.json: {exc}") from None
    numerics = numerics_of(config)
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
        rules=rules,
        created=record.created,
        numerics=numerics[0],
        numerics_label=numerics[1],
    )


_ROW_IDENTITY = frozenset(
    {
        "arm_id",
        "arm_name",
        "arm_hash",
        "family_hash",
        "seed",
        "scale",
        "arm",
        "workload",
        "numerics",
    }
)


def _from_row(row: Mapping[str, Any]) -> ArmRun:
    missing = [k for k in ("arm_id", "arm_hash", "family_hash", "verdict") if not row.get(k)]
    if missing:
        who = row.get("arm_id") or row.get("run") or "?"
        raise ValueError(f"metrics row {who}: no {', '.join(missing)}")
    seed = row.get("seed")
    try:
        rules = rules_from_config(row)
    except ValueError as exc:
        raise ValueError(f"metrics row {row['arm_id']}: {exc}") from None
    numerics = numerics_of(row)
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
        rules=rules,
        created=parse_created(row.get("created")),
        numerics=numerics[0],
        numerics_label=numerics[1],
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


_NO_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)


def run_time(run: ArmRun) -> dt.datetime:
    """When ``run`` began: its recorded ``created``, else the time in its run folder's name
    (``<arm id>-<UTC time>-<random>``), else the earliest time."""
    return run.created or time_of_name(Path(run.source).name) or _NO_TIME


def newest_per_arm(runs: Iterable[ArmRun]) -> list[ArmRun]:
    """One run per ``arm_hash``: the complete one that began last (:func:`run_time`; the
    source name breaks a tie), else the newest half-written one; sorted by arm id."""
    best: dict[str, ArmRun] = {}
    for run in runs:
        old = best.get(run.arm_hash)
        key = (run.complete, run_time(run), Path(run.source).name)
        if old is None or key > (old.complete, run_time(old), Path(old.source).name):
            best[run.arm_hash] = run
    return sorted(best.values(), key=lambda r: (r.arm_id, r.arm_hash))
