"""A study session: arms run inside stages, with options applied, references found, and the
stage reports written at the end. The pytest plugin is a thin layer over this module.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabilitykit.arm import AS_WRITTEN, DEVICE_PATTERN, SCALES, Arm, apply_scale
from stabilitykit.cluster import ArmJob, ClusterOptions, run_as_job
from stabilitykit.judge.criteria import DEFAULT_CRITERIA, Criterion
from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.names import STAGE_PREFIX as STAGE_PREFIX  # re-exported
from stabilitykit.names import check_path_name
from stabilitykit.numerics import check_mode, expected_mode
from stabilitykit.record.run_record import (
    RunRecord,
    newest_record,
    read_record,
    scan_runs,
    session_of,
)
from stabilitykit.run import (
    ArmResult,
    check_device,
    check_resume,
    code_fingerprint,
    result_from_record,
    run_arm,
)
from stabilitykit.train.fast import FastPath


@dataclass(frozen=True)
class StudyOptions:
    """What a session applies to every arm: scale, device, seed replicates, output folder."""

    scale: str = "ci"
    out: Path = Path("reports")
    device: str | None = None  # None keeps each arm's own device
    seeds: int = 1
    rerun: bool = False
    cache_dir: Path | None = None
    threads: int | None = 1
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    resume: bool = False
    keep_checkpoints: bool = False
    plots: bool = True  # the stage reports' plots (--sk-no-plots: summary and JSON only)
    fast: str | None = None  # speed options, e.g. "fused,tf32" (stabilitykit.train.fast)
    numerics: str | None = None  # auto, portable or native (stabilitykit.numerics); None: auto
    tensorboard: str | None = None  # a TensorBoard log folder (stabilitykit.track)
    mlflow: str | None = None  # an MLflow tracking URI or folder (stabilitykit.track)
    worker: int | None = None  # the xdist worker's number (gw3: 3), None outside xdist
    # each arm as a cluster job (stabilitykit.cluster); the default trains in this process
    cluster: ClusterOptions = field(default_factory=ClusterOptions)

    def __post_init__(self) -> None:
        if self.scale not in (*SCALES, AS_WRITTEN):
            raise ValueError(
                f"--sk-scale: got {self.scale!r}; allowed: one of {(*SCALES, AS_WRITTEN)}"
            )
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ValueError(f"--sk-seeds: got {self.seeds!r}; allowed: an int >= 1")
        if self.device is not None:
            if not DEVICE_PATTERN.match(self.device):
                raise ValueError(
                    f"--sk-device: got {self.device!r}; allowed: 'cpu', 'cuda', 'cuda:N' or 'mps'"
                )
            if self.cluster.executor != "slurm":  # a Slurm job checks it on its node
                check_device(self.device, field="--sk-device")
        if self.threads is not None and (
            not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1
        ):
            raise ValueError(f"--sk-threads: got {self.threads!r}; allowed: an int >= 1")
        if not isinstance(self.cluster, ClusterOptions):
            raise TypeError(
                f"StudyOptions.cluster: got {type(self.cluster).__name__}; expected ClusterOptions"
            )
        FastPath.parse(self.fast)
        if self.numerics is not None:
            check_mode(self.numerics, "--sk-numerics")

    def prepare(self, arm: Arm, replicate: int = 0) -> Arm:
        """``arm`` at this session's scale and device, seed shifted by ``replicate``."""
        if not isinstance(arm, Arm):
            raise TypeError(f"expected an Arm, got {type(arm).__name__}")
        prepared = apply_scale(arm, self.scale)
        changes: dict[str, Any] = {}
        if self.device is not None:
            changes["device"] = self.device_for_worker()
        if replicate:
            changes["seed"] = arm.seed + replicate
        return prepared.replace(**changes) if changes else prepared

    def device_for_worker(self) -> str | None:
        """``--sk-device cuda`` under xdist: worker ``i`` takes GPU ``i`` modulo the GPUs it
        sees (recorded per run as the arm's device); any other device as given."""
        if self.device != "cuda" or self.worker is None:
            return self.device
        import torch

        count = torch.cuda.device_count()
        return f"cuda:{self.worker % count}" if count else self.device

    def stage_dir(self, stage: str) -> Path:
        """``out/<stage>``; ``ValueError`` when ``stage`` is not a stage name."""
        check_stage_name(stage)
        return Path(self.out) / stage


def check_stage_name(stage: str) -> None:
    """``ValueError`` naming ``stage`` unless it is ``stage_<letters, digits or _>``."""
    check_path_name("stage", stage)


def run_in_stage(
    arm: Arm,
    stage: str,
    options: StudyOptions,
    *,
    criteria: Iterable[Criterion] = DEFAULT_CRITERIA,
    replicate: int = 0,
    progress: Any = True,
    expect: str | None = None,
    tags: dict[str, str] | None = None,
    resume_from: str | Path | None = None,
) -> ArmResult:
    """Run ``arm`` (prepared by ``options``) and write its record under ``out/<stage>/runs``;
    ``expect``: the verdict kind the arm is meant to end with, recorded in its tags.

    With ``options.cluster.executor`` the arm is submitted as a cluster job and this waits for it
    (:mod:`stabilitykit.cluster`). ``tags``: more tags for the record (a job's id);
    ``resume_from``: the run folder to continue (a requeued job's own run).

    A sweep point (``arm.sweep``) whose run is already complete under the stage, by this code
    in the numerics mode this run would have, is read from its record, not trained again
    (:func:`reused_point`), unless ``options.rerun``."""
    if resume_from is None:
        reused = reused_point(arm, stage, options, replicate)
        if reused is not None:
            return reused
    if options.cluster.executor is not None:
        job = ArmJob(
            arm,
            stage,
            options,
            train=run_in_stage,
            criteria=criteria,
            replicate=replicate,
            expect=expect,
            progress=progress,
        )
        return run_as_job(job)
    prepared = options.prepare(arm, replicate)
    tags = {**(tags or {}), "stage": stage, "session": options.session}
    if expect is not None:
        tags["expect"] = expect
    resume = Path(resume_from) if resume_from is not None else None
    if resume is None and options.resume:  # keep what finished, else continue what was killed
        finished = find_cached(options.stage_dir(stage), prepared, options.numerics)
        if finished is not None:  # even beside an older killed run: nothing is trained twice
            return result_from_record(finished)
        resume = find_resumable(options.stage_dir(stage), prepared)
    return run_arm(
        prepared,
        written=arm,
        out_dir=options.stage_dir(stage),
        cache_dir=options.cache_dir,
        criteria=criteria,
        progress=progress,
        tags=tags,
        threads=options.threads,
        resume=resume,
        keep_checkpoints=options.keep_checkpoints,
        fast=FastPath.parse(options.fast),
        numerics=options.numerics,
        tensorboard=options.tensorboard,
        mlflow=options.mlflow,
    )


def track_stage_reports(options: StudyOptions, reports: Iterable[Any]) -> None:
    """Each stage report's plots and files into the session's trackers: TensorBoard images
    (run ``<stage>/summary-<session>``), artifacts of the stage's MLflow parent run, which
    then ends."""
    for report in reports:
        if options.tensorboard:
            from stabilitykit.track.tensorboard import log_stage_images

            log_stage_images(options.tensorboard, report.stage, options.session, report.files)
        if options.mlflow:
            from stabilitykit.track.mlflow import finish_session

            finish_session(options.mlflow, report.stage, options.session, report.files)


def reused_point(
    arm: Arm, stage: str, options: StudyOptions, replicate: int = 0
) -> ArmResult | None:
    """The result of sweep point ``arm`` (prepared by ``options``) from its newest complete
    record under the stage (:func:`find_cached`: same arm hash, code and numerics mode, and the
    same name and sweep family: a run of another family that happens to be the same arm at
    this scale stays that family's), or ``None``: ``arm`` is no sweep point, ``options.rerun``
    is set, or no such record exists."""
    if arm.sweep is None or options.rerun:
        return None
    prepared = options.prepare(arm, replicate)
    cached = find_cached(options.stage_dir(stage), prepared, options.numerics, labelled=True)
    return result_from_record(cached) if cached is not None else None


def find_resumable(stage_dir: Path, arm: Arm) -> Path | None:
    """The newest run folder under ``stage_dir`` that ``arm`` can resume (killed or interrupted,
    same arm and code; one without a usable checkpoint starts afresh in its folder), else
    ``None``: the arm then runs afresh in a new folder."""

    def keep(record: RunRecord) -> bool:
        if record.config.get("arm_hash") != arm.hash:
            return False
        try:
            check_resume(record.path, arm)
        except ValueError:
            return False
        return True

    found = newest_record(stage_dir, keep)
    return found.path if found is not None else None


def check_expect(expect: Any) -> str | None:
    """``expect`` as a verdict kind's value, or ``None``; a ``ValueError`` names the allowed."""
    if expect is None:
        return None
    kinds = tuple(k.value for k in VerdictKind)
    value = expect.value if isinstance(expect, VerdictKind) else expect
    if value not in kinds:
        raise ValueError(f"expect: got {expect!r}; allowed: None or one of {kinds}")
    return value


def find_cached(
    stage_dir: Path, arm: Arm, numerics: str | None = None, *, labelled: bool = False
) -> RunRecord | None:
    """The newest finished record (by :attr:`RunRecord.created`; not ``interrupted``) under
    ``stage_dir`` of exactly this arm, run by this code in the numerics mode a run asked for
    ``numerics`` would have (``labelled``: under the arm's name and sweep too); unreadable
    records are passed over."""
    mode = expected_mode(numerics, arm.device)

    def keep(record: RunRecord) -> bool:
        cfg = record.config
        return (
            record.complete
            and record.verdict.kind is not VerdictKind.INTERRUPTED
            and cfg.get("arm_hash") == arm.hash
            and cfg.get("code_fingerprint") == code_fingerprint()
            and (cfg.get("numerics") or {}).get("mode") == mode
            and (not labelled or _same_label(record, arm))
            and _loads(record)
        )

    return newest_record(stage_dir, keep)


def _same_label(record: RunRecord, arm: Arm) -> bool:
    """Whether ``record`` ran under ``arm``'s name and sweep family."""
    sweep = record.arm.get("sweep")
    return (
        record.arm.get("name") == arm.name
        and (tuple(sweep) if sweep is not None else None) == arm.sweep
    )


def _loads(record: RunRecord) -> bool:
    """Whether ``record``'s arm can be rebuilt (a reference must be)."""
    try:
        Arm.from_dict(record.config["arm"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def reference_result(
    arm: Arm, stage: str, options: StudyOptions, *, replicate: int = 0
) -> tuple[ArmResult, bool]:
    """Another stage's arm: its last record at this scale and arm hash, else run now.

    Returns the result and whether it came from a record.
    """
    prepared = options.prepare(arm, replicate)
    if not options.rerun:
        cached = find_cached(options.stage_dir(stage), prepared, options.numerics)
        if cached is not None:
            return result_from_record(cached), True
    return run_in_stage(arm, stage, options, replicate=replicate), False


def stage_records(stage_dir: Path) -> tuple[list[RunRecord], list[str]]:
    """Every readable run under ``stage_dir``, half-written ones included, and a note naming
    each folder left out and why (unfinished, a symlink, a file of the wrong shape)."""
    paths, notes = scan_runs(stage_dir) if Path(stage_dir).is_dir() else ([], [])
    records = []
    for path in paths:
        try:
            records.append(read_record(path))
        except (ValueError, OSError) as exc:
            notes.append(f"left out {path.name}: {exc}")
    return records, notes


def session_records(stage_dir: Path, session: str) -> list[RunRecord]:
    """Every run of ``session`` under ``stage_dir``, half-written ones included."""
    return [r for r in stage_records(stage_dir)[0] if session_of(r) == session]


def arm_name(record: RunRecord) -> str:
    """The arm's name (``arm.name``, else its id without the seed, else the folder name)."""
    from stabilitykit.gate.metrics import family_id

    name = record.arm.get("name")
    if isinstance(name, str):
        return name
    return family_id(record.config["arm_id"]) if record.config.get("arm_id") else record.path.name


def record_scale(record: RunRecord) -> str | None:
    return record.config.get("scale") or record.arm.get("scale")


def earlier_records(
    records: Iterable[RunRecord], stage: str, session: str, scales: Iterable[str]
) -> list[RunRecord]:
    """For each arm of ``stage`` with a record under the stage but none of ``session``: its
    newest complete runs at one of ``scales`` from earlier sessions (of the arm's newest
    recipe, the newest run of each seed), marked ``earlier_session`` with a note saying so."""
    records = [r for r in records if (r.config.get("tags") or {}).get("stage") == stage]
    ran = {arm_name(r) for r in records if session_of(r) == session}
    scales = set(scales)
    newest: dict[str, RunRecord] = {}  # arm name -> its newest complete run
    for r in records:
        name = arm_name(r)
        if not r.complete or name in ran or session_of(r) == session:
            continue
        if record_scale(r) not in scales:
            continue
        old = newest.get(name)
        if old is None or (r.created, r.path.name) > (old.created, old.path.name):
            newest[name] = r
    picked: dict[tuple[str, str], RunRecord] = {}  # (arm name, arm hash) -> newest run
    for r in records:
        name = arm_name(r)
        last = newest.get(name)
        if (
            last is None
            or not r.complete
            or session_of(r) == session
            or record_scale(r) != record_scale(last)
            or r.config.get("family_hash") != last.config.get("family_hash")
        ):
            continue
        key = (name, r.config.get("arm_hash") or r.path.name)
        old = picked.get(key)
        if old is None or (r.created, r.path.name) > (old.created, old.path.name):
            picked[key] = r
    out = []
    for r in picked.values():
        note = (
            f"{r.path.name}: not run in this session; its record from an earlier session "
            f"(begun {r.created:%Y-%m-%d %H:%M:%S} UTC) is reported"
        )
        out.append(dataclasses.replace(r, earlier_session=True, notes=(*r.notes, note)))
    return out


def reused_records(
    records: Iterable[RunRecord], stage: str, session: str, entries: Iterable[dict[str, Any]]
) -> list[RunRecord]:
    """The records of ``stage`` that ``session`` reused (its ``"arm"`` entries whose run is of
    another session: sweep points, :func:`reused_point`), marked ``earlier_session``; the
    frontier section counts them per value, without a note each."""
    used = {
        Path(e["run_dir"]).resolve() for e in entries if e["stage"] == stage and e["role"] == "arm"
    }
    out = []
    for r in records:
        if session_of(r) != session and r.path.resolve() in used:
            out.append(dataclasses.replace(r, earlier_session=True))
    return out


def write_session_reports(
    options: StudyOptions, stages: Iterable[str], entries: Iterable[dict[str, Any]]
) -> list[Any]:
    """Write ``out/<stage>/`` reports for the session's runs; ``entries`` carry references
    (``role`` other than ``"arm"``: a label such as ``"stage_a/control"``).

    A partial rerun (``-k``) keeps the stage's other arms: each arm with no run in this session
    is reported from its newest complete record at the same scale (:func:`earlier_records`,
    marked ``earlier_session``). So is a sweep point this session read instead of training it
    (:func:`reused_records`). Each record left out is named in the report's notes."""
    from stabilitykit.report.summary import build_stage_report, write_stage_report

    entries = list(entries)
    reports = []
    for stage in stages:
        try:
            stage_dir = options.stage_dir(stage)
        except ValueError:  # each benchmark of that stage has failed, naming the stage
            continue
        every, notes = stage_records(stage_dir)
        records = [r for r in every if session_of(r) == options.session]
        records += reused_records(every, stage, options.session, entries)
        references: dict[str, RunRecord] = {}
        for entry in entries:
            if entry["stage"] == stage and entry["role"] != "arm":
                try:
                    references[entry["role"]] = read_record(entry["run_dir"])
                except (ValueError, OSError) as exc:
                    notes.append(f"left out the reference {entry['role']}: {exc}")
        if not records and not references:
            continue
        scales = {s for r in records if (s := record_scale(r))} or {options.scale}
        shown = {arm_name(r) for r in records}  # a reused point is no earlier-session arm
        earlier = earlier_records(every, stage, options.session, scales)
        records += [r for r in earlier if arm_name(r) not in shown]
        records.sort(key=lambda r: r.path.name)
        report = build_stage_report(stage, records, references)
        report = dataclasses.replace(report, notes=(*notes, *report.notes))
        reports.append(
            write_stage_report(report, stage_dir, records, references, plots=options.plots)
        )
    return reports


def gate_session(
    options: StudyOptions,
    root: str | Path,
    entries: Iterable[dict[str, Any]],
    *,
    accept: bool,
    require: bool,
    strict: bool = False,
) -> tuple[list[str], bool]:
    """The session-level gate per stage: accept the runs into the baselines, or check the
    failure rate over seeds and list unused entries. Returns printable lines and whether the
    session must fail (per-arm regressions already failed their own tests)."""
    from stabilitykit.gate import arm_run, baseline_path, gate_runs, read_baseline, update_baseline

    by_stage: dict[tuple[str, str], list[Any]] = {}
    lines: list[str] = []
    failed = False
    for entry in entries:
        if entry["role"] == "arm":
            try:
                run = arm_run(entry["run_dir"])
            except (ValueError, OSError) as exc:
                lines.append(f"{entry['stage']}: left out {entry['run_dir']}: {exc}")
                failed = True
                continue
            # the run's own scale: under --sk-scale none each arm keeps its own
            by_stage.setdefault((entry["stage"], run.scale or options.scale), []).append(run)
    for (stage, scale), runs in sorted(by_stage.items()):
        try:
            path = baseline_path(
                root, check_path_name("stage", stage), check_path_name("scale", scale)
            )
        except ValueError as exc:
            lines.append(f"{stage}: no baseline path: {exc}")
            failed = True
            continue
        if accept:
            diff = update_baseline(path, runs, stage, scale)
            lines += [f"{stage}: accepted {len(runs)} run(s) into {path}", diff.text()]
            continue
        try:
            baseline = read_baseline(path, missing_ok=True)
        except ValueError as exc:
            lines.append(f"{stage}: {exc}")
            failed = True
            continue
        report = gate_runs(runs, baseline)
        lines.append(report.text(require))
        failed |= any(rate.check.regressed for rate in report.rates)
        failed |= strict and not report.ok(require, strict=True)
    more, frontier_failed = gate_frontiers(root, entries, accept=accept, require=require)
    return lines + more, failed or frontier_failed


def gate_frontiers(
    root: str | Path, entries: Iterable[dict[str, Any]], *, accept: bool, require: bool
) -> tuple[list[str], bool]:
    """The frontier gate of the sweeps among ``entries`` (:mod:`stabilitykit.gate.frontier`):
    accept their frontiers into ``<root>/<scale>/frontiers/<stage>.json``, or check each
    family's edge against it. Returns printable lines and whether the session must fail (an
    edge moved down; under ``require`` also a family without an entry)."""
    from stabilitykit.frontier import frontiers, sweep_of
    from stabilitykit.gate.frontier import (
        accept_frontiers,
        check_frontiers,
        frontier_baseline_path,
        key_of,
        read_frontier_baseline,
        recipe_hash,
    )
    from stabilitykit.report.collate import metrics_row

    by_stage: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        if entry["role"] != "arm":
            continue
        try:
            row = metrics_row(read_record(entry["run_dir"]))
        except (ValueError, OSError):
            continue  # gate_session names it
        if sweep_of(row) is not None and row.get("scale"):
            by_stage.setdefault((entry["stage"], str(row["scale"])), []).append(row)
    lines: list[str] = []
    failed = False
    for (stage, scale), rows in sorted(by_stage.items()):
        items = frontiers(rows)
        recipes = {
            key_of(f.family, f.field): recipe_hash(
                [r for r in rows if sweep_of(r) == (f.family, f.field)], f.field
            )
            for f in items
        }
        try:
            path = frontier_baseline_path(root, stage, scale)
            if accept:
                lines += accept_frontiers(path, items, stage, scale, recipes)
                lines.append(f"{stage}: accepted {len(items)} frontier(s) into {path}")
                continue
            checks = check_frontiers(items, read_frontier_baseline(path), recipes)
        except (ValueError, OSError) as exc:
            lines.append(f"{stage}: frontier gate: {exc}")
            failed = True
            continue
        lines += [f"{stage}: frontier {c.status}: {c.message}" for c in checks]
        failed |= any(c.regressed or (require and c.status == "missing") for c in checks)
    return lines, failed
