"""The ``stabilitykit`` command: what happens outside a pytest session.

::

    stabilitykit compare BASE HEAD [--require-baseline]   # exit 1 on a regression
    stabilitykit report DIR [--stage NAME] [--out DIR]
    stabilitykit accept DIR --baseline PATH [--stage NAME] [--arm PATTERN ...]
    stabilitykit merge DIR... --out DIR --stage NAME

BASE and HEAD are folders of run records, or ``<stage>_metrics.json`` files; BASE may also be a
baseline file. Exit status: 0 fine, 1 a regression, 2 bad input (the message names the file).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from stabilitykit.gate.baseline import (
    SCHEMA as BASELINE_SCHEMA,
)
from stabilitykit.gate.baseline import (
    Baseline,
    baseline_from_runs,
    baseline_path,
    read_baseline,
    update_baseline,
)
from stabilitykit.gate.compare import gate_runs
from stabilitykit.gate.metrics import ArmRun, arm_run, newest_per_arm
from stabilitykit.record.run_record import RunRecord, find_runs, read_record

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2


class InputError(ValueError):
    """Input the command cannot use; the message says which and why."""


# --- reading inputs -----------------------------------------------------------------------------


def read_records(root: Path, *, strict: bool) -> tuple[list[RunRecord], list[str]]:
    """Run records under ``root`` and notes on what was left out. ``strict``: an unreadable
    record is an error instead of a note."""
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    records, notes = [], []
    for path in find_runs(root):
        try:
            records.append(read_record(path))
        except (ValueError, OSError) as exc:
            if strict:
                raise
            notes.append(f"left out {path}: {exc}")
    if not records:
        raise InputError(f"{root}: no run folders (a folder holding config.json) under it")
    return records, notes


def read_runs(path: Path) -> list[ArmRun]:
    """The runs of a record folder or a stage metrics file, one per arm hash (the newest)."""
    if path.is_dir():
        records, _ = read_records(path, strict=True)
        return newest_per_arm(arm_run(r) for r in records)
    from stabilitykit.report import read_stage_metrics

    rows = read_stage_metrics(path)["rows"]
    if not rows:
        raise InputError(f"{path}: the stage metrics file holds no rows")
    try:
        return newest_per_arm(arm_run(row) for row in rows)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def schema_of(path: Path) -> str | None:
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    return d.get("schema") if isinstance(d, dict) else None


def read_side(path: Path) -> Baseline | list[ArmRun]:
    """A baseline, or the runs of a record folder or stage metrics file."""
    if path.is_dir():
        return read_runs(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    from stabilitykit.report.summary import STAGE_METRICS_SCHEMA

    schema = schema_of(path)
    if schema == BASELINE_SCHEMA:
        return read_baseline(path)
    if schema == STAGE_METRICS_SCHEMA:
        return read_runs(path)
    raise InputError(
        f"{path}: schema {schema!r} is neither {BASELINE_SCHEMA!r} nor {STAGE_METRICS_SCHEMA!r}; "
        "give a baseline file, a stage metrics file or a folder of run records"
    )


def _only(values: set[Any], what: str, source: Path) -> Any:
    values.discard(None)
    if len(values) > 1:
        raise InputError(f"{source}: runs of several {what}s {sorted(values)}; give one at a time")
    return values.pop() if values else None


# --- commands -----------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    base, head = read_side(Path(args.base)), read_side(Path(args.head))
    if isinstance(head, Baseline):
        raise InputError(f"{args.head}: HEAD must hold runs (a record folder or metrics file)")
    if not isinstance(base, Baseline):
        scale = _only({r.scale for r in base}, "scale", Path(args.base))
        stages = {r.stage for r in base} - {None}
        stage = stages.pop() if len(stages) == 1 else None  # a label only: hashes match arms
        base = baseline_from_runs(base, stage=stage, scale=scale, path=Path(args.base))
    report = gate_runs(head, base)
    console.print(report.rich(args.require_baseline))
    return EXIT_OK if report.ok(args.require_baseline) else EXIT_REGRESSION


def _selected(run: ArmRun, patterns: Sequence[str]) -> bool:
    names = (run.arm_id, run.family_id, run.arm_name)
    return not patterns or any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


def cmd_accept(args: argparse.Namespace, console: Console) -> int:
    root = Path(args.dir)
    records, _ = read_records(root, strict=True)
    runs = [arm_run(r) for r in records]
    unfinished = [r.source for r in runs if not r.complete]
    runs = [r for r in runs if r.complete and _selected(r, args.arm)]
    target = Path(args.baseline)
    stage = args.stage
    if stage is None and target.suffix == ".json":
        stage = read_baseline(target, missing_ok=True).stage
    if stage is None:
        stage = _only({r.stage for r in runs}, "stage", root)
    if stage is None:
        raise InputError(f"{root}: the runs carry no stage; give --stage")
    runs = newest_per_arm(r for r in runs if r.stage in (None, stage))
    if not runs:
        raise InputError(f"{root}: no complete runs of {stage} match {args.arm or 'any arm'}")
    scale = _only({r.scale for r in runs}, "scale", root)
    if scale is None:
        raise InputError(f"{root}: the runs record no scale")
    diff = update_baseline(baseline_path(target, stage, scale), runs, stage, scale)
    for source in unfinished:
        console.print(Text(f"left out {source}: the run never finished", "yellow"), soft_wrap=True)
    console.print(diff.rich())
    return EXIT_OK


def _stage_records(
    records: list[RunRecord], stage: str | None, root: Path
) -> tuple[str, list[RunRecord], list[str]]:
    """The stage (given, else from the records' tags, else the folder name), its records (the
    newest run of each arm hash) and notes on what was left out."""
    tags = {(r.config.get("tags") or {}).get("stage") for r in records}
    stage = stage or _only(tags, "stage", root) or root.resolve().name
    mine = [r for r in records if (r.config.get("tags") or {}).get("stage") in (None, stage)]
    notes = []
    if len(mine) < len(records):
        notes.append(f"left out {len(records) - len(mine)} run(s) of other stages")
    newest: dict[str, RunRecord] = {}
    for r in mine:
        key = r.config.get("arm_hash") or str(r.path)
        old = newest.get(key)
        if old is None or (r.complete, r.path.name) > (old.complete, old.path.name):
            newest[key] = r
    if len(newest) < len(mine):
        notes.append(f"left out {len(mine) - len(newest)} older run(s) of the same arms")
    kept = sorted(newest.values(), key=lambda r: r.path.name)
    return stage, kept, notes


def _render_report(
    stage: str, records: list[RunRecord], out: Path | None, notes: list[str], console: Console
) -> None:
    from stabilitykit.report import build_stage_report, write_stage_report
    from stabilitykit.report.terminal import print_stage_report

    report = build_stage_report(stage, records, {})
    if out is not None:
        report = write_stage_report(report, out, records, {})
    print_stage_report(report, console)
    for note in notes:
        console.print(Text(note, "dim"), soft_wrap=True)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    root = Path(args.dir)
    records, notes = read_records(root, strict=False)
    stage, records, more = _stage_records(records, args.stage, root)
    _render_report(stage, records, Path(args.out) if args.out else None, notes + more, console)
    return EXIT_OK


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    out = Path(args.out)
    runs_dir = out / "runs"
    sources: list[Path] = []
    notes: list[str] = []
    for d in map(Path, args.dirs):
        records, skipped = read_records(d, strict=False)
        notes += skipped
        for r in records:
            if (r.config.get("tags") or {}).get("stage") in (None, args.stage):
                sources.append(r.path)
    copied = already = 0
    runs_dir.mkdir(parents=True, exist_ok=True)
    for src in sources:
        dest = runs_dir / src.name
        if dest.exists() or src.resolve() == dest.resolve():
            already += 1
            continue
        shutil.copytree(src, dest)
        copied += 1
    console.print(
        Text(
            f"merged {copied} run folder(s) from {len(args.dirs)} folder(s) into {runs_dir}"
            + (f" ({already} already there)" if already else "")
        ),
        soft_wrap=True,
    )
    records, more = read_records(runs_dir, strict=False)
    stage, records, others = _stage_records(records, args.stage, out)
    _render_report(stage, records, out, notes + more + others, console)
    return EXIT_OK


# --- the parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stabilitykit", description="Stability reports, comparisons and baselines."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "compare",
        help="hold HEAD's runs against BASE; exit 1 on a regression",
        description="Hold the runs of HEAD against BASE (a baseline file, a record folder or a "
        "stage metrics file). Exit 0 when nothing regressed, 1 on a regression, 2 on bad input.",
    )
    p.add_argument("base", metavar="BASE", help="baseline file, record folder or metrics file")
    p.add_argument("head", metavar="HEAD", help="record folder or metrics file")
    p.add_argument(
        "--require-baseline",
        action="store_true",
        help="a HEAD arm missing from BASE, or changed since, fails too (for CI)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="render the stage summary from the run records under DIR")
    p.add_argument("dir", metavar="DIR", help="folder holding run folders (searched recursively)")
    p.add_argument("--stage", help="stage name (default: from the records, else DIR's name)")
    p.add_argument("--out", help="also write <stage>_metrics.json, summary.md and plots here")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "accept",
        help="write the runs under DIR into a baseline file, printing the diff",
        description="Write or update the baseline entries of the (selected) arms under DIR; "
        "entries of other arms are kept.",
    )
    p.add_argument("dir", metavar="DIR", help="folder holding run folders")
    p.add_argument(
        "--baseline",
        required=True,
        metavar="PATH",
        help="baseline file (.json), or a baselines folder: PATH/<scale>/<stage>.json",
    )
    p.add_argument("--stage", help="stage name (default: the file's, else from the records)")
    p.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="PATTERN",
        help="accept only arms whose id or name matches (glob; repeatable)",
    )
    p.set_defaults(func=cmd_accept)

    p = sub.add_parser("merge", help="join the run folders of several shards into one report")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="shard output folders")
    p.add_argument("--out", required=True, help="merged folder: runs/ and the stage report")
    p.add_argument("--stage", required=True, help="stage name, e.g. stage_b")
    p.set_defaults(func=cmd_merge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    handler: Callable[[argparse.Namespace, Console], int] = args.func
    try:
        return handler(args, console)
    except (ValueError, OSError) as exc:  # InputError, BaselineError, RecordError included
        print(f"stabilitykit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
