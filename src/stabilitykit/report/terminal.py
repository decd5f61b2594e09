"""The stage summary in the terminal: one rich table (arms × best val loss, the workloads' declared
metrics beside their floors, grad norms; verdicts coloured, reference rows), then the conclusion,
the findings and the recommended next experiment.

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

from stabilitykit.report.collate import Column, arm_rows, representative, stage_columns
from stabilitykit.report.narrative import fmt, fmt_rate
from stabilitykit.report.summary import StageReport, cell

VERDICT_STYLES = {
    "stable": "bold green",
    "diverged": "bold red",
    "error": "bold red",
    "out_of_memory": "bold red",
}
OTHER_VERDICT_STYLE = "bold yellow"  # collapsed, spiking, stagnated, interrupted


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


def _cells(values: dict[str, Any], columns: list[Column], row: dict[str, Any]) -> list[Text]:
    return [Text(cell(values, c, row), justify="right") for c in columns]


def stage_table(report: StageReport) -> Table:
    """Arms × key metrics (medians over stable seeds where an arm has several), references
    first and dimmed. The metric columns are the workloads' declared metrics
    (:func:`~stabilitykit.report.collate.stage_columns`), each beside its floor."""
    seeded = any(len(a.runs) > 1 for a in report.arms)
    columns = stage_columns([*report.references, *report.rows])
    table = Table(title=f"{report.title} · scale {report.scale or '–'}", title_justify="left")
    table.add_column("arm")
    table.add_column("seeds", justify="right")
    table.add_column("verdict")
    if seeded:
        table.add_column("failure rate (95% CI)")
    for column in columns:
        table.add_column(column.title, justify="right")
    for ref in report.references:
        cells = [Text(f"{ref['reference']} (ref)"), Text(fmt(ref["seed"]))]
        cells.append(verdict_text({ref["verdict"]: 1}, counted=False))
        if seeded:
            cells.append(Text("–"))
        table.add_row(*cells, *_cells(ref, columns, ref), style="dim")
    for arm in report.arms:
        several = len(arm.runs) > 1
        seeds = str(len(arm.runs)) if several else fmt(arm.seeds[0])
        cells = [Text(arm.arm_name), Text(seeds), verdict_text(arm.verdicts, counted=several)]
        if seeded:
            cells.append(Text(fmt_rate(arm) if several else "–"))
        values = representative(arm, report.rows)
        table.add_row(*cells, *_cells(values, columns, arm_rows(arm, report.rows)[0]))
    return table


def print_stage_report(report: StageReport, console: Console) -> None:
    """Print ``report``: the table, the conclusion, the findings, the recommendation, the files."""
    console.print(stage_table(report))
    if report.instability:
        style = VERDICT_STYLES["diverged"]
    elif report.rows and all(r["verdict"] == "stable" for r in report.rows):
        style = VERDICT_STYLES["stable"]
    else:
        style = OTHER_VERDICT_STYLE
    console.print(Text("Verdict: ", style="bold") + Text(_plain(report.conclusion), style=style))
    for line in (*report.findings, *report.comparisons):
        console.print(Text("  • ") + Text(_plain(line)))
    console.print(Text("Next: ", style="bold") + Text(_plain(report.recommendation)))
    summary = report.files.get("summary")
    if summary is not None:
        names = ", ".join(
            Path(os.path.relpath(p, summary.parent)).as_posix() for p in report.files.values()
        )
        console.print(
            Text(f"Written to {summary.parent}: ", style="bold") + Text(names, style="dim")
        )
