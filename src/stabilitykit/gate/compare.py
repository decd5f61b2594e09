"""The gate: hold an arm run against its baseline entry, metric by metric, one-sided.

A metric fails when it is worse than its baseline beyond the rule's tolerance (better never
fails); the baseline is the same seed's value when the entry has that seed, else the median over
seeds with the limit widened by the IQR. A verdict that worsens (stable to anything else) always
fails. Over seeds, the failure rate fails when it exceeds the baseline's 95 % Wilson upper bound.

An arm without an entry is ``missing``; an arm whose id has an entry under another hash is ``not
comparable`` (it changed; the numbers against the old entry are shown for information only). The
caller decides whether either fails (``GateResult.ok(require_baseline=...)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from stabilitykit.gate.baseline import STABLE, Baseline, BaselineEntry, render_text
from stabilitykit.gate.metrics import (
    ArmRun,
    Rules,
    arm_changes,
    arm_run,
    as_rules,
    family_fields,
)
from stabilitykit.judge.verdict import SEVERITY, VerdictKind

OK, WORSE, BETTER = "ok", "worse", "better"
NO_VALUE = "no value"  # the baseline has the metric, the run has none (or NaN): fails
NOT_IN_BASELINE = "not in baseline"  # a metric gated now that the baseline lacks: shown only
# a seed the baseline never ran, against fewer seeds than calibrate a spread: shown only (one
# seed's value says nothing about another seed's)
OTHER_SEED = "other seed"
_STYLE = {
    WORSE: "bold red",
    NO_VALUE: "bold red",
    BETTER: "green",
    OK: "",
    NOT_IN_BASELINE: "dim",
    OTHER_SEED: "dim",
}


class GateStatus(StrEnum):
    PASSED = "passed"
    REGRESSED = "regressed"
    MISSING = "missing"
    NOT_COMPARABLE = "not comparable"


@dataclass(frozen=True)
class Check:
    """One row of the diff table: a metric (or the verdict) against its baseline.

    ``limit`` is the worst value that passes; ``reference`` says what ``baseline`` is (a seed or
    a median over seeds)."""

    name: str
    baseline: float | str | None
    now: float | str | None
    limit: float | str | None
    direction: str
    status: str
    reference: str = ""
    spread: float = 0.0  # the baseline's IQR over seeds, added to the tolerance
    tolerance: str = ""  # the tolerance used and how it was set (declared or calibrated)

    @property
    def worse(self) -> bool:
        return self.status in (WORSE, NO_VALUE)


@dataclass(frozen=True)
class GateResult:
    """The gate's answer for one arm run."""

    arm_id: str
    seed: int | None
    status: GateStatus
    reason: str
    family_hash: str
    entry_hash: str | None = None  # the baseline entry it was matched with, if any
    checks: tuple[Check, ...] = ()
    reference: str = ""
    baseline: str = ""

    @property
    def passed(self) -> bool:
        return self.status is GateStatus.PASSED

    @property
    def regressions(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.worse)

    @property
    def improvements(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == BETTER)

    def ok(self, require_baseline: bool = False) -> bool:
        """False on a regression; on a missing or not-comparable entry, ``not require_baseline``."""
        if self.status is GateStatus.REGRESSED:
            return False
        return self.passed or not require_baseline

    def summary(self) -> str:
        return f"{self.arm_id}: {self.status.value}: {self.reason}"

    @property
    def title(self) -> str:
        return f"{self.arm_id} vs {self.baseline}: {self.reference}"

    def rich_table(self, box: Any = None, title: bool = True) -> Any:
        """The diff table (rich): metric, baseline, now, limit, direction, status."""
        from rich import box as boxes
        from rich.table import Table
        from rich.text import Text

        table = Table(
            title=Text(self.title) if title else None,
            title_justify="left",
            box=box or boxes.SIMPLE_HEAD,
        )
        for column in ("metric", "baseline", "now", "limit", "direction", "status"):
            table.add_column(column, justify="right" if column in ("baseline", "now") else "left")
        for c in self.checks:
            baseline = _fmt(c.baseline)
            if c.spread:
                baseline += f" (IQR {c.spread:.3g})"
            if c.name != "verdict" and c.reference not in self.reference:
                baseline += f" ({c.reference})"
            row = (c.name, baseline, _fmt(c.now), _fmt(c.limit), c.direction, c.status)
            table.add_row(*map(Text, row), style=_STYLE.get(c.status, ""))
        return table

    def table(self, width: int = 100) -> str:
        """The diff table as plain text, under its title line; empty without checks."""
        from rich import box

        if not self.checks:
            return ""
        return f"{self.title}\n" + render_text(self.rich_table(box.ASCII, title=False), width)

    def render(self, width: int = 100) -> str:
        """Summary line and diff table, as plain text: for a pytest failure message."""
        return f"{self.summary()}\n{self.table(width)}".rstrip() + "\n"

    def __str__(self) -> str:
        return self.render()


def _fmt(x: float | str | None) -> str:
    if x is None:
        return "-"
    return f"{x:.5g}" if isinstance(x, float) else str(x)


def _worse_verdict(now: str, baseline: str) -> bool:
    order = [k.value for k in SEVERITY]
    if now == baseline or baseline not in order or now not in order:
        return now != baseline and baseline == STABLE
    return order.index(now) < order.index(baseline)


def _verdict_check(run: ArmRun, entry: BaselineEntry) -> Check:
    direction = "stable is better"
    seed = entry.seeds.get(run.seed) if run.seed is not None else None
    if seed is not None:
        worse = _worse_verdict(run.verdict, seed.verdict)
        better = run.verdict == STABLE and seed.verdict != STABLE
        status = WORSE if worse else BETTER if better else OK
        limit, reference = f"no worse than {seed.verdict}", f"seed {seed.seed}"
        return Check("verdict", seed.verdict, run.verdict, limit, direction, status, reference)
    # A seed the baseline never ran: held against all its seeds. Where some of them failed
    # already, one more failure is a matter for the failure rate.
    verdicts = ", ".join(f"{v} {k}" for k, v in entry.verdicts.items())
    reference = "all seeds"
    if entry.n and entry.failures == 0:
        status = OK if run.verdict == STABLE else WORSE
        return Check("verdict", verdicts, run.verdict, STABLE, direction, status, reference)
    status = BETTER if run.verdict == STABLE and entry.n and entry.failures == entry.n else OK
    return Check("verdict", verdicts, run.verdict, "failure rate", direction, status, reference)


def _metric_checks(run: ArmRun, entry: BaselineEntry, rules: Rules) -> list[Check]:
    checks = []
    for name, rule in rules.items():
        ref = entry.reference(name, run.seed)
        now = run.values.get(name)
        if ref is None:
            if now is not None:
                checks.append(Check(name, None, now, None, rule.describe(), NOT_IN_BASELINE))
            continue
        value, spread, label = ref
        tolerance, how = entry.tolerance(name, rule.tolerance(value))
        margin = tolerance + spread
        limit = value + margin if rule.direction == "lower" else value - margin
        known = run.seed is not None and run.seed in entry.seeds
        if not known and (entry.metrics.get(name) is None or entry.metrics[name].n < 3):
            status = OTHER_SEED
        elif now is None:
            status = NO_VALUE
        elif rule.is_worse(now, limit):
            status = WORSE
        elif (now < value - margin) if rule.direction == "lower" else (now > value + margin):
            status = BETTER
        else:
            status = OK
        note = f"{tolerance:.3g} ({how})"
        checks.append(Check(name, value, now, limit, rule.describe(), status, label, spread, note))
    return checks


def _reason(checks: Sequence[Check]) -> str:
    parts = []
    for c in checks:
        if c.name == "verdict":
            parts.append(f"verdict {c.baseline} -> {c.now}")
        elif c.status == NO_VALUE:
            parts.append(f"{c.name}: no value now (baseline {_fmt(c.baseline)})")
        else:
            side = "above" if c.direction.startswith("lower") else "below"
            parts.append(
                f"{c.name} {_fmt(c.now)} is {side} the limit {_fmt(c.limit)} "
                f"(baseline {_fmt(c.baseline)}, {c.direction})"
            )
    return "; ".join(parts)


def _changed(entry: BaselineEntry, run: ArmRun, label: str) -> str:
    new_arm = family_fields(run.arm)
    fields = arm_changes(entry.arm, new_arm) if entry.arm and new_arm else []
    what = "; ".join(f"{name} {a!r} -> {b!r}" for name, a, b in fields)
    return (
        f"arm changed (hash {entry.family_hash} -> {run.family_hash}{': ' + what if what else ''})"
        f"; its baseline entry in {label} no longer describes it: accept a new baseline if the "
        "change is meant"
    )


def check_arm(
    run: Any, entry: BaselineEntry, rules: Rules | None = None, *, baseline: str = ""
) -> GateResult:
    """Hold ``run`` (anything :func:`~stabilitykit.gate.metrics.arm_run` takes) against
    ``entry``, metric by metric under ``rules`` (``None``: the run's own, ``ArmRun.rules``: its
    workload's declared metrics and the engine's).

    An entry of another family hash (the arm changed) gives ``not comparable``: the checks
    against it are kept for information (``reference`` says so), never as a pass or a failure.
    """
    run = arm_run(run)
    rules = as_rules(rules, run)
    checks = [_verdict_check(run, entry), *_metric_checks(run, entry, rules)]
    regressions = [c for c in checks if c.worse]
    better = [c.name for c in checks if c.status == BETTER]
    seed_known = run.seed is not None and run.seed in entry.seeds
    reference = f"seed {run.seed}" if seed_known else entry.description
    if entry.family_hash != run.family_hash:
        status = GateStatus.NOT_COMPARABLE
        reason = _changed(entry, run, baseline or "the baseline")
        if regressions:
            worse = [c.name for c in regressions if c.name != "verdict"]
            verdict = [
                f"verdict {c.baseline} -> {c.now}" for c in regressions if c.name == "verdict"
            ]
            info = "; ".join([*verdict, *([f"worse {', '.join(worse)}"] if worse else [])])
            reason += f"; for information, against the old entry: {info}"
        reference = f"the old entry {entry.family_hash}, {reference} (for information only)"
    elif regressions:
        status, reason = GateStatus.REGRESSED, _reason(regressions)
    else:
        status, reason = GateStatus.PASSED, "within tolerance"
        if better:
            reason += f"; better: {', '.join(better)} (accept a new baseline to keep the gain)"
    return GateResult(
        arm_id=run.arm_id,
        seed=run.seed,
        status=status,
        reason=reason,
        family_hash=run.family_hash,
        entry_hash=entry.family_hash,
        checks=tuple(checks),
        reference=reference,
        baseline=baseline,
    )


def gate_arm(run: Any, baseline: Baseline, rules: Rules | None = None) -> GateResult:
    """Find ``run``'s entry in ``baseline`` and hold the run against it (:func:`check_arm`, under
    ``rules`` or, when ``None``, the run's own); ``missing`` when there is none, ``not
    comparable`` when the arm or the scale changed."""
    run = arm_run(run)
    label = baseline.label
    common = {"arm_id": run.arm_id, "seed": run.seed, "family_hash": run.family_hash}
    if baseline.scale is not None and run.scale is not None and run.scale != baseline.scale:
        reason = f"{label} is for scale {baseline.scale!r}; this run is at scale {run.scale!r}"
        return GateResult(**common, status=GateStatus.NOT_COMPARABLE, reason=reason, baseline=label)
    entry = baseline.get(run.family_hash)
    if entry is not None:
        return check_arm(run, entry, rules, baseline=label)
    changed = baseline.same_arm(run)
    if changed:
        return check_arm(run, changed[0], rules, baseline=label)
    reason = f"no baseline entry for {run.family_id} (hash {run.family_hash}) in {label}"
    return GateResult(**common, status=GateStatus.MISSING, reason=reason, baseline=label)


# --- failure rate over seeds --------------------------------------------------------------------


@dataclass(frozen=True)
class FailureRateCheck:
    """Failures over seeds now against the baseline's; ``upper`` is the Wilson upper bound of the
    baseline's failure rate."""

    failures: int
    n: int
    baseline_failures: int
    baseline_n: int
    upper: float

    @property
    def passed(self) -> bool:
        return self.n == 0 or self.failures / self.n <= self.upper

    @property
    def message(self) -> str:
        now = f"{self.failures}/{self.n}" + (f" ({self.failures / self.n:.0%})" if self.n else "")
        verb = "within" if self.passed else "exceeds"
        return (
            f"failure rate {now} {verb} the baseline's {self.baseline_failures}/"
            f"{self.baseline_n} (95% Wilson upper bound {self.upper:.0%})"
        )


def check_failure_rate(
    failures: int, n: int, baseline_failures: int, baseline_n: int, z: float = 1.96
) -> FailureRateCheck:
    """Fails when ``failures / n`` exceeds the upper end of the Wilson score interval of
    ``baseline_failures / baseline_n`` (Wilson 1927; ``z = 1.96`` for 95 %)."""
    from stabilitykit.report.collate import wilson_interval

    if not 0 <= failures <= n:
        raise ValueError(f"check_failure_rate: expected 0 <= failures <= n, got {failures}, {n}")
    upper = wilson_interval(baseline_failures, baseline_n, z)[1]
    return FailureRateCheck(failures, n, baseline_failures, baseline_n, upper)


@dataclass(frozen=True)
class FamilyRate:
    """The failure-rate check of one arm over its seeds."""

    arm_id: str
    family_hash: str
    check: FailureRateCheck


def family_rate(runs: Sequence[ArmRun], entry: BaselineEntry) -> FamilyRate:
    """The failure rate of one arm's seed runs against its entry (interrupted runs left out)."""
    decided = [r for r in runs if r.verdict != VerdictKind.INTERRUPTED.value]
    failures = sum(r.verdict != STABLE for r in decided)
    base_failures, base_n = entry.failures, entry.n
    if decided and all(r.seed is not None and r.seed in entry.seeds for r in decided):
        # only seeds the baseline ran: hold them against those very seeds' failures
        same = [entry.seeds[r.seed] for r in decided]
        same = [s for s in same if s.verdict != VerdictKind.INTERRUPTED.value]
        base_failures, base_n = sum(s.verdict != STABLE for s in same), len(same)
    check = check_failure_rate(failures, len(decided), base_failures, base_n)
    return FamilyRate(entry.arm_id, entry.family_hash, check)


def unused_entries(baseline: Baseline, seen_hashes: Iterable[str]) -> list[BaselineEntry]:
    """Entries of ``baseline`` whose family hash is not in ``seen_hashes``, by arm id."""
    seen = set(seen_hashes)
    unused = [e for key, e in baseline.entries.items() if key not in seen]
    return sorted(unused, key=lambda e: (e.arm_id, e.family_hash))


# --- many runs at once --------------------------------------------------------------------------


@dataclass(frozen=True)
class GateReport:
    """The gate over a set of runs: per run, per arm over seeds, and the unused entries."""

    baseline: str
    results: tuple[GateResult, ...]
    rates: tuple[FamilyRate, ...]
    unused: tuple[BaselineEntry, ...]

    def ok(self, require_baseline: bool = False) -> bool:
        return all(r.ok(require_baseline) for r in self.results) and all(
            r.check.passed for r in self.rates
        )

    def counts(self) -> dict[str, int]:
        out = {s.value: sum(r.status is s for r in self.results) for s in GateStatus}
        out["failure rate risen"] = sum(not r.check.passed for r in self.rates)
        out["unused"] = len(self.unused)
        return out

    def verdict_line(self, require_baseline: bool = False) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items() if v)
        word = "passed" if self.ok(require_baseline) else "FAILED"
        return f"gate {word} against {self.baseline}: {counts or 'no runs'}"

    def rich(self, require_baseline: bool = False) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        parts: list[Any] = []
        table = Table("arm", "seed", "status", "detail", title="stability gate", box=None)
        style = {GateStatus.REGRESSED: "bold red", GateStatus.PASSED: "green"}
        for r in self.results:
            status_style = style.get(r.status, "yellow")
            row = (r.arm_id, _fmt(r.seed), r.status.value, r.reason)
            row_style = status_style if r.status is not GateStatus.PASSED else ""
            table.add_row(*map(Text, row), style=row_style)
        parts.append(table)
        for r in self.results:
            if r.regressions or r.improvements:
                parts.append(r.rich_table())
        if self.rates:
            rates = Table("arm", "failure rate", title="failure rate over seeds", box=None)
            for rate in self.rates:
                rate_style = "" if rate.check.passed else "bold red"
                rates.add_row(Text(rate.arm_id), Text(rate.check.message), style=rate_style)
            parts.append(rates)
        if self.unused:
            names = ", ".join(f"{e.arm_id} [{e.family_hash}]" for e in self.unused)
            parts.append(Text(f"baseline entries no run used: {names}", style="yellow"))
        line = self.verdict_line(require_baseline)
        parts.append(Text(line, style="bold green" if self.ok(require_baseline) else "bold red"))
        return Group(*parts)

    def text(self, require_baseline: bool = False, width: int = 120) -> str:
        return render_text(self.rich(require_baseline), width)


def gate_runs(runs: Iterable[Any], baseline: Baseline, rules: Rules | None = None) -> GateReport:
    """:func:`gate_arm` for each run (under ``rules``, or each run's own when ``None``),
    :func:`family_rate` for each arm compared over more than one seed (now or in the baseline),
    and the entries no run used."""
    runs = [arm_run(r) for r in runs]
    results = tuple(gate_arm(r, baseline, rules) for r in runs)
    families: dict[str, list[ArmRun]] = {}
    for run, result in zip(runs, results, strict=True):
        if result.status in (GateStatus.PASSED, GateStatus.REGRESSED):
            families.setdefault(run.family_hash, []).append(run)
    rates = []
    for key, members in families.items():
        entry = baseline.entries[key]
        if len(members) > 1 or entry.n > 1:
            rates.append(family_rate(members, entry))
    seen = {r.family_hash for r in runs} | {r.entry_hash for r in results if r.entry_hash}
    unused = tuple(unused_entries(baseline, seen))
    return GateReport(baseline.label, results, tuple(rates), unused)
