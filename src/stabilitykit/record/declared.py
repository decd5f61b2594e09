"""What a run record declares about its metrics: the ``workload`` block of ``config.json``
(:class:`WorkloadDecl`: each metric's label, direction, default tolerance and trivial-predictor
floor, the architectures and the workload's own mitigations) and the rules that follow from it
(:class:`MetricRule`, :class:`Rules`; :data:`DEFAULT_RULES` for the engine's own metrics, which
every workload has). The gate and the reports both read records through this module; neither
imports the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["lower", "higher"]
DIRECTIONS: tuple[str, ...] = ("lower", "higher")


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
    prediction's and the truth's std; ``architectures`` (architecture -> its default model
    fields) and ``mitigations`` (``{"text", "changes"}`` each: the workload's own levers against
    instability) say what the report may recommend (empty in an older record). A record without
    the block reads as the empty declaration (``declared`` False). :meth:`from_block` keeps
    what it can of a malformed block and lists what it dropped in ``problems``."""

    name: str | None = None
    fingerprint: str | None = None
    primary_metric: str | None = None
    metrics: tuple[DeclaredMetric, ...] = ()
    diagnostics: tuple[str, ...] = ()
    collapse_std: tuple[str, str] | None = None
    architectures: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    mitigations: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
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
            "architectures": {a: dict(d) for a, d in self.architectures.items()},
            "mitigations": [dict(m) for m in self.mitigations],
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
        ok_std = isinstance(std, (list, tuple)) and len(std) == 2 and all(is_name(s) for s in std)
        if std is not None and not ok_std:
            problems.append(f"workload.collapse_std: got {_kind(std)}; expected two names")
        architectures = block.get("architectures") or {}
        if not isinstance(architectures, Mapping) or not all(
            is_name(a) and isinstance(d, Mapping) for a, d in architectures.items()
        ):
            problems.append(
                f"workload.architectures: got {_kind(architectures)}; expected an object of objects"
            )
            architectures = {}
        mitigations: list[dict[str, Any]] = []
        entries = block.get("mitigations") or []
        if not isinstance(entries, (list, tuple)):
            problems.append(f"workload.mitigations: got {_kind(entries)}; expected a list")
            entries = []
        for i, entry in enumerate(entries):
            if (
                isinstance(entry, Mapping)
                and is_name(entry.get("text"))
                and isinstance(entry.get("changes"), Mapping)
            ):
                mitigations.append({"text": entry["text"], "changes": dict(entry["changes"])})
            else:
                problems.append(
                    f"workload.mitigations[{i}]: got {_kind(entry)}; expected text and changes"
                )
        return cls(
            name=_text(block.get("name")),
            fingerprint=_text(block.get("fingerprint")),
            primary_metric=_text(block.get("primary_metric")),
            metrics=tuple(metrics),
            diagnostics=tuple(d for d in diagnostics if is_name(d)),
            collapse_std=(std[0], std[1]) if ok_std else None,
            architectures={a: dict(d) for a, d in architectures.items()},
            mitigations=tuple(mitigations),
            problems=tuple(problems),
        )


def _kind(x: Any) -> str:
    return "null" if x is None else f"{type(x).__name__} {x!r}"[:80]


def is_name(x: Any) -> bool:
    """A non-empty string."""
    return isinstance(x, str) and bool(x)


def _text(x: Any) -> str | None:
    return x if is_name(x) else None


def _declared_metric(entry: Any) -> DeclaredMetric:
    if not isinstance(entry, Mapping) or not is_name(entry.get("name")):
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
        label=label if is_name(label) else "",
        floor=floor if is_name(floor) else None,
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
