"""What the gate can detect: per gated metric of each arm in a baseline, its spread over seeds and
the smallest regression one run is called regressed for.

- **same machine** (same seed and numerics fingerprint: seed against seed): any move beyond the
  tolerance, calibrated from the seeds' spread (``BaselineEntry.tolerance``); the seed repeats
  exactly, so such a move is always caught.
- **across machines** (one run against the seeds' spread,
  :func:`~stabilitykit.gate.spread.judge_value`): a run is called regressed beyond
  :func:`~stabilitykit.gate.spread.regression_threshold` of the median; a regression that moves
  the arm's mean by that much is caught one time in two, and one that moves it by
  ``threshold + 0.84 std`` four times in five (one run, normal spread). Below
  ``MIN_SEEDS`` seeds nothing is decided across machines.

``stabilitykit power BASELINE...`` prints the table of docs/criteria.md ("What the gate can
detect")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stabilitykit.gate.baseline import Baseline, BaselineEntry
from stabilitykit.gate.metrics import DEFAULT_RULES, Rules
from stabilitykit.gate.spread import MIN_SEEDS, regression_threshold

#: The standard normal's 80 % quantile: a shift this many std past the threshold is caught 4 in 5.
Z_80 = 0.8416


@dataclass(frozen=True)
class MetricPower:
    """One gated metric of one arm. ``same_machine``: the tolerance of a same-seed comparison;
    ``across``: the move from the median beyond which one run is regressed against the seeds'
    spread, ``across_80`` the shift of the arm's mean caught 4 times in 5 (both ``None`` below
    ``MIN_SEEDS`` seeds). Values in the metric's unit."""

    arm_id: str
    metric: str
    direction: str
    n: int
    median: float
    std: float | None
    same_machine: float
    same_machine_how: str
    across: float | None
    across_80: float | None


@dataclass(frozen=True)
class VerdictPower:
    """The verdict of one arm: failures over its decided seeds, and what one failed run is."""

    arm_id: str
    n: int
    failures: int

    @property
    def across(self) -> str:
        if self.failures == 0 and self.n >= MIN_SEEDS:
            return "any failure"
        return "not decided" + (
            f" (failed at {self.failures} of {self.n})"
            if self.failures
            else f" (< {MIN_SEEDS} seeds)"
        )


RulesOf = Rules | Callable[[BaselineEntry], Rules] | None


def power_table(
    baseline: Baseline, rules: RulesOf = None
) -> list[tuple[VerdictPower, list[MetricPower]]]:
    """Per entry of ``baseline`` (by arm id): its verdict's and each gated metric's power under
    ``rules`` (a :class:`Rules`, a function of the entry, or ``None``: the engine's
    :data:`DEFAULT_RULES`); metrics the entry lacks are left out."""
    out = []
    for entry in sorted(baseline.entries.values(), key=lambda e: e.arm_id):
        entry_rules = rules(entry) if callable(rules) else rules or DEFAULT_RULES
        rows = []
        for name, rule in entry_rules.items():
            values = entry.values(name)
            if not values:
                continue
            median = float(np.median(values))
            std = float(np.std(values, ddof=1)) if len(values) > 1 else None
            same, how = entry.tolerance(name, rule.tolerance(median))
            across = regression_threshold(values, rule)
            beyond = None if across is None or std is None else across + Z_80 * std
            rows.append(
                MetricPower(
                    entry.arm_id, name, rule.direction, len(values), median, std, same, how,
                    across, beyond,
                )
            )  # fmt: skip
        out.append((VerdictPower(entry.arm_id, entry.n, entry.failures), rows))
    return out


def _num(x: float | None, median: float | None = None) -> str:
    if x is None:
        return "not decided"
    text = f"{x:.3g}"
    return f"{text} ({x / abs(median):.0%})" if median else text


def power_markdown(
    tables: Sequence[tuple[str, list[tuple[VerdictPower, list[MetricPower]]]]],
) -> str:
    """The table of docs/criteria.md: one block of rows per ``(stage label, power_table(...))``.
    Relative sizes are of the median."""
    head = (
        "| stage | arm | metric | better | seeds | median | std over seeds | same machine: "
        "regressed beyond | across machines, 1 run: regressed beyond | caught 4 in 5 at |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for stage, table in tables:
        for verdict, rows in table:
            failed = f"failed at {verdict.failures} of {verdict.n}"
            lines.append(
                f"| {stage} | {verdict.arm_id} | verdict | stable | {verdict.n} | {failed} | | "
                f"a worse verdict | {verdict.across} | |"
            )
            for r in rows:
                std = "" if r.std is None else f"{r.std:.3g}"
                lines.append(
                    f"| {stage} | {r.arm_id} | {r.metric} | {r.direction} | {r.n} | "
                    f"{r.median:.4g} | {std} | {_num(r.same_machine, r.median)} | "
                    f"{_num(r.across, r.median)} | "
                    f"{_num(r.across_80, r.median) if r.across_80 is not None else ''} |"
                )
    return head + "\n".join(lines) + "\n"
