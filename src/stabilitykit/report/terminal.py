"""The stage summary in the terminal: one rich table (arms × what differs between their recipes,
best val loss, the workloads' declared metrics beside their floors, grad norms before and after
clipping; verdicts coloured, reference rows), what the arms share and what the scale changed,
then the conclusion, the findings, the ranking and the recommended next experiment. A best val
loss that does not compare between the arms (different losses or workloads) is marked ``†``.

All text from records goes in as :class:`rich.text.Text`, never as markup (evidence such as
``[finite] ...`` would otherwise be read as a style tag).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stabilitykit.report.collate import (
    Column,
    arm_rows,
    common_fields,
    field_value,
    recipe_cells,
    representative,
    stage_columns,
)
from stabilitykit.report.narrative import fmt, fmt_rate
from stabilitykit.report.summary import (
    StageReport,
    flagged_cell,
    loss_footnote,
    scale_notes,
)

VERDICT_STYLES = {
    "stable": "bold green",
    "diverged": "bold red",
    "error": "bold red",
    "out_of_memory": "bold red",
}
OTHER_VERDICT_STYLE = "bold yellow"  # collapsed, spiking, stagnated, interrupted
#: The grad norms, two columns of ``median / p99 / max`` in the terminal (for width).
GRAD_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "pre-clip grad norm median / p99 / max",
        ("grad_norm_preclip_median", "grad_norm_preclip_p99", "grad_norm_preclip_max"),
    ),
    ("post-clip median / max", ("grad_norm_postclip_median", "grad_norm_postclip_max")),
)
_GRAD_KEYS = frozenset(k for _, keys in GRAD_GROUPS for k in keys)


def verdict_text(verdicts: dict[str, int], counted: bool) -> Text:
    """Verdict names coloured by kind, ``×count`` each when ``counted``."""
    text = Text()
    for i, (kind, count) in enumerate(verdicts.items()):
        if i:
            text.append(", ")
        text.append(kind, style=VERDICT_STYLES.get(kind, OTHER_VERDICT_STYLE))
        if counted:
            text.append(f" ×{count}")
    return text


def _plain(markdown: str) -> str:
    return markdown.replace("`", "")


def _cells(
    report: StageReport, values: dict[str, Any], columns: list[Column], row: dict[str, Any]
) -> list[Text]:
    cells = [Text(flagged_cell(report, values, c, row), justify="right") for c in columns]
    for _, keys in GRAD_GROUPS:
        cells.append(Text(" / ".join(fmt(values.get(k)) for k in keys), justify="right"))
    return cells


def stage_table(report: StageReport) -> Table:
    """Arms × key metrics (medians over stable seeds where an arm has several), references
    first and dimmed. The metric columns are the workloads' declared metrics
    (:func:`~stabilitykit.report.collate.stage_columns`), each beside its floor; the grad
    norms before and after clipping two columns (:data:`GRAD_GROUPS`)."""
    seeded = any(len(a.runs) > 1 for a in report.arms)
    columns = [
        c for c in stage_columns([*report.references, *report.rows]) if c.key not in _GRAD_KEYS
    ]
    table = Table(title=f"{report.title} · scale {report.scale or '–'}", title_justify="left")
    table.add_column("arm", overflow="fold")
    table.add_column("seeds", justify="right")
    table.add_column("verdict", overflow="fold")
    if seeded:
        table.add_column("failure rate (95% CI)", no_wrap=True)
    for column in columns:
        table.add_column(column.title, justify="right")
    for header, _ in GRAD_GROUPS:
        table.add_column(header, justify="right")
    for ref in report.references:
        cells = [Text(f"{ref['reference']} (ref)"), Text(fmt(ref["seed"]))]
        cells.append(verdict_text({ref["verdict"]: 1}, counted=False))
        if seeded:
            cells.append(Text("–"))
        table.add_row(*cells, *_cells(report, ref, columns, ref), style="dim")
    for arm in report.arms:
        several = len(arm.runs) > 1
        seeds = str(len(arm.runs)) if several else fmt(arm.seeds[0])
        first = arm_rows(arm, report.rows)[0]
        cells = [Text(arm.arm_name), Text(seeds), verdict_text(arm.verdicts, counted=several)]
        if seeded:
            cells.append(Text(fmt_rate(arm) if several else "–"))
        values = representative(arm, report.rows)
        table.add_row(*cells, *_cells(report, values, columns, first))
    return table


def differs_table(report: StageReport) -> Table | None:
    """Arms (references first, dimmed) × the recipe fields that differ between them, as run;
    ``None`` when no field differs."""
    fields = report.differing()
    if not fields:
        return None
    table = Table()
    table.add_column("arm")
    for f in fields:
        table.add_column(f, justify="right")
    for label, row in report.arm_heads():
        table.add_row(
            Text(label.replace(" (reference)", " (ref)")),
            *(Text(v) for v in recipe_cells(row, fields)),
            style="dim" if row.get("reference") else None,
        )
    return table


def context_lines(report: StageReport) -> list[str]:
    """What the arms share, what the scale changed, and the ``†`` footnote (plain text)."""
    heads = [row for _, row in report.arm_heads()]
    lines = []
    common = common_fields(heads)
    if common:
        shared = ", ".join(f"{k} {field_value(v)}" for k, v in common.items())
        lines.append(f"{'Same for every arm' if len(heads) > 1 else 'Recipe'}: {shared}.")
    for label, text in scale_notes(report.arm_heads()):
        who = label or ("Every arm" if len(heads) > 1 else "The arm")
        lines.append(f"{who}: {text}.")
    footnote = loss_footnote(report)
    return [_plain(line) for line in (*lines, *([footnote] if footnote else []))]


def print_stage_report(report: StageReport, console: Console) -> None:
    """Print ``report``: the table, the conclusion, the findings, the recommendation, the files."""
    differs = differs_table(report)
    if differs is not None:
        console.print(Text("What differs between the arms (as run)", style="bold"))
        console.print(differs)
    console.print(stage_table(report))
    for line in context_lines(report):
        console.print(Text(line, style="dim"))
    if report.instability:
        style = VERDICT_STYLES["diverged"]
    elif report.rows and all(r["verdict"] == "stable" for r in report.rows):
        style = VERDICT_STYLES["stable"]
    else:
        style = OTHER_VERDICT_STYLE
    console.print(Text("Verdict: ", style="bold") + Text(_plain(report.conclusion), style=style))
    for line in (*report.findings, *report.comparisons, *report.ranking):
        console.print(Text("  • ") + Text(_plain(line)))
    if report.frontiers:
        from stabilitykit.frontier import narrative
        from stabilitykit.report.frontier import headline

        for item in report.frontiers:
            console.print(Text("Frontier: ", style="bold") + Text(_plain(headline(item))))
        for line in narrative(report.frontiers):
            console.print(Text("  • ") + Text(_plain(line)))
    console.print(Text("Next: ", style="bold") + Text(_plain(report.recommendation)))
    for note in report.notes:  # records left out, earlier sessions' runs, plots not written
        console.print(Text("warning: ", style="bold yellow") + Text(_plain(note)))
    summary = report.files.get("summary")
    if summary is not None:
        names = ", ".join(
            Path(os.path.relpath(p, summary.parent)).as_posix() for p in report.files.values()
        )
        console.print(
            Text(f"Written to {summary.parent}: ", style="bold") + Text(names, style="dim")
        )
