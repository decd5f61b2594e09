"""The stage summary on disk: ``<stage>_metrics.json`` (rows, arm summaries, references),
``summary.md`` (tables, the narrative of :mod:`stabilitykit.report.narrative`, plot links, run
folders) and ``plots/*.png``.

The tables take their metric columns from the records' ``workload`` blocks
(:func:`~stabilitykit.report.collate.stage_columns`): each declared metric under its label, with
the trivial predictor's floor beside the value (``0.33 (floor 0.27)``); arms of several
workloads get the union, ``–`` where a run lacks a metric. Each row of ``<stage>_metrics.json``
carries its record's ``workload`` block under ``"workload"`` (``null`` for a record without
one), so :func:`stabilitykit.gate.arm_run` gates a row by its own workload's rules, and its
``arm`` dict (as run) and ``scale_changes``.

``summary.md`` tells the arms apart: a table of the recipe fields that differ between the arms
(and references), the key fields they share on one line, and what ``--sk-scale`` changed (once
when common, else per arm). Best val loss is each arm's own training loss: when the arms'
workloads or losses differ it is marked ``†`` with a footnote, and no ranking uses it.

An arm meant to fail (``tags.expect``) shows its verdict beside the expected one, a mismatch in
bold. When a run's record has spikes (``stats["spikes"]``), a Spikes table gives per run their
count, first step, the worst and its top layer (``–`` for a record older than spike detection),
and each arm with spikes gets a bar chart of the per-layer grad norms at its worst spike.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.names import check_plain_name
from stabilitykit.record.declared import workload_of
from stabilitykit.record.run_record import RunRecord
from stabilitykit.record.schema import (
    RecordError,
    file_mode,
    read_json,
    stamp,
    write_json,
    write_text,
)
from stabilitykit.report.collate import (
    LOSS_COLUMN,
    ArmSummary,
    Column,
    arm_rows,
    basis_text,
    common_fields,
    declared_metrics,
    differing_fields,
    field_value,
    in_table,
    loss_groups,
    metrics_row,
    other_keys,
    other_of,
    recipe_cells,
    row_workload,
    scale_changes_of,
    scale_text,
    stage_columns,
    summarise_arms,
)
from stabilitykit.report.frontier import (
    FRONTIER_KEY,
    frontier_lines,
    stage_frontiers,
    write_frontier_plot,
)
from stabilitykit.report.narrative import (
    INSTABILITY,
    STABLE,
    arm_finding,
    arm_verdicts,
    comparison,
    first_rows,
    fmt,
    fmt_rate,
    headline,
    plural,
    ranking,
    recommend,
    stage_title,
)

INTERRUPTED = VerdictKind.INTERRUPTED.value
STAGE_METRICS_SCHEMA = "stabilitykit.stage_metrics"
STAGE_METRICS_VERSION = 1


@dataclass(frozen=True)
class StageReport:
    """One stage's summary. ``rows``: one per run (:func:`~stabilitykit.report.collate.
    metrics_row`); ``references``: rows of arms from other stages, each with its ``reference``
    label; ``findings``: one sentence per arm; ``comparisons``: one per arm and reference;
    ``next_steps``: the rules' recommendations (``recommendation`` joins them); ``notes``: what
    reading the records noticed; ``files``: what was written; ``ranking``: how the arms rank
    (:func:`~stabilitykit.report.narrative.ranking`)."""

    stage: str
    scale: str | None
    rows: list[dict[str, Any]]
    arms: list[ArmSummary]
    references: list[dict[str, Any]]
    instability: bool
    conclusion: str
    recommendation: str
    files: dict[str, Path] = field(default_factory=dict)
    findings: tuple[str, ...] = ()
    comparisons: tuple[str, ...] = ()
    next_steps: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    ranking: tuple[str, ...] = ()
    frontiers: tuple[Any, ...] = ()  # one per sweep family (stabilitykit.frontier.Frontier)

    @property
    def title(self) -> str:
        return stage_title(self.stage)

    def arm_heads(self) -> list[tuple[str, dict[str, Any]]]:
        """``(label, row)``: each reference, then the first row of each arm of the stage."""
        refs = [(f"{r['reference']} (reference)", r) for r in self.references]
        return refs + [(r["arm_name"], r) for r in first_rows(self.rows)]

    def differing(self) -> list[str]:
        """The recipe fields that differ between the stage's arms and references."""
        return differing_fields([row for _, row in self.arm_heads()])

    def loss_comparable(self) -> bool:
        """Whether the best val losses of the stage's runs and references measure the same
        thing (one workload, one loss)."""
        return len(loss_groups([*self.references, *self.rows])) <= 1


# --- building and writing ----------------------------------------------------------------------


def build_stage_report(
    stage: str,
    records: Sequence[RunRecord],
    references: Mapping[str, RunRecord] | None = None,
) -> StageReport:
    """Collate ``records`` (this stage's runs) and ``references`` (label -> a record of another
    stage, e.g. ``{"stage_a/control": rec}``) and apply the narrative rules."""
    rows = [metrics_row(r) for r in records]
    arms = summarise_arms(rows)
    rows = [row for arm in arms for row in arm_rows(arm, rows)]
    refs = [{**metrics_row(rec), "reference": label} for label, rec in (references or {}).items()]
    scales = sorted({str(r["scale"]) for r in rows if r.get("scale")})
    findings = [arm_finding(a, rows) for a in arms]
    comparisons = [comparison(stage, ref, a, rows) for ref in refs for a in arms]
    next_steps = recommend(arms, rows)
    notes = [n for rec in (*records, *(references or {}).values()) for n in rec.notes]
    for rec in (*records, *(references or {}).values()):
        problems = workload_of(rec.config).problems
        notes += [f"{rec.path.name}: config.json {p} (left out)" for p in problems]
    return StageReport(
        stage=stage,
        scale=", ".join(scales) if scales else None,
        rows=rows,
        arms=arms,
        references=refs,
        instability=any(r["verdict"] in INSTABILITY for r in rows),
        conclusion=headline(stage_title(stage), arms, rows),
        recommendation=" ".join(next_steps),
        findings=tuple(findings),
        comparisons=tuple(comparisons),
        next_steps=tuple(next_steps),
        notes=tuple(notes),
        ranking=tuple(ranking(arms, rows)),
        frontiers=tuple(stage_frontiers(rows, records)),
    )


def stage_metrics(report: StageReport) -> dict[str, Any]:
    """The JSON payload of ``<stage>_metrics.json`` (unstamped). Each row (and reference)
    carries its record's ``workload`` block, metric declarations included."""
    return {
        "stage": report.stage,
        "scale": report.scale,
        "instability": report.instability,
        "conclusion": report.conclusion,
        "recommendation": report.recommendation,
        "ranking": list(report.ranking),
        "differing_fields": report.differing(),
        "best_val_loss_comparable": report.loss_comparable(),
        "rows": report.rows,
        "arms": [a.to_dict() for a in report.arms],
        "references": report.references,
        **({"frontiers": [f.to_dict() for f in report.frontiers]} if report.frontiers else {}),
    }


def read_stage_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``<stage>_metrics.json``; :class:`RecordError` naming the file when it is foreign,
    newer than this version, or lacks a field."""
    d = read_json(Path(path), STAGE_METRICS_SCHEMA, STAGE_METRICS_VERSION)
    for key, kind in (("stage", str), ("rows", list), ("arms", list), ("references", list)):
        if not isinstance(d.get(key), kind):
            raise RecordError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    return d


def write_stage_report(
    report: StageReport,
    out_dir: str | os.PathLike,
    records: Sequence[RunRecord],
    references: Mapping[str, RunRecord] | None = None,
    *,
    plots: bool = True,
) -> StageReport:
    """Write ``out_dir/<stage>_metrics.json``, ``out_dir/plots/*.png`` (unless ``plots`` is
    false: ``--sk-no-plots``) and ``out_dir/summary.md``; return ``report`` with ``files``
    naming them. Each file is written to a temp file and renamed into place (a symlink there is
    replaced, never written through), with an ordinary file's mode; a ``plots`` folder that is a
    symlink gets no plots (a note says so)."""
    check_plain_name("stage", report.stage)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    notes = list(report.notes)
    metrics_path = out / f"{report.stage}_metrics.json"
    write_json(
        metrics_path,
        stamp(stage_metrics(report), STAGE_METRICS_SCHEMA, STAGE_METRICS_VERSION),
    )
    files["metrics"] = metrics_path
    plot_dir = out / "plots"
    if plots and plot_dir.is_symlink():
        notes.append(f"plots not written: {plot_dir} is a symlink (not followed)")
    elif plots:
        _write_plots(report, records, references or {}, plot_dir, files, notes)
    report = dataclasses.replace(report, files=files, notes=tuple(notes))
    summary_path = out / "summary.md"
    write_text(summary_path, render_markdown(report, records, out))
    files["summary"] = summary_path
    return report


def _write_plots(
    report: StageReport,
    records: Sequence[RunRecord],
    references: Mapping[str, RunRecord],
    plot_dir: Path,
    files: dict[str, Path],
    notes: list[str],
) -> None:
    """The stage's plots into ``plot_dir``, named in ``files``; a failed one is a note."""
    from stabilitykit.report import plots

    plot_dir.mkdir(exist_ok=True)
    every, picked = plot_labels(report, records, references)
    for key, plot, chosen in (
        ("losses", plots.plot_losses, every),
        ("grad_norms", plots.plot_grad_norms, every),
        ("reconstructions", plots.plot_reconstructions, picked),
    ):
        try:
            files[key] = _write_plot(plot, chosen, plot_dir / f"{key}.png")
        except Exception as exc:  # a plot must not cost the summary
            notes.append(f"plot {key} failed: {type(exc).__name__}: {exc}")
    own = {label: rec for label, rec in every.items() if label not in references}
    files.update(_spike_plots(own, plot_dir, notes))
    try:
        if report.frontiers:
            files[FRONTIER_KEY] = write_frontier_plot(report.frontiers, report.rows, plot_dir)
    except Exception as exc:  # a plot must not cost the summary
        notes.append(f"plot {FRONTIER_KEY} failed: {type(exc).__name__}: {exc}")


def _spike_plots(
    records_by_label: Mapping[str, RunRecord], plot_dir: Path, notes: list[str]
) -> dict[str, Path]:
    """The bar chart of per-layer grad norms at each arm's worst spike
    (:func:`~stabilitykit.report.plots.spike_layers`: only arms with spikes), under
    ``spike_layers:<arm label>``; a failure is a note, as for the other plots."""
    from stabilitykit.report import plots

    files: dict[str, Path] = {}
    try:
        items = plots.spike_layers(records_by_label)
    except Exception as exc:  # a plot must not cost the summary
        notes.append(f"plot {SPIKE_LAYERS_KEY} failed: {type(exc).__name__}: {exc}")
        return files
    for item in items:
        try:
            path = _write_plot(plots.plot_spike_layers, item, plot_dir / f"{item.stem}.png")
            files[f"{SPIKE_LAYERS_KEY}:{item.arm}"] = path
        except Exception as exc:
            notes.append(f"plot {item.stem} failed: {type(exc).__name__}: {exc}")
    return files


def _write_plot(plot: Any, chosen: Any, path: Path) -> Path:
    """``plot(chosen, tmp)`` to a temp file beside ``path``, renamed into place."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        plot(chosen, tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def plot_labels(
    report: StageReport, records: Sequence[RunRecord], references: Mapping[str, RunRecord]
) -> tuple[dict[str, RunRecord], dict[str, RunRecord]]:
    """Records by plot label: every run, and per arm its first stable seed and its first failed
    one; references first, under their labels."""
    by_run = {r.path.name: r for r in records}
    every: dict[str, RunRecord] = dict(references)
    picked: dict[str, RunRecord] = dict(references)
    for arm in report.arms:
        members = arm_rows(arm, report.rows)
        for row in members:
            label = arm.arm_name if len(members) == 1 else f"{arm.arm_name} seed {row['seed']}"
            while label in every:
                label += "'"
            every[label] = by_run[row["run"]]
        stable = [r for r in members if r["verdict"] == STABLE]
        failed = [r for r in members if r["verdict"] != STABLE]
        for pick in (stable[:1] + failed[:1])[: 1 if len(members) == 1 else 2]:
            label = arm.arm_name if len(members) == 1 else f"{arm.arm_name} seed {pick['seed']}"
            label += "" if pick["verdict"] == STABLE else f" ({pick['verdict']})"
            while label in picked:
                label += "'"
            picked[label] = by_run[pick["run"]]
    return every, picked


# --- markdown ----------------------------------------------------------------------------------

PLOT_CAPTIONS = {
    "losses": "train and val loss per epoch",
    "grad_norms": "global grad norm per step, before and after clipping",
    "reconstructions": "reconstructions beside the ground truth",
}
#: What each plot shows, under it in ``summary.md``.
PLOT_NOTES = {
    "losses": "Train (left) and val (right) loss per epoch, log scale, one colour per arm. An arm "
    "with several seeds is drawn as the median over its seeds (line) and their min–max (band); "
    "a red ring is a loss spike (that step's loss, placed within its epoch).",
    "grad_norms": "Global gradient L2 norm per step before (left) and after (right) clipping, log "
    "scale, one colour per arm: the median over the arm's seeds (line) and their min–max (band); "
    "an × on the top edge marks a step whose norm was non-finite, a red ring a grad-norm spike.",
    "reconstructions": "Ground truth beside the prediction on the truth's colour range. One row "
    "per arm: its first stable seed, and its first failed one when a seed failed; each row is "
    "labelled with its arm, seed, verdict and run.",
}
#: The key prefix of a spike's per-layer bar chart in :attr:`StageReport.files`.
SPIKE_LAYERS_KEY = "spike_layers"
SPIKE_LAYERS_NOTE = (
    "Each layer's gradient L2 norm before clipping at the arm's worst spike (the largest value "
    "/ limit over its seeds), in the model's order, the largest in red, from the run's "
    "`layers.jsonl`; when that file has no row for the step, only the spike's top layers."
)
DAGGER = "†"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body
    ]


def _link(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive
        return path.as_posix()


def cell(values: Mapping[str, Any], column: Column, row: Mapping[str, Any] | None = None) -> str:
    """A value of ``column``, with its floor beside it when the metric has one:
    ``0.33 (floor 0.27)``; ``–`` when missing, or when ``row`` (the run's row, whose workload
    block says what it declares; default ``values``) does not declare the metric."""
    if not in_table(values if row is None else row, column.key):
        return fmt(None)
    value = values.get(column.key)
    floor = values.get(column.floor) if column.floor else None
    if value is None or floor is None:
        return fmt(value)
    return f"{fmt(value)} (floor {fmt(floor)})"


def flagged_cell(
    report: StageReport,
    values: Mapping[str, Any],
    column: Column,
    row: Mapping[str, Any] | None = None,
) -> str:
    """:func:`cell`, with :data:`DAGGER` on a best val loss when the report's best val losses
    do not compare (different losses or workloads)."""
    text = cell(values, column, row)
    if column.key == LOSS_COLUMN.key and text != fmt(None) and not report.loss_comparable():
        text += f" {DAGGER}"
    return text


def loss_footnote(report: StageReport) -> str:
    """The footnote of :data:`DAGGER`: which arms' val losses measure what; empty when they
    all compare."""
    if report.loss_comparable():
        return ""
    groups = loss_groups([row for _, row in report.arm_heads()])
    labels = {id(row): label for label, row in report.arm_heads()}
    which = "; ".join(
        f"{basis_text(b)}: " + ", ".join(labels[id(r)] for r in members)
        for b, members in groups.items()
    )
    return (
        f"{DAGGER} Best val loss is each arm's own training loss on its own workload "
        f"(workload/loss: {which}): it does not compare between arms of different losses or "
        "workloads, and no ranking or judgement uses it across them. Compare those arms by the "
        "workload's metrics."
    )


def verdict_cell(row: Mapping[str, Any], bold: bool = True) -> str:
    """A run's verdict for a table: in bold unless ``stable`` (when ``bold``). For an arm meant
    to fail (``expect``) the expected verdict beside it: ``diverged (expected diverged)``, not
    bold (the failure was the point), or a mismatch in bold: ``stable (expected diverged:
    **mismatch**)``; an interrupted run was not judged, so it is no mismatch."""
    verdict, expect = row["verdict"], row.get("expect")
    shown = f"**{verdict}**" if bold and verdict not in (STABLE, expect) else verdict
    if expect is None:
        return shown
    if verdict == expect:
        return f"{shown} (expected {expect})"
    if verdict == INTERRUPTED:
        return f"{shown} (expected {expect}; not judged)"
    return f"{shown} (expected {expect}: **mismatch**)"


def _run_table(report: StageReport) -> list[str]:
    columns = stage_columns([*report.references, *report.rows])
    header = ["arm", "seed", "verdict", *(c.title for c in columns)]
    body = [
        [f"{r['reference']} (reference)", fmt(r["seed"]), verdict_cell(r, bold=False)]
        + [flagged_cell(report, r, c) for c in columns]
        for r in report.references
    ]
    body += [
        [r["arm_name"], fmt(r["seed"]), verdict_cell(r)]
        + [flagged_cell(report, r, c) for c in columns]
        for r in report.rows
    ]
    return _table(header, body)


#: How a spike's signal reads in a table.
SIGNAL_NAMES = {"loss": "loss", "grad_norm_preclip": "pre-clip grad norm"}


def spike_cells(summary: Mapping[str, Any] | None) -> list[str]:
    """A run's spikes for the Spikes table (:func:`~stabilitykit.report.collate.spike_summary`):
    count (per signal when there are two), first step, the worst (step, signal, value vs the
    running mean, limit) and its top layer; all ``–`` for a record older than spike detection
    (unknown, not zero)."""
    if summary is None:
        return [fmt(None)] * 4
    count = str(summary["count"])
    by_signal = summary.get("by_signal") or {}
    if len(by_signal) > 1:
        count += " (" + ", ".join(f"{SIGNAL_NAMES.get(k, k)} {n}" for k, n in by_signal.items())
        count += ")"
    worst = summary.get("worst")
    if not worst:
        return [count, fmt(summary.get("first_step")), fmt(None), fmt(None)]
    signal = SIGNAL_NAMES.get(str(worst.get("signal")), str(worst.get("signal")))
    text = (
        f"step {fmt(worst.get('step'))}: {signal} {fmt(worst.get('value'))} vs running mean "
        f"{fmt(worst.get('baseline'))} (limit {fmt(worst.get('limit'))})"
    )
    top = worst.get("top_layer")
    layer = f"`{top[0]}` {fmt(top[1])}" if top else fmt(None)
    return [count, fmt(summary.get("first_step")), text, layer]


def has_spike_records(report: StageReport) -> bool:
    """Whether any run (or reference) of ``report`` has a record of its spikes."""
    return any(r.get("spikes") is not None for r in (*report.references, *report.rows))


def _spike_table(report: StageReport) -> list[str]:
    """Per run (and reference): its spikes (:func:`spike_cells`); empty when no record has
    them."""
    if not has_spike_records(report):
        return []
    header = ["arm", "seed", "spikes", "first step", "worst spike", "top layer (grad norm)"]
    body = [
        [f"{r['reference']} (reference)", fmt(r["seed"]), *spike_cells(r.get("spikes"))]
        for r in report.references
    ]
    body += [[r["arm_name"], fmt(r["seed"]), *spike_cells(r.get("spikes"))] for r in report.rows]
    return _table(header, body)


def _arms_section(report: StageReport) -> list[str]:
    """What tells the arms apart (a table of the differing recipe fields, as run), what they
    share (the key fields, one line) and what the scale changed."""
    heads = report.arm_heads()
    lines: list[str] = []
    fields = report.differing()
    if fields:
        lines += ["What differs between the arms (as run):", ""]
        lines += _table(
            ["arm", *(f"`{f}`" for f in fields)],
            [[label, *recipe_cells(row, fields)] for label, row in heads],
        )
        lines.append("")
    elif len(heads) > 1:
        lines += ["No recipe field differs between the arms: they differ only in name.", ""]
    common = common_fields([row for _, row in heads])
    if common:
        shared = ", ".join(f"`{k}` {field_value(v)}" for k, v in common.items())
        lines += [f"{'Same for every arm' if len(heads) > 1 else 'Recipe'}: {shared}.", ""]
    return lines + _scale_lines(heads)


def scale_said(row: Mapping[str, Any]) -> str:
    """What ``--sk-scale`` did to ``row``'s arm: ``scale `ci` changed `epochs` 50 → 25 (as
    written → as run)``."""
    changes, scale = scale_changes_of(row), row.get("scale") or "?"
    if changes is None:
        return f"scale `{scale}`; what it changed is not recorded (a record older than that)"
    if not changes:
        if scale == "custom":
            return "ran as written (`--sk-scale none`): no field set by a scale"
        return f"scale `{scale}` changed no field of the arm"
    return f"scale `{scale}` changed {scale_text(changes)} (as written → as run)"


def scale_notes(heads: Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str | None, str]]:
    """``[(None, text)]`` when every arm of ``heads`` (label, row) shares what the scale did,
    else ``(label, text)`` per arm (:func:`scale_said`)."""
    texts = [scale_said(row) for _, row in heads]
    if len(set(texts)) <= 1:
        return [(None, t) for t in texts[:1]]
    return [(label, t) for (label, _), t in zip(heads, texts, strict=True)]


def _scale_lines(heads: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """What ``--sk-scale`` changed (as written → as run): one line when every arm shares it,
    else a table, one row per arm."""
    notes = scale_notes(heads)
    if not notes:
        return []
    if notes[0][0] is None:
        who = "Every arm" if len(heads) > 1 else "The arm"
        return [f"{who}: {notes[0][1]}.", ""]
    body = [[str(label), text] for label, text in notes]
    return [*_table(["arm", "what `--sk-scale` changed"], body), ""]


def _other_table(report: StageReport) -> list[str]:
    """The declared metrics without a tolerance, the diagnostics and the metrics of records
    without a ``workload`` block, per run: shown, never gated. Empty when there are none."""
    rows = [*report.references, *report.rows]
    keys = other_keys(rows)
    if not keys:
        return []
    labels: dict[str, str] = {}
    for r in rows:
        for m in row_workload(r).metrics:
            labels.setdefault(m.name, m.title)
    body = []
    for r in rows:
        own = set(other_of(r))
        name = f"{r['reference']} (reference)" if r.get("reference") else r["arm_name"]
        body.append([name, fmt(r["seed"])] + [fmt(r.get(k) if k in own else None) for k in keys])
    return _table(["arm", "seed", *(labels.get(k, k) for k in keys)], body)


def _expected_of(members: Sequence[Mapping[str, Any]]) -> str:
    """`` (expected diverged)`` for the seeds of an arm meant to fail, with how many judged
    seeds did not (`` (expected diverged: **1 mismatch**)``); empty for an arm meant to pass."""
    expects = sorted({r["expect"] for r in members if r.get("expect")})
    if not expects:
        return ""
    missed = sum(
        1 for r in members if r.get("expect") and r["verdict"] not in (r["expect"], INTERRUPTED)
    )
    shown = " or ".join(expects)
    if not missed:
        return f" (expected {shown})"
    return f" (expected {shown}: **{missed} mismatch{'' if missed == 1 else 'es'}**)"


def _seed_table(report: StageReport) -> list[str]:
    metrics = declared_metrics(report.rows)
    keys = [("best val loss", "best_val_loss", None)]
    keys += [(m.title, m.name, m.floor) for m in metrics]
    header = ["arm", "runs", "verdicts", "failure rate (95% Wilson CI)"]
    header += [f"{h} median [IQR]" for h, _, _ in keys]
    header += ["pre-clip grad norm p99 median", "post-clip max median"]
    body = []
    for a in report.arms:
        cells = []
        member = arm_rows(a, report.rows)[0]
        for _, key, floor in keys:
            if not in_table(member, key):
                cells.append(fmt(None))
                continue
            text = f"{fmt(a.median.get(key))} [{fmt(a.iqr.get(key), 2)}]"
            if floor and a.median.get(floor) is not None:
                text += f" (floor {fmt(a.median[floor])})"
            if key == LOSS_COLUMN.key and not report.loss_comparable():
                text += f" {DAGGER}"
            cells.append(text)
        body.append(
            [
                a.arm_name,
                str(len(a.runs)),
                arm_verdicts(a) + _expected_of(arm_rows(a, report.rows)),
                fmt_rate(a),
                *cells,
                fmt(a.median.get("grad_norm_preclip_p99")),
                fmt(a.median.get("grad_norm_postclip_max")),
            ]
        )
    return _table(header, body)


def render_markdown(
    report: StageReport, records: Sequence[RunRecord], out_dir: str | os.PathLike
) -> str:
    """The text of ``summary.md`` (links relative to ``out_dir``)."""
    out = Path(out_dir)
    data = sorted({r["data_hash"] for r in report.rows if r.get("data_hash")})
    lines = [
        f"# {report.title} summary",
        "",
        f"Scale: {report.scale or '–'} · data hash: {', '.join(data) or '–'} · "
        f"{plural(len(report.rows), 'run')} of {plural(len(report.arms), 'arm')}",
        "",
        *_code_lines(records),
        "## Arms",
        "",
        *_arms_section(report),
        "## Runs",
        "",
        *_run_table(report),
        "",
        "Grad norms are the global L2 norm over the logged steps, before clipping (median, p99, "
        "max) and after it (what the optimiser got); ↑ / ↓ mark which way a metric is better, "
        "and a floor is the trivial predictor's value.",
    ]
    footnote = loss_footnote(report)
    if footnote:
        lines += ["", footnote]
    other = _other_table(report)
    if other:
        lines += [
            "",
            "## Other metrics",
            "",
            *other,
            "",
            "Metrics declared without a gate tolerance, diagnostics, and all that a record "
            "without a workload declaration logged: shown, never gated.",
        ]
    spikes = _spike_table(report)
    if spikes:
        lines += [
            "",
            "## Spikes",
            "",
            *spikes,
            "",
            "A spike is a step whose loss or pre-clip grad norm went past its rule's limit over "
            "the running mean of the steps before it (the rules are in each run's `stats.json`); "
            "the worst is the largest value / limit, its top layer the one with the largest grad "
            "norm at that step. A – for every column: the record predates spike detection, or "
            "the run never finished (unknown, not zero).",
        ]
    if any(len(a.runs) > 1 for a in report.arms):
        lines += ["", "## Seeds", "", *_seed_table(report), ""]
        lines.append("Medians and IQR are over the stable seeds; interrupted runs are not judged.")
    lines += frontier_lines(report.frontiers, report.files.get(FRONTIER_KEY), out)
    if report.comparisons:
        lines += ["", "## Against the reference", ""] + [f"- {c}" for c in report.comparisons]
    lines += [
        "",
        "## Did instability emerge?",
        "",
        f"**{'Yes' if report.instability else 'No'}.** {report.conclusion}",
        "",
    ]
    lines += [f"- {f}" for f in report.findings]
    if report.ranking:
        lines += ["", "## How the arms rank", ""] + [f"- {r}" for r in report.ranking]
    lines += ["", "## Recommended next experiment", ""] + [f"- {s}" for s in report.next_steps]
    lines += ["", "## Plots", ""]
    for key, caption in PLOT_CAPTIONS.items():
        if report.files.get(key):
            lines += [f"![{caption}]({_link(report.files[key], out)})", "", PLOT_NOTES[key], ""]
    charts = [(k, p) for k, p in report.files.items() if k.startswith(f"{SPIKE_LAYERS_KEY}:")]
    for key, path in charts:
        arm = key.partition(":")[2]
        lines += [f"![per-layer grad norm at the worst spike of {arm}]({_link(path, out)})", ""]
    if charts:
        lines += [SPIKE_LAYERS_NOTE, ""]
    lines += ["", "## Run folders", ""]
    lines += [f"- [{rec.path.name}]({_link(rec.path, out)})" for rec in records]
    notes = [*report.notes, *_tracker_notes(records)]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _code_lines(records: Sequence[RunRecord]) -> list[str]:
    """``Code: <commit> (dirty) · <package>==<version>``, one line per distinct code under
    test (``config.json`` ``code``); none for records older than it."""
    seen: dict[str, None] = {}
    for rec in records:
        code = rec.config.get("code")
        if not isinstance(code, dict):
            continue
        commit = code.get("commit")
        text = f"commit {commit[:12]}" if isinstance(commit, str) else "not a git checkout"
        if code.get("dirty"):
            text += " (uncommitted changes)"
        package = code.get("package")
        if isinstance(package, dict) and package.get("name"):
            text += f" · {package['name']} {package.get('version')}"
        seen[text] = None
    return [f"Code: {'; '.join(seen)}", ""] if seen else []


def _tracker_notes(records: Sequence[RunRecord]) -> list[str]:
    """A note per run whose tracker failed (``stats.json`` ``trackers``): its record is
    complete, the tracker lacks (part of) it."""
    out = []
    for rec in records:
        for name, status in (rec.stats.get("trackers") or {}).items():
            if status != "ok":
                out.append(f"{rec.path.name}: {name} {status}; the record is complete")
    return out
