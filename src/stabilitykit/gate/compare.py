"""The gate: hold an arm run against its baseline entry, metric by metric, one-sided.

Which comparison applies depends on what the bits of the run depend on (its numerics
fingerprint, ``ArmRun.numerics``):

- **seed against seed**, when the entry has the run's seed under the same fingerprint (the same
  arm, seed and numerics repeat exactly, so any move is the code's): a metric fails when it is
  worse than that seed's value beyond the (calibrated) tolerance, and the verdict must not
  worsen;
- **against the seeds' spread** otherwise (other numerics: another machine kind outside the
  portable mode, a GPU, another torch, or unknown; or a seed the baseline never ran): the run is
  one more draw from the arm's seed-to-seed distribution, judged by
  :func:`~stabilitykit.gate.spread.judge_value` (pass within the declared tolerance of the
  median, regressed beyond it *and* outside the 95 % prediction interval, else *not decided*).
  A failed verdict is a regression when the arm was stable at every one of at least
  ``MIN_SEEDS`` baseline seeds; where the baseline failed at some seeds, or has fewer, one run
  cannot tell a risen failure rate from luck: *not decided*.

Better never fails. Over seeds, the failure rate fails when it exceeds the baseline's 95 %
Wilson upper bound (against another machine's seeds: when that bound rejects with at least
``MIN_SEEDS`` runs, or the arm never failed in the baseline). *Not decided* is printed with its
reason and passes unless the caller asks for strictness (``GateResult.ok(strict=True)``).

An arm without an entry is ``missing``; an arm whose id has an entry under another hash is ``not
comparable`` (it changed; the numbers against the old entry are shown for information only). The
caller decides whether either fails (``GateResult.ok(require_baseline=...)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from stabilitykit.gate.baseline import STABLE, Baseline, BaselineEntry, render_text
from stabilitykit.gate.metrics import (
    ArmRun,
    Rules,
    arm_changes,
    arm_run,
    as_rules,
    family_fields,
)
from stabilitykit.gate.spread import BETTER, MIN_SEEDS, NOT_DECIDED, OK, WORSE, judge_value
from stabilitykit.judge.verdict import SEVERITY, VerdictKind

NO_VALUE = "no value"  # the baseline has the metric, the run has none (or NaN): fails
NOT_IN_BASELINE = "not in baseline"  # a metric gated now that the baseline lacks: shown only
# against the seeds' spread, a metric of a failed run: shown only (the verdict decides)
RUN_FAILED = "run failed"
_STYLE = {
    WORSE: "bold red",
    NO_VALUE: "bold red",
    BETTER: "green",
    OK: "",
    NOT_DECIDED: "yellow",
    NOT_IN_BASELINE: "dim",
    RUN_FAILED: "dim",
}


class GateStatus(StrEnum):
    PASSED = "passed"
    REGRESSED = "regressed"
    # against the seeds' spread: too wide (or too few seeds) to tell a regression from noise
    NOT_DECIDED = "not decided"
    MISSING = "missing"
    NOT_COMPARABLE = "not comparable"


@dataclass(frozen=True)
class Check:
    """One row of the diff table: a metric (or the verdict) against its baseline.

    ``limit`` is the worst value that passes; ``reference`` says what ``baseline`` is (a seed or
    a median over seeds). Against the seeds' spread, ``bound`` is the prediction interval's worse
    end (beyond ``limit`` and ``bound``: regressed; between: not decided) and ``why`` the reason
    of a regression or a *not decided*."""

    name: str
    baseline: float | str | None
    now: float | str | None
    limit: float | str | None
    direction: str
    status: str
    reference: str = ""
    spread: float = 0.0  # the baseline's IQR over seeds, added to the tolerance
    tolerance: str = ""  # the tolerance used and how it was set (declared or calibrated)
    bound: float | None = None
    why: str = ""

    @property
    def worse(self) -> bool:
        return self.status in (WORSE, NO_VALUE)

    @property
    def undecided(self) -> bool:
        return self.status == NOT_DECIDED


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
    # against the seeds' spread: "compared across machines: against 5 seeds (...)"; else empty
    comparison: str = ""

    @property
    def passed(self) -> bool:
        return self.status is GateStatus.PASSED

    @property
    def undecided(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.undecided)

    @property
    def regressions(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.worse)

    @property
    def improvements(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == BETTER)

    def ok(self, require_baseline: bool = False, strict: bool = False) -> bool:
        """False on a regression; on *not decided*, ``not strict``; on a missing or
        not-comparable entry, ``not require_baseline``."""
        if self.status is GateStatus.REGRESSED:
            return False
        if self.status is GateStatus.NOT_DECIDED:
            return not strict
        return self.passed or not require_baseline

    def summary(self) -> str:
        return f"{self.arm_id}: {self.status.value}: {self.reason}"

    @property
    def known_verdict(self) -> str:
        """Why the run's failed verdict is no regression, or ``""``: its baseline seed had this
        very verdict, every baseline seed failed so, or, against the seeds' spread, one run
        cannot tell (*not decided*)."""
        verdict = next((c for c in self.checks if c.name == "verdict"), None)
        judged = self.status in (GateStatus.PASSED, GateStatus.NOT_DECIDED)
        if not judged or verdict is None or verdict.now == STABLE or verdict.worse:
            return ""
        if verdict.undecided:
            return f"not decided against its baseline: {verdict.why}"
        if self.comparison:  # an ok failed verdict against the spread: every seed failed so
            return f"as in its baseline, which failed at all its {verdict.reference}"
        return "as in its baseline" if verdict.baseline == verdict.now else ""

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
            if c.name != "verdict" and c.reference not in self.reference and not self.comparison:
                baseline += f" ({c.reference})"
            limit = _fmt(c.limit) + (f" (95% PI {_fmt(c.bound)})" if c.bound is not None else "")
            row = (c.name, baseline, _fmt(c.now), limit, c.direction, c.status)
            table.add_row(*map(Text, row), style=_STYLE.get(c.status, ""))
        return table

    def table(self, width: int = 100) -> str:
        """The diff table as plain text, under its title line; empty without checks."""
        from rich import box

        if not self.checks:
            return ""
        return f"{self.title}\n" + render_text(self.rich_table(box.ASCII, title=False), width)

    def render(self, width: int = 100) -> str:
        """Summary line, the comparison line (against the seeds' spread) and the diff table, as
        plain text: for a pytest failure message."""
        head = self.summary() + (f"\n{self.comparison}" if self.comparison else "")
        return f"{head}\n{self.table(width)}".rstrip() + "\n"

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


def same_seed(run: ArmRun, entry: BaselineEntry) -> bool:
    """Whether ``run`` may be held against its own seed in ``entry``: the entry ran that seed
    under the same, known, numerics fingerprint (an unknown one equals nothing)."""
    seed = entry.seeds.get(run.seed) if run.seed is not None else None
    return seed is not None and run.numerics is not None and seed.numerics == run.numerics


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _comparison(run: ArmRun, entry: BaselineEntry) -> str:
    """The line that says a run was held against the seeds' spread, and why."""
    count = f"against {_seeds(entry.n)}"
    theirs = sorted({s.numerics or "unknown" for s in entry.seeds.values()})
    if run.numerics is not None and theirs == [run.numerics]:
        return f"compared across seeds: {count} (seed {run.seed} is not in the baseline)"
    return (
        f"compared across machines: {count} (numerics {run.numerics or 'unknown'} here, "
        f"{', '.join(theirs)} in the baseline)"
    )


def _verdict_check(run: ArmRun, entry: BaselineEntry) -> Check:
    """The verdict against the same seed's (see :func:`same_seed`)."""
    seed = entry.seeds[run.seed]
    worse = _worse_verdict(run.verdict, seed.verdict)
    better = run.verdict == STABLE and seed.verdict != STABLE
    status = WORSE if worse else BETTER if better else OK
    limit, reference = f"no worse than {seed.verdict}", f"seed {seed.seed}"
    return Check("verdict", seed.verdict, run.verdict, limit, "stable is better", status, reference)


def _verdict_across(run: ArmRun, entry: BaselineEntry) -> Check:
    """The verdict against all the baseline's seeds: a failure is a regression only where the
    arm was stable at every one of at least ``MIN_SEEDS`` seeds; where some failed, or there
    are fewer, one run cannot tell (the failure rate over seeds decides)."""
    n, failures = entry.n, entry.failures
    verdicts = ", ".join(f"{k} {v}" for k, v in entry.verdicts.items())
    kinds = {s.verdict for s in entry.decided}

    def check(status: str, limit: str, why: str = "") -> Check:
        ref = _seeds(n)
        return Check(
            "verdict", verdicts, run.verdict, limit, "stable is better", status, ref, why=why
        )

    if run.verdict == STABLE:
        return check(BETTER if n and failures == n else OK, "failure rate")
    if run.verdict == VerdictKind.INTERRUPTED.value:
        return check(NOT_DECIDED, "failure rate", "the run was interrupted: it says nothing")
    if n and failures == n and run.verdict in kinds:
        return check(OK, f"one of {', '.join(sorted(kinds))}")  # every seed failed so
    if failures == 0 and n >= MIN_SEEDS:
        why = f"verdict {run.verdict}, where the arm was stable at all {n} baseline seeds"
        return check(WORSE, STABLE, why)
    if failures == 0:
        why = (
            f"verdict {run.verdict}; the baseline was stable at {n} seed(s), too few to call one "
            f"failure a regression ({MIN_SEEDS} needed)"
        )
    else:
        why = (
            f"verdict {run.verdict}; the baseline failed at {failures} of {n} seeds ({verdicts}): "
            "one run cannot tell a risen failure rate from luck"
        )
    return check(NOT_DECIDED, "failure rate", why)


def _metric_checks(run: ArmRun, entry: BaselineEntry, rules: Rules) -> list[Check]:
    """Each metric against the same seed's value (see :func:`same_seed`), with the calibrated
    tolerance."""
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
        if now is None:
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


def _metrics_across(run: ArmRun, entry: BaselineEntry, rules: Rules) -> list[Check]:
    """Each metric against the spread of the baseline's seeds
    (:func:`~stabilitykit.gate.spread.judge_value`). The metrics of a failed run are shown, not
    judged, against stable seeds: its verdict decides."""
    pool_stable = any(s.verdict == STABLE for s in entry.pool)
    failed = run.verdict != STABLE and pool_stable
    checks = []
    for name, rule in rules.items():
        values, now = entry.values(name), run.values.get(name)
        if not values:
            if now is not None:
                checks.append(Check(name, None, now, None, rule.describe(), NOT_IN_BASELINE))
            continue
        label = f"median of {len(values)} seeds"
        if now is None or failed:
            median = float(np.median(values))
            status = RUN_FAILED if failed else NO_VALUE
            why = f"{name}: no value now (median {_fmt(median)})" if now is None else ""
            checks.append(Check(name, median, now, None, rule.describe(), status, label, why=why))
            continue
        j = judge_value(now, values, rule)
        note = f"{j.tolerance:.3g} (declared)"
        checks.append(
            Check(
                name,
                j.median,
                now,
                j.limit,
                rule.describe(),
                j.status,
                label,
                tolerance=note,
                bound=j.bound,
                why=j.why,
            )
        )
    return checks


def _reason(checks: Sequence[Check]) -> str:
    parts = []
    for c in checks:
        if c.why:
            parts.append(c.why)
        elif c.name == "verdict":
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

    Seed against seed where :func:`same_seed` allows, else against the seeds' spread (see the
    module docstring; ``GateResult.comparison`` says so). An entry of another family hash (the
    arm changed) gives ``not comparable``: the checks against it are kept for information
    (``reference`` says so), never as a pass or a failure.
    """
    run = arm_run(run)
    rules = as_rules(rules, run)
    if same_seed(run, entry):
        checks = [_verdict_check(run, entry), *_metric_checks(run, entry, rules)]
        reference, comparison = f"seed {run.seed}", ""
    else:
        checks = [_verdict_across(run, entry), *_metrics_across(run, entry, rules)]
        reference, comparison = f"the spread of {_seeds(entry.n)}", _comparison(run, entry)
    regressions = [c for c in checks if c.worse]
    undecided = [c for c in checks if c.undecided]
    better = [c.name for c in checks if c.status == BETTER]
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
    elif undecided:
        status, reason = GateStatus.NOT_DECIDED, _reason(undecided)
    else:
        status, reason = GateStatus.PASSED, "within tolerance"
        if comparison:
            reason = "within the tolerance of the seeds' median, or their spread"
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
        comparison=comparison,
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
    baseline's failure rate. ``decided`` False: a rate over the bound is *not decided* (too few
    runs against another machine's seeds to tell a risen rate from luck) instead of a
    regression."""

    failures: int
    n: int
    baseline_failures: int
    baseline_n: int
    upper: float
    decided: bool = True

    @property
    def within(self) -> bool:
        return self.n == 0 or self.failures / self.n <= self.upper

    @property
    def status(self) -> GateStatus:
        if self.within:
            return GateStatus.PASSED
        return GateStatus.REGRESSED if self.decided else GateStatus.NOT_DECIDED

    @property
    def passed(self) -> bool:
        return self.status is GateStatus.PASSED

    @property
    def regressed(self) -> bool:
        return self.status is GateStatus.REGRESSED

    @property
    def message(self) -> str:
        now = f"{self.failures}/{self.n}" + (f" ({self.failures / self.n:.0%})" if self.n else "")
        verb = "within" if self.within else "exceeds"
        text = (
            f"failure rate {now} {verb} the baseline's {self.baseline_failures}/"
            f"{self.baseline_n} (95% Wilson upper bound {self.upper:.0%})"
        )
        if self.status is GateStatus.NOT_DECIDED:
            text += (
                f"; not decided: {self.n} run(s) against {self.baseline_n} seeds where the arm "
                f"failed before are too few to tell a risen rate from luck ({MIN_SEEDS} of each "
                "needed)"
            )
        return text


def check_failure_rate(
    failures: int,
    n: int,
    baseline_failures: int,
    baseline_n: int,
    z: float = 1.96,
    *,
    across: bool = False,
) -> FailureRateCheck:
    """Fails when ``failures / n`` exceeds the upper end of the Wilson score interval of
    ``baseline_failures / baseline_n`` (Wilson 1927; ``z = 1.96`` for 95 %). ``across``: the
    runs are other draws than the baseline's seeds (other numerics or other seeds); a rate over
    the bound then decides only where the arm never failed in at least ``MIN_SEEDS`` baseline
    seeds, or with at least ``MIN_SEEDS`` runs against at least ``MIN_SEEDS`` seeds; otherwise
    it is *not decided*."""
    from stabilitykit.judge.rates import wilson_interval

    if not 0 <= failures <= n:
        raise ValueError(f"check_failure_rate: expected 0 <= failures <= n, got {failures}, {n}")
    upper = wilson_interval(baseline_failures, baseline_n, z)[1]
    enough = baseline_n >= MIN_SEEDS and (baseline_failures == 0 or n >= MIN_SEEDS)
    return FailureRateCheck(failures, n, baseline_failures, baseline_n, upper, not across or enough)


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
    across = not decided or not all(same_seed(r, entry) for r in decided)
    if not across:
        # only seeds the baseline ran, under the same numerics: against those very seeds
        same = [entry.seeds[r.seed] for r in decided]
        same = [s for s in same if s.verdict != VerdictKind.INTERRUPTED.value]
        base_failures, base_n = sum(s.verdict != STABLE for s in same), len(same)
    check = check_failure_rate(failures, len(decided), base_failures, base_n, across=across)
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

    def ok(self, require_baseline: bool = False, strict: bool = False) -> bool:
        """False on a regression or a risen failure rate; *not decided* fails only when
        ``strict``; a missing or changed entry only when ``require_baseline``."""
        rates = (r.check.status for r in self.rates)
        bad = {GateStatus.REGRESSED, *((GateStatus.NOT_DECIDED,) if strict else ())}
        return all(r.ok(require_baseline, strict) for r in self.results) and not bad & set(rates)

    def counts(self) -> dict[str, int]:
        out = {s.value: sum(r.status is s for r in self.results) for s in GateStatus}
        out["failure rate risen"] = sum(r.check.regressed for r in self.rates)
        out["failure rate not decided"] = sum(
            r.check.status is GateStatus.NOT_DECIDED for r in self.rates
        )
        out["unused"] = len(self.unused)
        return out

    def verdict_line(self, require_baseline: bool = False, strict: bool = False) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.counts().items() if v)
        word = "passed" if self.ok(require_baseline, strict) else "FAILED"
        return f"gate {word} against {self.baseline}: {counts or 'no runs'}"

    def comparisons(self) -> list[str]:
        """One line per way runs were held against the seeds' spread, naming the arms:
        ``compared across machines: against 5 seeds (...): control-hybrid-b4, agc-hybrid-b4``."""
        groups: dict[str, list[str]] = {}
        for r in self.results:
            if r.comparison and r.status is not GateStatus.NOT_COMPARABLE:
                groups.setdefault(r.comparison, []).append(r.arm_id)
        return [f"{line}: {', '.join(arms)}" for line, arms in groups.items()]

    def rich(self, require_baseline: bool = False, strict: bool = False) -> Any:
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
        parts += [Text(line, style="yellow") for line in self.comparisons()]
        for r in self.results:
            if r.regressions or r.improvements or r.undecided:
                parts.append(r.rich_table())
        if self.rates:
            rates = Table("arm", "failure rate", title="failure rate over seeds", box=None)
            rate_styles = {GateStatus.REGRESSED: "bold red", GateStatus.NOT_DECIDED: "yellow"}
            for rate in self.rates:
                rate_style = rate_styles.get(rate.check.status, "")
                rates.add_row(Text(rate.arm_id), Text(rate.check.message), style=rate_style)
            parts.append(rates)
        if self.unused:
            names = ", ".join(f"{e.arm_id} [{e.family_hash}]" for e in self.unused)
            parts.append(Text(f"baseline entries no run used: {names}", style="yellow"))
        line = self.verdict_line(require_baseline, strict)
        good = self.ok(require_baseline, strict)
        parts.append(Text(line, style="bold green" if good else "bold red"))
        return Group(*parts)

    def text(self, require_baseline: bool = False, width: int = 120, strict: bool = False) -> str:
        return render_text(self.rich(require_baseline, strict), width)


def gate_runs(runs: Iterable[Any], baseline: Baseline, rules: Rules | None = None) -> GateReport:
    """:func:`gate_arm` for each run (under ``rules``, or each run's own when ``None``),
    :func:`family_rate` for each arm compared over more than one seed (now or in the baseline),
    and the entries no run used."""
    runs = [arm_run(r) for r in runs]
    results = tuple(gate_arm(r, baseline, rules) for r in runs)
    families: dict[str, list[ArmRun]] = {}
    for run, result in zip(runs, results, strict=True):
        if result.status in (GateStatus.PASSED, GateStatus.REGRESSED, GateStatus.NOT_DECIDED):
            families.setdefault(run.family_hash, []).append(run)
    rates = []
    for key, members in families.items():
        entry = baseline.entries[key]
        if len(members) > 1 or entry.n > 1:
            rates.append(family_rate(members, entry))
    seen = {r.family_hash for r in runs} | {r.entry_hash for r in results if r.entry_hash}
    unused = tuple(unused_entries(baseline, seen))
    return GateReport(baseline.label, results, tuple(rates), unused)
