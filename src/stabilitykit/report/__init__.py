"""Stage reports: collate run records into rows and arm summaries (:mod:`.collate`), choose the
narrative by rules over the numbers (:mod:`.narrative`), write ``<stage>_metrics.json``,
``summary.md`` and plots (:mod:`.summary`, :mod:`.plots`), print to a terminal (:mod:`.terminal`).

Example::

    records = [read_record(p) for p in find_runs("reports/stage_b/runs")]
    report = build_stage_report("stage_b", records, {"stage_a/control": control_record})
    report = write_stage_report(report, "reports/stage_b", records, {"stage_a/control": ...})
"""

from stabilitykit.report.collate import (
    METRIC_COLUMNS,
    ArmSummary,
    metrics_row,
    summarise_arms,
    wilson_interval,
)
from stabilitykit.report.summary import (
    StageReport,
    build_stage_report,
    read_stage_metrics,
    write_stage_report,
)

__all__ = [
    "METRIC_COLUMNS",
    "ArmSummary",
    "StageReport",
    "build_stage_report",
    "metrics_row",
    "read_stage_metrics",
    "summarise_arms",
    "wilson_interval",
    "write_stage_report",
]
