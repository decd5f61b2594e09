"""A study session: arms run inside stages, with options applied, references found, and the
stage reports written at the end. The pytest plugin is a thin layer over this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabilitykit.arm import AS_WRITTEN, DEVICE_PATTERN, SCALES, Arm, apply_scale
from stabilitykit.judge.criteria import DEFAULT_CRITERIA, Criterion
from stabilitykit.record.run_record import RunRecord, find_runs, read_record
from stabilitykit.run import ArmResult, check_device, code_fingerprint, run_arm

STAGE_PREFIX = "stage_"


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

    def __post_init__(self) -> None:
        if self.scale not in (*SCALES, AS_WRITTEN):
            raise ValueError(
                f"--sk-scale: got {self.scale!r}; allowed: one of {(*SCALES, AS_WRITTEN)}"
            )
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"--sk-seeds: got {self.seeds!r}; allowed: an int >= 1")
        if self.device is not None:
            if not DEVICE_PATTERN.match(self.device):
                raise ValueError(
                    f"--sk-device: got {self.device!r}; allowed: 'cpu', 'cuda', 'cuda:N' or 'mps'"
                )
            check_device(self.device, field="--sk-device")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"--sk-threads: got {self.threads!r}; allowed: an int >= 1")

    def prepare(self, arm: Arm, replicate: int = 0) -> Arm:
        """``arm`` at this session's scale and device, seed shifted by ``replicate``."""
        if not isinstance(arm, Arm):
            raise TypeError(f"expected an Arm, got {type(arm).__name__}")
        prepared = apply_scale(arm, self.scale)
        changes: dict[str, Any] = {}
        if self.device is not None:
            changes["device"] = self.device
        if replicate:
            changes["seed"] = arm.seed + replicate
        return prepared.replace(**changes) if changes else prepared

    def stage_dir(self, stage: str) -> Path:
        check_stage_name(stage)
        return Path(self.out) / stage


def check_stage_name(stage: str) -> None:
    if not stage.startswith(STAGE_PREFIX) or not stage.replace("_", "").isalnum():
        raise ValueError(
            f"stage: got {stage!r}; allowed: 'stage_<letters or digits>' (e.g. 'stage_b')"
        )


def run_in_stage(
    arm: Arm,
    stage: str,
    options: StudyOptions,
    *,
    criteria: Iterable[Criterion] = DEFAULT_CRITERIA,
    replicate: int = 0,
    progress: Any = True,
) -> ArmResult:
    """Run ``arm`` (prepared by ``options``) and write its record under ``out/<stage>/runs``."""
    prepared = options.prepare(arm, replicate)
    return run_arm(
        prepared,
        written=arm,
        out_dir=options.stage_dir(stage),
        cache_dir=options.cache_dir,
        criteria=criteria,
        progress=progress,
        tags={"stage": stage, "session": options.session},
        threads=options.threads,
    )


def find_cached(stage_dir: Path, arm: Arm) -> RunRecord | None:
    """The newest complete record under ``stage_dir`` of exactly this arm, run by this code."""
    best: RunRecord | None = None
    for path in find_runs(stage_dir):
        try:
            record = read_record(path)
        except ValueError:
            continue
        cfg = record.config
        if (
            record.complete
            and cfg.get("arm_hash") == arm.hash
            and cfg.get("code_fingerprint") == code_fingerprint()
            and (best is None or path.name > best.path.name)
        ):
            best = record
    return best


def result_from_record(record: RunRecord) -> ArmResult:
    """An :class:`ArmResult` from a complete record, with the verdict it was given."""
    arm = Arm.from_dict(record.config["arm"])
    return ArmResult(arm, record.verdict, record.metrics, record.stats, record.history, record.path)


def reference_result(
    arm: Arm, stage: str, options: StudyOptions, *, replicate: int = 0
) -> tuple[ArmResult, bool]:
    """Another stage's arm: its last record at this scale and arm hash, else run now.

    Returns the result and whether it came from a record.
    """
    prepared = options.prepare(arm, replicate)
    if not options.rerun:
        cached = find_cached(options.stage_dir(stage), prepared)
        if cached is not None:
            return result_from_record(cached), True
    return run_in_stage(arm, stage, options, replicate=replicate), False


def session_records(stage_dir: Path, session: str) -> list[RunRecord]:
    """Every run of ``session`` under ``stage_dir``, half-written ones included."""
    records = []
    for path in find_runs(stage_dir):
        try:
            record = read_record(path)
        except ValueError:
            continue
        if record.config.get("tags", {}).get("session") == session:
            records.append(record)
    return records


def write_session_reports(
    options: StudyOptions, stages: Iterable[str], entries: Iterable[dict[str, Any]]
) -> list[Any]:
    """Write ``out/<stage>/`` reports for the session's runs; ``entries`` carry references
    (``role`` other than ``"arm"``: a label such as ``"stage_a/control"``)."""
    from stabilitykit.report.summary import build_stage_report, write_stage_report

    entries = list(entries)
    reports = []
    for stage in stages:
        records = session_records(options.stage_dir(stage), options.session)
        references: dict[str, RunRecord] = {}
        for entry in entries:
            if entry["stage"] == stage and entry["role"] != "arm":
                try:
                    references[entry["role"]] = read_record(entry["run_dir"])
                except (ValueError, OSError):
                    continue
        if not records and not references:
            continue
        report = build_stage_report(stage, records, references)
        reports.append(write_stage_report(report, options.stage_dir(stage), records, references))
    return reports


def gate_session(
    options: StudyOptions,
    root: str | Path,
    entries: Iterable[dict[str, Any]],
    *,
    accept: bool,
    require: bool,
) -> tuple[list[str], bool]:
    """The session-level gate per stage: accept the runs into the baselines, or check the
    failure rate over seeds and list unused entries. Returns printable lines and whether the
    session must fail (per-arm regressions already failed their own tests)."""
    from stabilitykit.gate import arm_run, baseline_path, gate_runs, read_baseline, update_baseline

    by_stage: dict[str, list[str]] = {}
    for entry in entries:
        if entry["role"] == "arm":
            by_stage.setdefault(entry["stage"], []).append(entry["run_dir"])
    lines: list[str] = []
    failed = False
    for stage, run_dirs in sorted(by_stage.items()):
        path = baseline_path(root, stage, options.scale)
        runs = [arm_run(d) for d in run_dirs]
        if accept:
            diff = update_baseline(path, runs, stage, options.scale)
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
        failed |= not all(rate.check.passed for rate in report.rates)
    return lines, failed
