"""The ``stabilitykit`` command: what happens outside a pytest session.

::

    stabilitykit compare BASE HEAD [--require-baseline] [--strict]  # exit 1 on a regression
    stabilitykit power BASELINE...   # what the gate can detect, per metric (docs/criteria.md)
    stabilitykit report DIR [--stage NAME] [--out DIR]
    stabilitykit accept DIR --baseline PATH [--stage NAME] [--arm PATTERN ...]
    stabilitykit merge DIR... --out DIR --stage NAME   # writes DIR/NAME/ as the plugin does
    stabilitykit replay RUN --step S [--out DIR] [--from-start]  # one step, again, inspected
    stabilitykit export RUNS... [--tensorboard DIR] [--mlflow URI]  # into experiment trackers

BASE and HEAD are folders of run records, or ``<stage>_metrics.json`` files; BASE may also be a
baseline file. Exit status: 0 fine, 1 a regression, 2 bad input (the message names the file).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import secrets
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
from stabilitykit.names import check_path_name, is_path_name
from stabilitykit.record.run_record import PARTIAL, RunRecord, read_record, scan_runs, session_of

EXIT_OK, EXIT_REGRESSION, EXIT_BAD_INPUT = 0, 1, 2


class InputError(ValueError):
    """Input the command cannot use; the message says which and why."""


# --- reading inputs -----------------------------------------------------------------------------


def read_records(root: Path, *, strict: bool) -> tuple[list[RunRecord], list[str]]:
    """Run records under ``root`` and notes naming each folder left out and why (unfinished,
    a symlink, a file of the wrong shape). ``strict``: a record that cannot be read is an error
    instead of a note."""
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    paths, notes = scan_runs(root)
    records = []
    for path in paths:
        try:
            records.append(read_record(path))
        except (ValueError, OSError) as exc:
            if strict:
                raise
            notes.append(f"left out {path}: {exc}")
    if not records:
        if notes:
            raise InputError(
                f"{root}: no readable run folder under it; {len(notes)} left out:\n  "
                + "\n  ".join(notes)
            )
        raise InputError(f"{root}: no run folders (a folder holding config.json) under it")
    return records, notes


def read_runs(path: Path) -> tuple[list[ArmRun], list[str]]:
    """The runs of a record folder or a stage metrics file, one per arm hash (the newest), and
    notes on what was left out."""
    if path.is_dir():
        records, notes = read_records(path, strict=True)
        return newest_per_arm(arm_run(r) for r in records), notes
    from stabilitykit.report import read_stage_metrics

    rows = read_stage_metrics(path)["rows"]
    if not rows:
        raise InputError(f"{path}: the stage metrics file holds no rows")
    if not all(isinstance(row, dict) for row in rows):
        raise InputError(f"{path}: rows: expected a list of objects")
    try:
        return newest_per_arm(arm_run(row) for row in rows), []
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


def schema_of(path: Path) -> str | None:
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    return d.get("schema") if isinstance(d, dict) else None


def read_side(path: Path) -> tuple[Baseline | list[ArmRun], list[str]]:
    """A baseline, or the runs of a record folder or stage metrics file; and notes on what was
    left out."""
    if path.is_dir():
        return read_runs(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder")
    from stabilitykit.report.summary import STAGE_METRICS_SCHEMA

    schema = schema_of(path)
    if schema == BASELINE_SCHEMA:
        return read_baseline(path), []
    if schema == STAGE_METRICS_SCHEMA:
        return read_runs(path)
    raise InputError(
        f"{path}: schema {schema!r} is neither {BASELINE_SCHEMA!r} nor {STAGE_METRICS_SCHEMA!r}; "
        "give a baseline file, a stage metrics file or a folder of run records"
    )


def warn(console: Console, notes: Sequence[str]) -> None:
    """One yellow ``warning:`` line per note."""
    for note in notes:
        console.print(Text(f"warning: {note}", "yellow"), soft_wrap=True)


def _only(values: set[Any], what: str, source: Path) -> Any:
    values.discard(None)
    if len(values) > 1:
        raise InputError(f"{source}: runs of several {what}s {sorted(values)}; give one at a time")
    return values.pop() if values else None


# --- commands -----------------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    (base, base_notes), (head, head_notes) = read_side(Path(args.base)), read_side(Path(args.head))
    if isinstance(head, Baseline):
        raise InputError(f"{args.head}: HEAD must hold runs (a record folder or metrics file)")
    if not isinstance(base, Baseline):
        scale = _only({r.scale for r in base}, "scale", Path(args.base))
        stages = {r.stage for r in base} - {None}
        stage = stages.pop() if len(stages) == 1 else None  # a label only: hashes match arms
        base = baseline_from_runs(base, stage=stage, scale=scale, path=Path(args.base))
    report = gate_runs(head, base)
    warn(console, base_notes + head_notes)
    console.print(report.rich(args.require_baseline, args.strict))
    return EXIT_OK if report.ok(args.require_baseline, args.strict) else EXIT_REGRESSION


def cmd_power(args: argparse.Namespace, console: Console) -> int:
    from stabilitykit.gate.metrics import DEFAULT_RULES, rules_from_config
    from stabilitykit.gate.power import power_markdown, power_table
    from stabilitykit.workload import get_workload

    def rules(entry: Any) -> Any:  # the gated metrics of the arm's workload, as it declares them
        name = entry.arm.get("workload")
        return (
            rules_from_config({"workload": get_workload(name).describe()})
            if name
            else (DEFAULT_RULES)
        )

    tables = []
    for path in map(Path, args.baselines):
        baseline = read_baseline(path)
        tables.append((baseline.stage or path.stem, power_table(baseline, rules)))
    console.print(Text(power_markdown(tables).rstrip()), soft_wrap=True)
    return EXIT_OK


def _selected(run: ArmRun, patterns: Sequence[str]) -> bool:
    names = (run.arm_id, run.family_id, run.arm_name)
    return not patterns or any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


def cmd_accept(args: argparse.Namespace, console: Console) -> int:
    root, target = Path(args.dir), Path(args.baseline)
    if args.stage is not None:
        check_path_name("stage", args.stage, "--stage")
    records, notes = read_records(root, strict=False)
    runs = []
    for record in records:
        try:
            runs.append(arm_run(record))
        except ValueError as exc:
            notes.append(f"left out {record.path}: {exc}")
    notes += [f"left out {r.source}: the run never finished" for r in runs if not r.complete]
    matching = [r for r in runs if _selected(r, args.arm)]
    if not matching:
        present = ", ".join(sorted({r.arm_name for r in runs})) or "none"
        raise InputError(
            f"{root}: no run matches --arm {' '.join(args.arm)}; arms present: {present}"
        )
    runs = [r for r in matching if r.complete]
    stage, where = args.stage, "--stage"
    if stage is None and target.suffix == ".json":
        stage, where = read_baseline(target, missing_ok=True).stage, f"{target}: stage"
    if stage is None:
        stage, where = _only({r.stage for r in runs}, "stage", root), "the runs' tags.stage"
    if stage is None:
        raise InputError(f"{root}: the runs carry no stage; give --stage")
    check_path_name("stage", stage, where)
    runs = newest_per_arm(r for r in runs if r.stage in (None, stage))
    if not runs:
        raise InputError(f"{root}: no complete runs of {stage} match {args.arm or 'any arm'}")
    scale = _only({r.scale for r in runs}, "scale", root)
    if scale is None:
        raise InputError(f"{root}: the runs record no scale")
    check_path_name("scale", scale, "the runs' scale")
    path = baseline_path(target, stage, scale)
    if target.suffix != ".json" and target.resolve() not in path.resolve().parents:
        raise InputError(f"{path}: not inside the baselines folder {target}")
    diff = update_baseline(path, runs, stage, scale)
    warn(console, notes)
    console.print(diff.rich())
    return EXIT_OK


def _stage_of(record: RunRecord) -> str | None:
    return (record.config.get("tags") or {}).get("stage")


def _stage_records(
    records: list[RunRecord], stage: str | None, root: Path, *, by_name: bool = False
) -> tuple[str, list[RunRecord], list[str]]:
    """The stage (given, else from the records' tags, else the folder's name when it is a stage
    name), its records and notes on what was left out.

    Per arm hash, the newest run (by creation time) of each arm name in the newest session that
    ran that hash: a renamed arm is one arm (its old name's runs, from an older session, are
    left out), while two names that one session ran are two arms even where a scale makes them
    one hash, as the session's own report keeps them (Darcy's ``deep`` and ``control`` at
    smoke). ``by_name`` (the shards of one study, ``merge``: one session each): every name's
    newest run, whatever its session."""
    if stage is None:
        stage = _only({_stage_of(r) for r in records}, "stage", root)
    if stage is None:
        name = root.resolve().name
        if not is_path_name("stage", name):
            raise InputError(
                f"{root}: the runs carry no stage and the folder's name {name!r} is not a stage "
                "name; give --stage"
            )
        stage = name
    check_path_name("stage", stage)
    mine = [r for r in records if _stage_of(r) in (None, stage)]
    notes = []
    if len(mine) < len(records):
        notes.append(f"left out {len(records) - len(mine)} run(s) of other stages")

    def order(r: RunRecord) -> tuple[bool, str, str]:
        return (r.complete, r.created, r.path.name)

    groups: dict[str, list[RunRecord]] = {}
    for r in mine:
        groups.setdefault(r.config.get("arm_hash") or str(r.path), []).append(r)
    kept: list[RunRecord] = []
    for group in groups.values():
        latest = max(group, key=order)
        if not by_name:
            session = session_of(latest)
            group = [r for r in group if session is not None and session_of(r) == session]
            group = group or [latest]
        newest: dict[Any, RunRecord] = {}
        for r in group:
            name = r.arm.get("name")
            if name not in newest or order(r) > order(newest[name]):
                newest[name] = r
        kept += newest.values()
    if len(kept) < len(mine):
        notes.append(f"left out {len(mine) - len(kept)} older run(s) of the same arms")
    return stage, sorted(kept, key=lambda r: r.path.name), notes


def _render_report(
    stage: str,
    records: list[RunRecord],
    out: Path | None,
    warnings: list[str],
    notes: list[str],
    console: Console,
) -> None:
    from stabilitykit.report import build_stage_report, write_stage_report
    from stabilitykit.report.terminal import print_stage_report

    report = build_stage_report(stage, records, {})
    report = dataclasses.replace(report, notes=(*warnings, *report.notes))
    if out is not None:
        report = write_stage_report(report, out, records, {})
    print_stage_report(report, console)
    warn(console, warnings)
    for note in notes:
        console.print(Text(note, "dim"), soft_wrap=True)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    root = Path(args.dir)
    if args.stage is not None:
        check_path_name("stage", args.stage, "--stage")
    records, warnings = read_records(root, strict=False)
    stage, records, notes = _stage_records(records, args.stage, root)
    out = Path(args.out) if args.out else None
    _render_report(stage, records, out, warnings, notes, console)
    return EXIT_OK


def copy_run(src: Path, dest: Path) -> list[str]:
    """Copy the run folder ``src`` to ``dest`` (made under a temporary name, renamed into
    place): plain files and folders only; a symlink is not copied, nor anything through it.
    Returns a note per entry left out."""
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(3)}{PARTIAL}")
    notes: list[str] = []

    def copy(a: Path, b: Path) -> None:
        b.mkdir()
        for entry in sorted(os.scandir(a), key=lambda e: e.name):
            source = Path(entry.path)
            if entry.is_symlink():
                notes.append(f"not copied {source}: a symlink (merge copies no link target)")
            elif entry.is_dir(follow_symlinks=False):
                copy(source, b / entry.name)
            elif entry.is_file(follow_symlinks=False):
                shutil.copy2(source, b / entry.name, follow_symlinks=False)
            else:
                notes.append(f"not copied {source}: not a plain file")

    try:
        copy(src, tmp)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return notes


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    stage = check_path_name("stage", args.stage, "--stage")
    stage_dir = Path(args.out) / stage
    runs_dir = stage_dir / "runs"
    sources: list[Path] = []
    warnings: list[str] = []
    found: set[str | None] = set()
    for d in map(Path, args.dirs):
        try:
            records, skipped = read_records(d, strict=False)
        except InputError as exc:
            if not d.is_dir():
                raise
            warnings.append(str(exc))  # a shard without runs: the others may have them
            continue
        warnings += skipped
        for r in records:
            found.add(_stage_of(r))
            if _stage_of(r) in (None, stage):
                sources.append(r.path)
    if not sources:
        others = ", ".join(sorted(s for s in found if s)) or "none"
        raise InputError(
            f"no run of {stage} found in {', '.join(args.dirs)} (stages found: {others}); "
            "nothing written" + "".join(f"\n  {w}" for w in warnings)
        )
    for p in (stage_dir, runs_dir):
        if p.is_symlink():
            raise InputError(f"{p}: a symlink; merge writes nothing through a symlink")
    copied = already = 0
    runs_dir.mkdir(parents=True, exist_ok=True)
    for src in sources:
        dest = runs_dir / src.name
        if dest.exists() or dest.is_symlink() or src.resolve() == dest.resolve():
            already += 1
            continue
        warnings += copy_run(src, dest)
        copied += 1
    console.print(
        Text(
            f"merged {copied} run folder(s) from {len(args.dirs)} folder(s) into {runs_dir}"
            + (f" ({already} already there)" if already else "")
        ),
        soft_wrap=True,
    )
    records, more = read_records(runs_dir, strict=False)
    stage, records, notes = _stage_records(records, stage, stage_dir, by_name=True)
    warnings = list(dict.fromkeys(warnings + more))  # an input may be the output folder
    _render_report(stage, records, stage_dir, warnings, notes, console)
    return EXIT_OK


def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    from stabilitykit.replay import replay

    result = replay(
        Path(args.run),
        args.step,
        out=Path(args.out) if args.out else None,
        from_start=args.from_start,
        cache_dir=Path(args.cache) if args.cache else None,
    )
    recorded = result.recorded
    lines = [
        f"replayed step {result.step} (epoch {result.epoch}) of {args.run} from {result.start}",
        f"  loss {result.loss!r} (recorded {recorded.get('loss')!r})",
        f"  grad norm before clipping {result.grad_norm_preclip!r} "
        f"(recorded {recorded.get('grad_norm_preclip', 'not logged at this step')!r})",
        f"  batch: {len(result.indices)} samples {result.indices[:8]}"
        + (" ..." if len(result.indices) > 8 else ""),
        "  top layers by grad norm: "
        + ", ".join(f"{n} {v:.4g}" for n, v in sorted(result.layers, key=lambda t: -t[1])[:3]),
        f"  {'matches the record' if result.matches else 'DIFFERS from the record'}; "
        f"written to {result.folder}",
    ]
    console.print(Text("\n".join(lines)), soft_wrap=True)
    return EXIT_OK if result.matches else EXIT_REGRESSION


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from stabilitykit.track import MissingExtraError
    from stabilitykit.track.export import export_records

    if args.tensorboard is None and args.mlflow is None:
        raise InputError("nothing to export to: give --tensorboard DIR and/or --mlflow URI")
    records: list[RunRecord] = []
    for root in args.runs:
        found, notes = read_records(Path(root), strict=False)
        warn(console, notes)
        records += found
    try:
        lines = export_records(records, tensorboard=args.tensorboard, mlflow=args.mlflow)
    except MissingExtraError as exc:
        raise InputError(str(exc)) from None
    console.print(Text("\n".join(line for line, _ in lines)), soft_wrap=True)
    return EXIT_OK if all(ok for _, ok in lines) else EXIT_REGRESSION


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
    p.add_argument(
        "--strict",
        action="store_true",
        help="a comparison the gate cannot decide (spread too wide for the sample) fails too",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "power",
        help="what the gate can detect: per gated metric, its spread and smallest regression",
        description="For each arm and gated metric of the baseline files: the spread over "
        "seeds and the smallest regression the gate calls, same machine (seed against seed) "
        "and across machines (one run against the seeds' spread). Prints the markdown table "
        "of docs/criteria.md.",
    )
    p.add_argument("baselines", nargs="+", metavar="BASELINE", help="baseline file(s)")
    p.set_defaults(func=cmd_power)

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
    p.add_argument(
        "--out",
        required=True,
        help="output folder: OUT/<stage>/ gets runs/ and the stage report, as under --sk-out",
    )
    p.add_argument("--stage", required=True, help="stage name, e.g. stage_b")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "replay",
        help="replay one step of a run: its batch, loss and per-layer gradient norms",
        description="Rebuild the run's model and optimiser from its last checkpoint before "
        "step S, replay to S deterministically, and write the batch, the loss and every "
        "layer's gradient norm at S (default: RUN/replays/step-S/). Exit 0 when the replayed "
        "loss and gradient norm equal the recorded ones, 1 when they differ, 2 on bad input.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder")
    p.add_argument("--step", type=int, required=True, metavar="S", help="the step to replay")
    p.add_argument("--out", help="folder for the replay's files (default: RUN/replays/step-S)")
    p.add_argument(
        "--from-start",
        action="store_true",
        help="with no checkpoint before S, replay from the seeded initial model",
    )
    p.add_argument("--cache", help="data-set cache folder (default: as for the run)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "export",
        help="send run records on disk to TensorBoard and/or MLflow (docs/trackers.md)",
        description="Replay each run folder under RUNS into TensorBoard (DIR/<stage>/<run>) "
        "and/or MLflow (a tracking URI, or a folder: sqlite:///DIR/mlflow.db), as a live run "
        "would have written it; records of 0.2 and 0.3 included. A run sent before is "
        "continued, not repeated. Exit 0 when every run reached every tracker, 1 when one "
        "failed (named), 2 on bad input.",
    )
    p.add_argument("runs", metavar="RUNS", nargs="+", help="folders of run records")
    p.add_argument("--tensorboard", metavar="DIR", help="TensorBoard log folder")
    p.add_argument("--mlflow", metavar="URI", help="MLflow tracking URI or folder")
    p.set_defaults(func=cmd_export)
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
