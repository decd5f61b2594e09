"""Baseline files: one per stage and scale, one entry per arm, committed and reviewed as diffs.

Layout (``<root>/<scale>/<stage>.json``, keys sorted, numbers to 6 significant digits)::

    {"schema": "stabilitykit.baseline", "version": 1, "stage": "stage_a", "scale": "ci",
     "entries": {
       "<family_hash>": {                      # the arm's hash without its seed
         "arm": {"lr": 0.001, ...},            # the fields that make that hash
         "arm_id": "control-hybrid-b4",        # for people: the arm id without its seed
         "arm_name": "control",
         "metrics": {"rel_l2": {"iqr": 0.004, "median": 0.12, "n": 2}, ...},  # one seed: a value
         "seeds": {"7": {"arm_hash": "...", "verdict": "stable", "metrics": {"rel_l2": 0.12},
                         "numerics": "0123456789abcdef"}},
         "numerics": {"0123456789abcdef": "portable 0123456789abcdef, torch 2.13.0, ..."},
         "n": 3, "failures": 1, "verdicts": {"collapsed": 1, "stable": 2}
       }}}

Each seed's ``numerics`` is the fingerprint of what its bits depend on (the run's
``config["numerics"]``); the entry's ``numerics`` describes each fingerprint for people. Both are
left out where unknown (runs recorded before the numerics mode; files written before 0.4), and
an unknown fingerprint equals nothing: such seeds are only ever compared as a distribution
(:mod:`stabilitykit.gate.compare`).

``metrics`` summarises the stable seeds (all seeds when none was stable); with two or more
seeds it also holds their sample standard deviation ``std``. ``n``, ``failures`` and
``verdicts`` are written for readers and derived from ``seeds`` when read; ``n`` and
``failures`` leave out interrupted runs, which say nothing about the arm.

**Calibrated tolerances.** A metric accepted over at least :data:`CALIBRATE_MIN_SEEDS` seeds is
gated with the tolerance its own seed-to-seed noise supports: :data:`CALIBRATE_K` times the
``std`` over seeds, never looser than the declared tolerance (the workload's ``MetricSpec``)
and never tighter than :data:`CALIBRATE_FLOOR` of it (:meth:`BaselineEntry.tolerance`). A code
change that moves an arm's numbers without meaning to behaves like another seed, so a move of
3 standard deviations is a regression; with fewer seeds the declared tolerance applies.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stabilitykit.gate.metrics import (
    ArmRun,
    Rules,
    arm_changes,
    arm_run,
    as_number,
    as_rules,
    family_fields,
    merged_rules,
)
from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.names import check_path_name
from stabilitykit.record.schema import RecordError, read_json, stamp, write_json

SCHEMA = "stabilitykit.baseline"
VERSION = 1
STABLE = VerdictKind.STABLE.value
INTERRUPTED = VerdictKind.INTERRUPTED.value
_VERDICTS = tuple(k.value for k in VerdictKind)


class BaselineError(ValueError):
    """A baseline file that cannot be used (missing, corrupt, foreign, newer, malformed), or
    runs that cannot go into one; the message names the file."""


def _sorted(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _sorted(v) if isinstance(v, Mapping) else v for k, v in sorted(d.items())}


def _round(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


@dataclass(frozen=True)
class SeedResult:
    """One seed of an arm: its full hash, verdict, gated metric values and numerics fingerprint
    (``None``: unknown)."""

    seed: int
    arm_hash: str
    verdict: str
    values: Mapping[str, float | None] = field(default_factory=dict)
    numerics: str | None = None


#: Seeds needed before a metric's tolerance is calibrated from their spread.
CALIBRATE_MIN_SEEDS = 3
#: The calibrated tolerance is this many standard deviations over seeds ...
CALIBRATE_K = 3.0
#: ... and at least this fraction of the declared tolerance.
CALIBRATE_FLOOR = 0.1


@dataclass(frozen=True)
class MetricSummary:
    """A metric over seeds: median, IQR (p75 - p25), the number of seeds with a value, and their
    sample standard deviation (``None`` below two seeds)."""

    median: float
    iqr: float
    n: int
    std: float | None = None


@dataclass(frozen=True)
class BaselineEntry:
    """One arm (all its seeds) in a baseline."""

    family_hash: str
    arm_id: str
    arm_name: str
    seeds: Mapping[int, SeedResult]
    metrics: Mapping[str, MetricSummary]
    arm: Mapping[str, Any] = field(default_factory=dict)  # the fields that make the hash
    numerics: Mapping[str, str] = field(default_factory=dict)  # fingerprint -> description

    @property
    def decided(self) -> list[SeedResult]:
        return [s for s in self.seeds.values() if s.verdict != INTERRUPTED]

    @property
    def pool(self) -> list[SeedResult]:
        """The seeds whose metrics describe the arm: the stable ones, else the decided ones."""
        decided = self.decided
        return [s for s in decided if s.verdict == STABLE] or decided or list(self.seeds.values())

    def values(self, metric: str) -> list[float]:
        """``metric`` at each seed of :attr:`pool` that has a value."""
        return [v for s in self.pool if (v := s.values.get(metric)) is not None]

    @property
    def n(self) -> int:
        return len(self.decided)

    @property
    def failures(self) -> int:
        return sum(s.verdict != STABLE for s in self.decided)

    @property
    def verdicts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.verdict for s in self.seeds.values()).items()))

    def reference(self, metric: str, seed: int | None) -> tuple[float, float, str] | None:
        """``(value, spread, label)`` to hold ``metric`` of a run at ``seed`` against: that
        seed's value when the entry has it, else the median with the IQR as spread."""
        result = self.seeds.get(seed) if seed is not None else None
        if result is not None and result.values.get(metric) is not None:
            return result.values[metric], 0.0, f"seed {seed}"
        summary = self.metrics.get(metric)
        if summary is None:
            return None
        if summary.n == 1:
            at = [s.seed for s in self.seeds.values() if s.values.get(metric) == summary.median]
            return summary.median, 0.0, f"seed {at[0]}" if at else "median of 1 seed"
        return summary.median, summary.iqr, f"median of {summary.n} seeds"

    def tolerance(self, metric: str, declared: float) -> tuple[float, str]:
        """The tolerance to gate ``metric`` with and how it was set: calibrated from the seeds'
        spread (see the module docstring), or ``declared`` as given."""
        summary = self.metrics.get(metric)
        if summary is None or summary.std is None or summary.n < CALIBRATE_MIN_SEEDS:
            return declared, "declared"
        calibrated = min(declared, max(CALIBRATE_K * summary.std, CALIBRATE_FLOOR * declared))
        return calibrated, f"{CALIBRATE_K:g} std over {summary.n} seeds"

    @property
    def description(self) -> str:
        """What a run of an unknown seed is held against."""
        if len(self.seeds) == 1:
            return f"seed {next(iter(self.seeds))}"
        return f"median of {len(self.seeds)} seeds, limits widened by the IQR"

    @classmethod
    def from_runs(cls, runs: Sequence[ArmRun], rules: Rules | None = None) -> BaselineEntry:
        """The entry of one arm's seed replicates (all of one ``family_hash``), holding the
        metrics of ``rules``; ``None``: the runs' own rules (their workload's declared metrics
        and the engine's, :func:`~stabilitykit.gate.metrics.merged_rules`)."""
        if not runs or len({r.family_hash for r in runs}) != 1:
            raise BaselineError("BaselineEntry.from_runs: expected runs of one arm family")
        rules = merged_rules(runs) if rules is None else as_rules(rules)
        seeds: dict[int, SeedResult] = {}
        numerics: dict[str, str] = {}
        for run in sorted(runs, key=lambda r: r.seed if r.seed is not None else -1):
            if run.seed is None:
                raise BaselineError(f"{run.source}: run of {run.arm_id} records no seed")
            if run.seed in seeds:
                raise BaselineError(f"{run.arm_id}: seed {run.seed} given twice")
            values = {m: _round(run.values[m]) for m in rules if m in run.values}
            seeds[run.seed] = SeedResult(run.seed, run.arm_hash, run.verdict, values, run.numerics)
            if run.numerics is not None:
                numerics[run.numerics] = run.numerics_label or run.numerics
        first = runs[0]
        arm = family_fields(first.arm)
        entry = cls(first.family_hash, first.family_id, first.arm_name, seeds, {}, arm, numerics)
        metrics = {}
        for metric in rules:
            values = entry.values(metric)
            if values:
                array = np.array(values, dtype=float)
                q25, q50, q75 = np.percentile(array, [25, 50, 75])
                std = _round(float(array.std(ddof=1))) if len(values) > 1 else None
                metrics[metric] = MetricSummary(_round(q50), _round(q75 - q25), len(values), std)
        return dataclasses.replace(entry, metrics=metrics)

    def to_json(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for name in sorted(self.metrics):
            s = self.metrics[name]
            metrics[name] = (
                s.median if s.n == 1 else {"iqr": s.iqr, "median": s.median, "n": s.n, "std": s.std}
            )
        seeds = {
            str(seed): {
                "arm_hash": r.arm_hash,
                "metrics": {k: r.values[k] for k in sorted(r.values)},
                **({"numerics": r.numerics} if r.numerics is not None else {}),
                "verdict": r.verdict,
            }
            for seed, r in sorted(self.seeds.items())
        }
        return {
            **({"arm": _sorted(self.arm)} if self.arm else {}),
            "arm_id": self.arm_id,
            "arm_name": self.arm_name,
            "failures": self.failures,
            "metrics": metrics,
            "n": self.n,
            **({"numerics": _sorted(self.numerics)} if self.numerics else {}),
            "seeds": seeds,
            "verdicts": self.verdicts,
        }


@dataclass(frozen=True)
class Baseline:
    """The entries of one stage at one scale, by family hash. ``path`` is where it was read
    (``None`` for a baseline built in memory from runs)."""

    stage: str | None
    scale: str | None
    entries: Mapping[str, BaselineEntry] = field(default_factory=dict)
    path: Path | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else "the baseline runs"

    def get(self, family_hash: str) -> BaselineEntry | None:
        return self.entries.get(family_hash)

    def same_arm(self, run: ArmRun) -> list[BaselineEntry]:
        """Entries with ``run``'s arm id but another hash: the arm changed since."""
        return [
            e
            for e in self.entries.values()
            if e.arm_id == run.family_id and e.family_hash != run.family_hash
        ]

    def to_json(self) -> dict[str, Any]:
        entries = {key: self.entries[key].to_json() for key in sorted(self.entries)}
        payload = {"entries": entries, "scale": self.scale, "stage": self.stage}
        return stamp(payload, SCHEMA, VERSION)


def baseline_path(root: str | os.PathLike, stage: str, scale: str) -> Path:
    """``root`` itself when it names a ``.json`` file, else ``root/<scale>/<stage>.json``."""
    root = Path(root)
    if root.suffix == ".json":
        return root
    check_path_name("stage", stage)
    check_path_name("scale", scale)
    return root / scale / f"{stage}.json"


def baseline_from_runs(
    runs: Iterable[Any],
    *,
    stage: str | None,
    scale: str | None = None,
    rules: Rules | None = None,
    path: Path | None = None,
) -> Baseline:
    """A :class:`Baseline` of ``runs`` (anything :func:`arm_run` takes), one entry per arm,
    holding the metrics of ``rules`` (``None``: each arm's own rules, from its records).

    ``scale`` defaults to the runs' scale; runs of several scales are an error.
    """
    rules = None if rules is None else as_rules(rules)
    runs = [arm_run(r) for r in runs]
    scales = {r.scale for r in runs}
    if scale is None and len(scales) == 1:
        scale = scales.pop()
    elif scales - {scale}:
        raise BaselineError(
            f"{path or 'baseline'}: runs at scale(s) {sorted(map(str, scales))} cannot go into a "
            f"baseline for scale {scale!r}"
        )
    families: dict[str, list[ArmRun]] = {}
    for run in runs:
        families.setdefault(run.family_hash, []).append(run)
    entries = {h: BaselineEntry.from_runs(members, rules) for h, members in families.items()}
    return Baseline(stage, scale, entries, path)


# --- reading and writing ------------------------------------------------------------------------


def read_baseline(path: str | os.PathLike, *, missing_ok: bool = False) -> Baseline:
    """Read and validate a baseline file; raises :class:`BaselineError` naming the file and what
    is wrong. A missing file is an empty baseline when ``missing_ok``."""
    path = Path(path)
    if not path.is_file():
        if missing_ok and not path.exists():
            return Baseline(None, None, {}, path)
        raise BaselineError(f"{path}: no such baseline file")
    try:
        d = read_json(path, SCHEMA, VERSION)
    except (RecordError, UnicodeDecodeError) as exc:
        raise BaselineError(str(exc) if isinstance(exc, RecordError) else f"{path}: {exc}") from exc
    stage, scale, entries = d.get("stage"), d.get("scale"), d.get("entries")
    for key, value in (("stage", stage), ("scale", scale)):
        if not isinstance(value, str) or not value:
            raise BaselineError(f"{path}: {key}: got {value!r}; expected a name")
    if not isinstance(entries, dict):
        raise BaselineError(f"{path}: entries: got {_kind(entries)}; expected an object")
    parsed = {key: _entry(key, value, f"{path}: entries.{key}") for key, value in entries.items()}
    return Baseline(stage, scale, parsed, path)


def write_baseline(baseline: Baseline, path: str | os.PathLike | None = None) -> Path:
    """Write ``baseline`` (atomically) to ``path`` or where it was read; returns the path."""
    target = Path(path) if path is not None else baseline.path
    if target is None:
        raise BaselineError("write_baseline: the baseline has no path; give one")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, baseline.to_json())
    return target


def _kind(x: Any) -> str:
    return "null" if x is None else f"{type(x).__name__} {x!r}"[:80]


def _entry(key: str, d: Any, where: str) -> BaselineEntry:
    if not isinstance(d, dict):
        raise BaselineError(f"{where}: got {_kind(d)}; expected an object")
    for name in ("arm_id", "arm_name"):
        if not isinstance(d.get(name), str):
            raise BaselineError(f"{where}.{name}: got {_kind(d.get(name))}; expected a string")
    seeds_in, metrics_in, arm = d.get("seeds"), d.get("metrics", {}), d.get("arm", {})
    if not isinstance(arm, dict):
        raise BaselineError(f"{where}.arm: got {_kind(arm)}; expected an object")
    if not isinstance(seeds_in, dict) or not seeds_in:
        raise BaselineError(f"{where}.seeds: got {_kind(seeds_in)}; expected a non-empty object")
    if not isinstance(metrics_in, dict):
        raise BaselineError(f"{where}.metrics: got {_kind(metrics_in)}; expected an object")
    seeds = {}
    for seed_text, s in seeds_in.items():
        at = f"{where}.seeds.{seed_text}"
        if not seed_text.isdigit():
            raise BaselineError(f"{at}: seed {seed_text!r} is not a non-negative int")
        if not isinstance(s, dict) or not isinstance(s.get("arm_hash"), str):
            raise BaselineError(f"{at}: expected an object with arm_hash, verdict and metrics")
        if s.get("verdict") not in _VERDICTS:
            raise BaselineError(f"{at}.verdict: got {s.get('verdict')!r}; allowed: {_VERDICTS}")
        values = _values(s.get("metrics", {}), f"{at}.metrics")
        fingerprint = s.get("numerics")
        if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
            raise BaselineError(f"{at}.numerics: got {_kind(fingerprint)}; expected a fingerprint")
        seeds[int(seed_text)] = SeedResult(
            int(seed_text), s["arm_hash"], s["verdict"], values, fingerprint
        )
    numerics = d.get("numerics", {})
    if not isinstance(numerics, dict) or not all(isinstance(v, str) for v in numerics.values()):
        raise BaselineError(
            f"{where}.numerics: got {_kind(numerics)}; expected {{fingerprint: description}}"
        )
    metrics = {name: _summary(v, f"{where}.metrics.{name}") for name, v in metrics_in.items()}
    seeds = dict(sorted(seeds.items()))
    return BaselineEntry(key, d["arm_id"], d["arm_name"], seeds, metrics, arm, numerics)


def _values(d: Any, where: str) -> dict[str, float | None]:
    if not isinstance(d, dict):
        raise BaselineError(f"{where}: got {_kind(d)}; expected an object")
    out = {}
    for name, value in d.items():
        number = as_number(value)
        if value is not None and (number is None or isinstance(value, str)):
            raise BaselineError(f"{where}.{name}: got {_kind(value)}; expected a number or null")
        out[name] = number
    return out


def _summary(v: Any, where: str) -> MetricSummary:
    if isinstance(v, dict):
        median, iqr, n = as_number(v.get("median")), as_number(v.get("iqr")), v.get("n")
        std = as_number(v.get("std")) if v.get("std") is not None else None
        bad_std = v.get("std") is not None and (std is None or std < 0)
        if median is None or iqr is None or iqr < 0 or not isinstance(n, int) or n < 1 or bad_std:
            raise BaselineError(
                f"{where}: got {_kind(v)}; expected {{median, iqr >= 0, n >= 1, std >= 0}} "
                "or a number"
            )
        return MetricSummary(median, iqr, n, std)
    number = as_number(v)
    if number is None or isinstance(v, str):
        raise BaselineError(f"{where}: got {_kind(v)}; expected a number or {{median, iqr, n}}")
    return MetricSummary(number, 0.0, 1)


# --- accepting new results ----------------------------------------------------------------------


@dataclass(frozen=True)
class EntryChange:
    """One arm's entry before and after an accept. ``kind``: ``added``, ``updated``,
    ``replaced`` (the arm changed: the old hash's entry goes) or ``unchanged``."""

    kind: str
    old: BaselineEntry | None
    new: BaselineEntry

    def rows(self) -> list[tuple[str, str, str]]:
        """``(what, old, new)`` for everything that differs."""
        old = self.old.to_json() if self.old is not None else {}
        new = self.new.to_json()
        out = []
        if self.old is not None and self.old.family_hash != self.new.family_hash:
            out.append(("arm hash", self.old.family_hash, self.new.family_hash))
            for name, before, after in arm_changes(self.old.arm, self.new.arm):
                out.append((f"arm.{name}", repr(before), repr(after)))
        for key in ("verdicts", "failures", "n"):
            if old.get(key) != new[key]:
                out.append((key, _show(old.get(key)), _show(new[key])))
        for name in sorted(set(old.get("metrics", {})) | set(new["metrics"])):
            a, b = old.get("metrics", {}).get(name), new["metrics"].get(name)
            if a != b:
                out.append((name, _show(a), _show(b)))
        if sorted(old.get("seeds", {})) != sorted(new["seeds"]):
            out.append(("seeds", _show(list(old.get("seeds", {}))), _show(list(new["seeds"]))))
        if old.get("numerics") != new.get("numerics"):
            before, after = (list(d.get("numerics", {}).values()) for d in (old, new))
            out.append(("numerics", _show(before), _show(after)))
        return out


def _show(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, dict) and set(x) == {"median", "iqr", "n"}:
        return f"{x['median']:.6g} (IQR {x['iqr']:.3g}, n {x['n']})"
    if isinstance(x, dict):
        return ", ".join(f"{k} {v}" for k, v in x.items())
    if isinstance(x, list):
        return ", ".join(map(str, x)) or "-"
    return str(x)


@dataclass(frozen=True)
class BaselineDiff:
    """What :func:`update_baseline` changed in ``path``; ``kept`` are the arm ids of entries
    left as they were (arms not given)."""

    path: Path
    changes: tuple[EntryChange, ...]
    kept: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return any(c.kind != "unchanged" for c in self.changes)

    def rich(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        parts: list[Any] = [Text(f"baseline {self.path}", style="bold")]
        for change in self.changes:
            head = f"{change.new.arm_id} [{change.new.family_hash}]: {change.kind}"
            parts.append(Text(head, style="yellow" if change.kind != "unchanged" else "dim"))
            rows = change.rows()
            if rows and change.kind != "unchanged":
                table = Table("", "old", "new", box=None, pad_edge=False, padding=(0, 2))
                for row in rows:
                    table.add_row(*map(Text, row))
                parts.append(table)
        if self.kept:
            parts.append(Text(f"kept as they were: {', '.join(self.kept)}", style="dim"))
        return Group(*parts)

    def text(self, width: int = 100) -> str:
        return render_text(self.rich(), width)

    def __str__(self) -> str:
        return self.text()


def render_text(renderable: Any, width: int = 100) -> str:
    """``renderable`` (rich) as plain text, no colour: for logs and pytest failure messages."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(renderable)
    return buffer.getvalue().rstrip() + "\n"


def update_baseline(
    path: str | os.PathLike,
    runs: Iterable[Any],
    stage: str,
    scale: str,
    rules: Rules | None = None,
) -> BaselineDiff:
    """Write the entries of ``runs`` (anything :func:`arm_run` takes) into the baseline file at
    ``path``, creating it if needed; entries of other arms are kept. Each given arm's entry is
    replaced by its given seeds, and an entry with the same arm id but another hash (the arm
    changed) is dropped. Returns what changed."""
    path = Path(path)
    current = read_baseline(path, missing_ok=True)
    for key, have, want in (("stage", current.stage, stage), ("scale", current.scale, scale)):
        if have is not None and have != want:
            raise BaselineError(f"{path}: holds {key} {have!r}; cannot accept {key} {want!r}")
    fresh = baseline_from_runs(runs, stage=stage, scale=scale, rules=rules, path=path)
    entries = dict(current.entries)
    changes = []
    for key in sorted(fresh.entries, key=lambda k: (fresh.entries[k].arm_id, k)):
        new = fresh.entries[key]
        old = entries.pop(key, None)
        if old is not None:
            kind = "unchanged" if old.to_json() == new.to_json() else "updated"
        else:
            stale = [e for e in entries.values() if e.arm_id == new.arm_id]
            stale = [e for e in stale if e.family_hash not in fresh.entries]
            for e in stale:
                entries.pop(e.family_hash)
            old, kind = (stale[0], "replaced") if stale else (None, "added")
        entries[key] = new
        changes.append(EntryChange(kind, old, new))
    kept = tuple(sorted(e.arm_id for k, e in entries.items() if k not in fresh.entries))
    write_baseline(Baseline(stage, scale, entries, path))
    return BaselineDiff(path, tuple(changes), kept)
