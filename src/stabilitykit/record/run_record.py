"""One folder per arm run: writing it as the run goes, and reading it back (validated).

Layout of a run folder::

    config.json     the resolved arm, effective seeds, versions, device, code fingerprint, data
                    hash, and ``created`` (ISO-8601 UTC, microseconds): when the run began
    steps.jsonl     one line per logged step, streamed (a killed run keeps its steps)
    layers.jsonl    per-layer gradient norms and update ratios every ``layer_norm_every`` steps
                    and at every spike: a header naming the layers once, then one line per step
                    with one value per layer in that order (columns by position: compact, and
                    appended as the run goes, so a killed run keeps it)
    checkpoints/    ``epoch-NNNN.pt``, the state at the end of the last epoch (all epochs when
                    kept); removed when the run finishes unless it was asked to keep them
    history.json    one row per epoch (epoch 0 = before training)
    metrics.json    named evaluation metrics
    stats.json      summary numbers and the verdict; written last (absent = the run never finished)
    model.pt        a state dict, read back with ``weights_only=True``
    reconstruction.npz  stitched prediction and ground truth of test image 0 (for plots)
    run.lock        locked (flock) while a process trains or resumes the run; names its holder
                    (:mod:`stabilitykit.record.lock`)

A run folder is complete-or-nothing: it is made as ``runs/.<name>-<time>-<rand>.partial`` and
renamed into place once ``config.json`` is written. Readers name the folders they leave out: an
unfinished one (no ``config.json``), a symlink (never followed), a file of the wrong shape.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
from stabilitykit.names import check_path_name
from stabilitykit.record.schema import (
    CONFIG,
    HISTORY,
    METRICS,
    MODEL,
    STATS,
    STEPS,
    RecordError,
    check_stamp,
    read_json,
    stamp,
    write_json,
    write_text,
)

RECONSTRUCTION = "reconstruction.npz"
LAYERS = "layers.jsonl"
CHECKPOINTS = "checkpoints"
RUNS = "runs"
PARTIAL = ".partial"  # suffix of a run folder not yet in place (hidden: ``.<name>.partial``)
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
_NAME_TIME = re.compile(r"-(\d{8}T\d{12}Z)-[0-9a-f]+(?:\.partial)?$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
UNFINISHED = f"an unfinished run folder (the run was killed before its {CONFIG} was in place)"


def new_run_dir(root: str | os.PathLike, run_name: str) -> Path:
    """Create a fresh folder for a run of ``run_name`` under ``root/runs``, still under its
    temporary name ``.<run_name>-<UTC time>-<random>.partial``: :meth:`RunWriter.write_config`
    renames it to ``<run_name>-<UTC time>-<random>`` once ``config.json`` is in it.

    ``run_name`` must be a plain name: a value that would leave ``root`` is rejected, and so is
    a ``runs`` folder that is a symlink.
    """
    runs = Path(root).resolve() / RUNS
    if (
        not isinstance(run_name, str)
        or not run_name
        or run_name.startswith(".")
        or os.sep in run_name
        or "/" in run_name
        or "\0" in run_name
    ):
        raise ValueError(f"run name {run_name!r} is not a plain folder name")
    if runs.is_symlink():  # records are written under the out folder itself, never elsewhere
        raise ValueError(
            f"the runs folder {runs} is a symlink (to {os.readlink(runs)}); runs are written "
            "only into a real folder: replace the link with a folder, or point the output "
            "folder at the link's target"
        )
    stamp_ = dt.datetime.now(dt.UTC).strftime(_TIME_FORMAT)
    path = (runs / f".{run_name}-{stamp_}-{secrets.token_hex(3)}{PARTIAL}").resolve()
    if path.parent != runs:
        raise ValueError(f"run name {run_name!r} escapes {runs}")
    path.mkdir(parents=True, exist_ok=False)
    return path


def is_partial(path: Path) -> bool:
    """Whether ``path`` is a run folder not yet renamed into place."""
    return path.name.startswith(".") and path.name.endswith(PARTIAL)


def time_of_name(name: str) -> dt.datetime | None:
    """The UTC time in a run folder's name (``<arm id>-<time>-<random>``), else ``None``."""
    match = _NAME_TIME.search(name)
    if match is None:
        return None
    try:
        return dt.datetime.strptime(match.group(1), _TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def parse_created(value: Any) -> dt.datetime | None:
    """A ``created`` value (ISO-8601, UTC when it names no zone) as an aware datetime, else
    ``None``."""
    if not isinstance(value, str):
        return None
    try:
        created = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return created if created.tzinfo else created.replace(tzinfo=dt.UTC)


def _iso(time: dt.datetime) -> str:
    return time.astimezone(dt.UTC).isoformat(timespec="microseconds")


class RunWriter:
    """Writes the files of one run folder; ``steps`` are appended and flushed as they come.

    :meth:`write_config` stamps ``created`` (when the folder was made, ISO-8601 UTC) and moves a
    folder from :func:`new_run_dir` into place; ``path`` follows it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.created = time_of_name(self.path.name) or dt.datetime.now(dt.UTC)
        self._steps: IO[str] | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        payload = {**config, "created": config.get("created") or _iso(self.created)}
        write_json(self.path / CONFIG, stamp(payload))
        if is_partial(self.path):
            final = self.path.with_name(self.path.name[1 : -len(PARTIAL)])
            os.rename(self.path, final)
            self.path = final

    def append_steps(self, rows: list[dict[str, Any]]) -> None:
        if self._steps is None:
            fresh = not (self.path / STEPS).exists() or (self.path / STEPS).stat().st_size == 0
            self._steps = open(self.path / STEPS, "a", buffering=1)  # noqa: SIM115
            if fresh:  # a resumed run appends to the rows it kept
                self._steps.write(json.dumps(stamp({"kind": "header"})) + "\n")
        self._steps.write("".join(json.dumps(r) + "\n" for r in rows))
        self._steps.flush()

    def append_layers(self, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Append per-layer rows to ``layers.jsonl`` (its header first, once)."""
        path = self.path / LAYERS
        with open(path, "a") as f:
            if f.tell() == 0:
                f.write(json.dumps(stamp({"kind": "header", **header})) + "\n")
            f.write("".join(json.dumps(r) + "\n" for r in rows))

    def truncate_streams(self, step: int) -> int:
        """Keep only the rows of steps ``<= step`` in ``steps.jsonl`` and ``layers.jsonl`` (a
        resumed run replays the rest); returns the last step logged before, for the record."""
        self.close()
        last = step
        for name in (STEPS, LAYERS):
            path = self.path / name
            if not path.exists():
                continue
            lines = path.read_text().splitlines()
            keep = lines[:1]
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a half-written last line
                row_step = row.get("step") if isinstance(row, dict) else None
                if isinstance(row_step, int) and name == STEPS:
                    last = max(last, row_step)
                if isinstance(row_step, int) and row_step <= step:
                    keep.append(line)
            write_text(path, "".join(line + "\n" for line in keep))
        return last

    def write_history(self, history: list[dict[str, Any]]) -> None:
        write_json(self.path / HISTORY, stamp({"epochs": history}))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.path / METRICS, stamp({"metrics": metrics}))

    def write_stats(self, stats: dict[str, Any], verdict: Verdict) -> None:
        write_json(self.path / STATS, stamp({"stats": stats, "verdict": verdict.to_dict()}))

    def save_model(self, state_dict: dict[str, Any]) -> None:
        import torch

        tmp = self.path / f".{MODEL}.tmp"
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
        os.replace(tmp, self.path / MODEL)

    def save_reconstruction(self, prediction: np.ndarray, ground_truth: np.ndarray) -> None:
        tmp = self.path / f".{RECONSTRUCTION}.tmp.npz"
        np.savez(tmp, prediction=prediction, ground_truth=ground_truth)
        os.replace(tmp, self.path / RECONSTRUCTION)

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None


@dataclass(frozen=True)
class RunRecord:
    """A run folder read back. ``complete`` is False when ``stats.json`` is missing (the run was
    killed); the verdict is then ``interrupted`` with that as evidence. ``earlier_session``:
    reported beside a session's runs, but run in an earlier session (set by the caller)."""

    path: Path
    config: dict[str, Any]
    steps: list[dict[str, Any]]
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    stats: dict[str, Any]
    verdict: Verdict
    complete: bool
    notes: tuple[str, ...] = field(default=())
    earlier_session: bool = False

    @property
    def arm(self) -> dict[str, Any]:
        return self.config.get("arm") or {}

    @property
    def created(self) -> dt.datetime:
        """When the run began (UTC): ``config.json``'s ``created``; for an older record the time
        in the folder's name, else the modification time of its ``config.json``."""
        return created_of(self.config, self.path)

    def load_state_dict(self) -> dict[str, Any]:
        import torch

        return torch.load(self.path / MODEL, map_location="cpu", weights_only=True)

    def reconstruction(self) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.path / RECONSTRUCTION
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return z["prediction"], z["ground_truth"]


def created_of(config: dict[str, Any], path: Path) -> dt.datetime:
    """See :attr:`RunRecord.created`."""
    created = parse_created(config.get("created")) or time_of_name(path.name)
    if created is not None:
        return created
    for candidate in (path / CONFIG, path):
        try:
            return dt.datetime.fromtimestamp(candidate.stat().st_mtime, dt.UTC)
        except OSError:
            continue
    return _EPOCH


def _json_lines(path: Path) -> tuple[list[tuple[int, Any]], list[str]]:
    """``(line number, value)`` of each non-blank line of a JSON-lines file, and notes. A
    half-written last line (a run killed mid-write) is dropped with a note; any other line that
    is not JSON is a :class:`RecordError` naming the file and line. A missing file: nothing."""
    if not path.exists():
        return [], []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    out: list[tuple[int, Any]] = []
    notes: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append((i + 1, json.loads(line)))
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines) - 1:
                notes.append(f"{path}: dropped a half-written last line")
                continue
            raise RecordError(f"{path}: line {i + 1} is not valid JSON") from None
    return out, notes


def read_steps(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a ``steps.jsonl``; a half-written last line is dropped with a note."""
    lines, notes = _json_lines(path)
    rows: list[dict[str, Any]] = []
    for n, row in lines:
        if n == 1:
            check_stamp(row, path)
            continue
        if not isinstance(row, dict):
            raise RecordError(f"{path}: line {n}: got {_kind(row)}; expected an object")
        rows.append(row)
    return rows, notes


def read_layers(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The layer names and the rows of a ``layers.jsonl`` (:data:`LAYERS`): each row's
    ``grad_norm`` (and ``update_ratio``, when logged) has one value per name, in that order.

    A missing file (a run without layer telemetry, or older than it) gives ``([], [])``; a
    half-written last line (a killed run) is dropped. Anything else malformed (a header that is
    not a stamped header naming the layers, a row that is not an object with an int ``step`` and
    one number or null per layer) is a :class:`RecordError` naming the file and line, so a
    reader never pairs a norm with the wrong layer."""
    lines, _ = _json_lines(path)
    if not lines:
        return [], []
    first, header = lines[0]
    if first != 1:
        raise RecordError(f"{path}: line 1: blank; expected the header")
    check_stamp(header, path)
    names = header.get("layers")
    if (
        header.get("kind") != "header"
        or not isinstance(names, list)
        or not all(isinstance(name, str) for name in names)
    ):
        raise RecordError(f"{path}: line 1: got {_kind(header)}; expected a header naming layers")
    rows: list[dict[str, Any]] = []
    for n, row in lines[1:]:
        if not isinstance(row, dict):
            raise RecordError(f"{path}: line {n}: got {_kind(row)}; expected an object")
        step = row.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            raise RecordError(f"{path}: line {n}: step: got {_kind(step)}; expected an int")
        for key in ("grad_norm", "update_ratio"):
            if key in row and not _per_layer(row[key], len(names)):
                raise RecordError(
                    f"{path}: line {n}: {key}: got {_kind(row[key])}; expected "
                    f"{len(names)} numbers or nulls (one per layer)"
                )
        rows.append(row)
    return list(names), rows


def _per_layer(values: Any, n: int) -> bool:
    """Whether ``values`` is a list of ``n`` numbers or nulls."""
    return (
        isinstance(values, list)
        and len(values) == n
        and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
        )
    )


def read_record(path: str | os.PathLike) -> RunRecord:
    """Read and validate one run folder: :class:`RecordError` naming the bad file and field
    when a file is missing, foreign, newer, corrupt or of the wrong shape."""
    path = Path(path)
    if not (path / CONFIG).exists():
        if path.is_dir() and (is_partial(path) or path.parent.name == RUNS):
            raise RecordError(f"{path}: {UNFINISHED}")
        raise RecordError(f"{path}: not a run folder (no {CONFIG})")
    config = read_json(path / CONFIG)
    check_config(config, path / CONFIG)
    steps, notes = read_steps(path / STEPS)
    history = _part(path / HISTORY, "epochs", list, [])
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            where = f"{path / HISTORY}: epochs[{i}]"
            raise RecordError(f"{where}: got {_kind(row)}; expected an object")
    metrics = _part(path / METRICS, "metrics", dict, {})
    if (path / STATS).exists():
        stats_file = read_json(path / STATS)
        stats = _field(stats_file, "stats", dict, path / STATS)
        verdict = verdict_of(_field(stats_file, "verdict", dict, path / STATS), path / STATS)
        complete = True
    else:
        stats, complete = {}, False
        last = steps[-1].get("step") if steps else None
        verdict = Verdict(
            VerdictKind.INTERRUPTED,
            (
                Evidence(
                    "record",
                    f"the run ended without writing {STATS} (killed?); {len(steps)} steps logged",
                    step=last if isinstance(last, int) and not isinstance(last, bool) else None,
                ),
            ),
        )
    return RunRecord(path, config, steps, history, metrics, stats, verdict, complete, tuple(notes))


def _kind(x: Any) -> str:
    return "null" if x is None else f"{type(x).__name__} {x!r}"[:80]


def _field(d: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    if not isinstance(d.get(key), kind):
        expected = "an object" if kind is dict else f"a {kind.__name__}"
        raise RecordError(f"{path}: {key}: got {_kind(d.get(key))}; expected {expected}")
    return d[key]


def _part(path: Path, key: str, kind: type, default: Any) -> Any:
    return _field(read_json(path), key, kind, path) if path.exists() else default


_TEXT_FIELDS = ("arm_id", "arm_hash", "family_hash", "data_hash", "created")
_OBJECT_FIELDS = ("arm", "tags", "seeds")


def check_config(config: dict[str, Any], path: Path) -> None:
    """Raise :class:`RecordError` naming the field when ``config`` has a field of the wrong
    shape, or a stage or scale that is not an allowed name (they become parts of paths)."""
    for key in _OBJECT_FIELDS:
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise RecordError(f"{path}: {key}: got {_kind(config[key])}; expected an object")
    for key in _TEXT_FIELDS:
        if config.get(key) is not None and not isinstance(config[key], str):
            raise RecordError(f"{path}: {key}: got {_kind(config[key])}; expected a string")
    if config.get("created") is not None and parse_created(config["created"]) is None:
        raise RecordError(f"{path}: created: got {config['created']!r}; expected ISO-8601 time")
    arm = config.get("arm") or {}
    tags = config.get("tags") or {}
    checks = (
        ("arm.name", arm.get("name"), None),
        ("tags.session", tags.get("session"), None),
        ("tags.stage", tags.get("stage"), "stage"),
        ("scale", config.get("scale"), "scale"),
        ("arm.scale", arm.get("scale"), "scale"),
    )
    for where, value, kind in checks:
        if value is None:
            continue
        if not isinstance(value, str):
            raise RecordError(f"{path}: {where}: got {_kind(value)}; expected a string")
        if kind is not None:
            try:
                check_path_name(kind, value, where)
            except ValueError as exc:
                raise RecordError(f"{path}: {exc}") from None


def verdict_of(d: dict[str, Any], path: Path) -> Verdict:
    """The verdict of a ``stats.json``; :class:`RecordError` naming what is wrong."""
    try:
        kind = VerdictKind(d.get("kind"))
    except ValueError:
        allowed = [k.value for k in VerdictKind]
        raise RecordError(
            f"{path}: verdict.kind: got {_kind(d.get('kind'))}; allowed: one of {allowed}"
        ) from None
    entries = d.get("evidence", [])
    if not isinstance(entries, list):
        raise RecordError(f"{path}: verdict.evidence: got {_kind(entries)}; expected a list")
    evidence = []
    for i, e in enumerate(entries):
        where = f"{path}: verdict.evidence[{i}]"
        if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in _TEXT_EVIDENCE):
            expected = "an object with a criterion and a message (strings)"
            raise RecordError(f"{where}: got {_kind(e)}; expected {expected}")
        for key in ("value", "limit", "step", "epoch"):
            value = e.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise RecordError(f"{where}.{key}: got {_kind(value)}; expected a number or null")
        unknown = set(e) - {*_TEXT_EVIDENCE, "value", "limit", "step", "epoch"}
        if unknown:
            raise RecordError(f"{where}: unknown field(s) {sorted(unknown)}")
        evidence.append(Evidence.from_dict(e))
    return Verdict(kind, tuple(evidence))


_TEXT_EVIDENCE = ("criterion", "message")


def scan_runs(root: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Run folders (holding a ``config.json``) under ``root``, sorted by path, and notes naming
    what was left out: an unfinished run folder (a folder in ``runs/`` without ``config.json``,
    e.g. killed before it was written) and symlinks (never followed)."""
    runs: list[Path] = []
    notes: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if here.name == RUNS:
            notes += [
                f"left out {here / d}: a symlink (not followed)"
                for d in sorted(dirnames)
                if (here / d).is_symlink()
            ]
        if is_partial(here):
            notes.append(f"left out {here}: {UNFINISHED}")
        elif CONFIG in filenames:
            if (here / CONFIG).is_symlink():
                notes.append(f"left out {here}: its {CONFIG} is a symlink (not followed)")
            else:
                runs.append(here)
        elif here.parent.name == RUNS and here != Path(root):
            notes.append(f"left out {here}: {UNFINISHED}")
    return sorted(runs), sorted(notes)


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Run folders (holding a ``config.json``) under ``root``, sorted by path (symlinks are not
    followed; :func:`scan_runs` also says what was left out)."""
    return scan_runs(root)[0]


def session_of(record: RunRecord) -> str | None:
    """The pytest session that wrote ``record`` (its ``tags.session``), ``None`` if untagged."""
    return (record.config.get("tags") or {}).get("session")


def newest_record(root: str | os.PathLike, keep: Callable[[RunRecord], bool]) -> RunRecord | None:
    """The newest readable record under ``root`` (by :attr:`RunRecord.created`, then folder
    name) that ``keep`` accepts; unreadable folders are passed over. ``None`` when there is
    none."""
    best: RunRecord | None = None
    for path in find_runs(root):
        try:
            record = read_record(path)
        except (ValueError, OSError):
            continue
        newer = best is None or (record.created, path.name) > (best.created, best.path.name)
        if newer and keep(record):
            best = record
    return best
