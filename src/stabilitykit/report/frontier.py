"""The frontier section of a stage summary, written when the stage holds sweeps
(:mod:`stabilitykit.sweep`, :mod:`stabilitykit.frontier`; docs/frontiers.md).

A table per stage (one row per family: runs and how many were reused, the stable range, the
best value and its metric, the boundary with its interval, the LR sensitivities with their
caps), a table of each family's points, one line per family comparing its edge with the
control's, and ``plots/frontier.png``: the primary metric (capped at the floor) and the best
val loss against the swept value, one colour per family, the median over seeds (line) and
min–max (band), each failed run marked by its verdict, the workload's floor dashed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stabilitykit.frontier import (
    Frontier,
    frontiers,
    interval_text,
    narrative,
)
from stabilitykit.record.run_record import RunRecord

FRONTIER_KEY = "frontier"
#: The marker of a failed run by its verdict; ``o`` for any other.
VERDICT_MARKERS = {"diverged": "x", "collapsed": "v", "stagnated": "s", "spiking": "^"}


def stage_frontiers(
    rows: Sequence[Mapping[str, Any]], records: Sequence[RunRecord]
) -> list[Frontier]:
    """The frontiers of a stage's rows; a run of a record marked ``earlier_session`` (reused or
    reported from an earlier session) counts as reused."""
    reused = {r.path.name for r in records if r.earlier_session}
    return frontiers(rows, reused=reused)


def _g(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _cap_text(item: Frontier) -> str:
    return f"floor {_g(item.floor)}" if item.floor is not None else "no floor: uncapped"


def summary_table(items: Sequence[Frontier]) -> list[str]:
    """Markdown lines: one row per family."""
    header = (
        "| family | swept | runs (reused) | stable range | best value (metric) | boundary "
        "[interval] | LR sensitivity, metric | LR sensitivity, final val loss |"
    )
    lines = [header, "|" + "---|" * 8]
    for f in items:
        b = f.boundary
        edge = f"{_g(b.estimate)} {interval_text(b)}" if b.bracketed else b.reason
        if b.bracket is not None:
            edge += f", bracket {_g(b.bracket[0])}–{_g(b.bracket[1])}"
        stable = f"{_g(f.stable_range[0])}–{_g(f.stable_range[1])}" if f.stable_range else "none"
        best = f"{_g(f.best_value)} ({f.metric} {_g(f.best_metric)})" if f.best_value else "–"
        sens = f"{_g(f.sensitivity)} ({f.metric}; capped at {_cap_text(f)})" if f.metric else "–"
        loss = f"{_g(f.sensitivity_loss)} (capped at the initial loss)"
        cells = [f"`{f.family}`", f"`{f.field}`", f"{f.runs} ({f.reused})", stable, best, edge]
        lines.append("| " + " | ".join([*cells, sens, loss]) + " |")
    return lines


def points_table(item: Frontier) -> list[str]:
    """Markdown lines: one row per value of ``item``."""
    pct = round(item.confidence * 100)
    lines = [
        f"| `{item.field}` | runs | verdicts | failure rate ({pct} % Wilson) | "
        f"{item.metric or 'metric'} median [min–max], capped | best val loss median | reused |",
        "|" + "---|" * 7,
    ]
    for p in item.points:
        verdicts = ", ".join(f"{k} {n}" for k, n in sorted(p.verdicts.items()))
        rate = f"{p.failures}/{p.n} [{p.ci[0]:.2f}, {p.ci[1]:.2f}]" if p.n else "–"
        band = f" [{_g(p.metric_band[0])}–{_g(p.metric_band[1])}]" if p.metric_band else ""
        cells = [_g(p.value), str(len(p.runs)), verdicts, rate, _g(p.metric) + band, _g(p.loss)]
        lines.append("| " + " | ".join([*cells, str(p.reused)]) + " |")
    return lines


def headline(item: Frontier) -> str:
    """One line for a terminal: ``control over lr: edge 0.0649 [0.0562, 0.1] (bracket
    0.0562–0.0649), stable 0.01–0.0562, 16 runs (14 reused)``."""
    b = item.boundary
    edge = f"edge {_g(b.estimate)} {interval_text(b)}" if b.bracketed else b.reason
    if b.bracket is not None:
        edge += f" (bracket {_g(b.bracket[0])}–{_g(b.bracket[1])})"
    stable = (
        f"{_g(item.stable_range[0])}–{_g(item.stable_range[1])}" if item.stable_range else "none"
    )
    return (
        f"{item.family} over {item.field}: {edge}, stable {stable}, {item.runs} runs "
        f"({item.reused} reused)"
    )


def frontier_lines(
    items: Sequence[Frontier], plot: Path | None, out_dir: str | os.PathLike
) -> list[str]:
    """The ``## Frontier`` section of ``summary.md`` (empty without sweeps)."""
    if not items:
        return []
    pct = round(items[0].confidence * 100)
    lines = ["", "## Frontier", "", *summary_table(items), ""]
    lines += [
        f"The boundary is where the failure rate over seeds reaches 1/2, going up from the lowest "
        f"stable value, interpolated in log space within its bracket; its interval runs between "
        f"the nearest values whose {pct} % Wilson interval lies wholly below and wholly above 1/2 "
        "(– : none was swept). LR sensitivity (Wortsman et al. 2023) is the mean deviation from "
        "the best over the swept range in log space, of the median over seeds; a diverged or "
        "collapsed run counts at the floor (metric) or at its initial loss (loss). Reused: runs "
        "read from an earlier session's record, not trained in this one.",
        "",
    ]
    lines += [f"- {line}" for line in narrative(items)]
    for f in items:
        lines += ["", f"### `{f.family}` over `{f.field}`", "", *points_table(f)]
    if plot is not None:
        link = Path(os.path.relpath(plot, Path(out_dir))).as_posix()
        lines += [
            "",
            f"![frontier]({link})",
            "",
            "Primary metric (left; a diverged or collapsed run, or one worse than the floor, at "
            "the floor) and best val loss (right) against the swept value, one colour per "
            "family: the median over seeds (line) and min–max (band); each failed run is a "
            "marker by verdict (× diverged, ▽ collapsed, □ stagnated, △ spiking, ○ other); the "
            "dashed line is the workload's floor.",
        ]
    return lines


def frontier_figure(items: Sequence[Frontier], rows: Sequence[Mapping[str, Any]]) -> Any:
    """Two panels (primary metric capped at the floor, best val loss) against the swept value,
    log x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from stabilitykit.frontier import capped_metric, sweep_of
    from stabilitykit.record.declared import workload_of
    from stabilitykit.report.plots import arm_colours

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    colours = arm_colours(len(items))
    metric = next((f.metric for f in items if f.metric), None)
    for f, colour in zip(items, colours, strict=True):
        xs = [p.value for p in f.points]
        for ax, mid, band in (
            (axes[0], [p.metric for p in f.points], [p.metric_band for p in f.points]),
            (axes[1], [p.loss for p in f.points], [p.loss_band for p in f.points]),
        ):
            keep = [(x, m, b) for x, m, b in zip(xs, mid, band, strict=True) if m is not None]
            if keep:
                ax.plot(
                    [k[0] for k in keep],
                    [k[1] for k in keep],
                    "-o",
                    color=colour,
                    ms=3,
                    label=f"{f.family} (median)",
                )
                ax.fill_between(
                    [k[0] for k in keep],
                    [k[2][0] for k in keep],
                    [k[2][1] for k in keep],
                    color=colour,
                    alpha=0.2,
                    lw=0,
                )
        for r in rows:
            if sweep_of(r) != (f.family, f.field) or r["verdict"] in ("stable", "interrupted"):
                continue
            x = r["arm"][f.field]
            marker = VERDICT_MARKERS.get(r["verdict"], "o")
            if f.metric:
                primary = workload_of(r).primary
                floor_key = primary.floor if primary else None
                y = capped_metric(r, f.metric, f.direction or "lower", floor_key, f.floor)
                if y is not None:
                    axes[0].plot([x], [y], marker, color=colour, ms=7, mfc="none")
            loss = r.get("best_val_loss")
            if loss is not None:
                axes[1].plot([x], [loss], marker, color=colour, ms=7, mfc="none")
        if f.floor is not None:
            axes[0].axhline(f.floor, color=colour, ls="--", lw=1, label=f"{f.family} floor")
    field = items[0].field if items else "value"
    axes[0].set_ylabel(metric or "primary metric")
    axes[1].set_ylabel("best val loss")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel(field)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    return fig


def write_frontier_plot(
    items: Sequence[Frontier], rows: Sequence[Mapping[str, Any]], plot_dir: Path
) -> Path | None:
    """``plot_dir/frontier.png`` (written to a temp file, renamed into place); ``None`` without
    sweeps."""
    import tempfile

    from stabilitykit.record.schema import file_mode

    if not items:
        return None
    path = plot_dir / f"{FRONTIER_KEY}.png"
    fd, name = tempfile.mkstemp(dir=plot_dir, prefix=".frontier.", suffix=".png")
    os.close(fd)
    tmp = Path(name)
    try:
        frontier_figure(items, rows).savefig(tmp, dpi=100)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
