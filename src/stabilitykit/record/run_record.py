"""One folder per arm run: writing it as the run goes, and reading it back (validated).

Layout of a run folder::

    config.json     the resolved arm, effective seeds, versions, device, code fingerprint, data hash
    steps.jsonl     one line per logged step, streamed (a killed run keeps its steps)
    history.json    one row per epoch (epoch 0 = before training)
    metrics.json    named evaluation metrics
    stats.json      summary numbers and the verdict; written last (absent = the run never finished)
    model.pt        a state dict, read back with ``weights_only=True``
    reconstruction.npz  stitched prediction and ground truth of test image 0 (for plots)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
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
)

RECONSTRUCTION = "reconstruction.npz"


def new_run_dir(root: str | os.PathLike, run_name: str) -> Path:
    """Create a fresh, uniquely named folder ``root/runs/<run_name>-<UTC time>-<random>``.

    ``run_name`` must be a plain name: a value that would leave ``root`` is rejected.
    """
    runs = Path(root).resolve() / "runs"
    if not run_name or os.sep in run_name or run_name in {".", ".."} or "/" in run_name:
        raise ValueError(f"run name {run_name!r} is not a plain folder name")
    stamp_ = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = (runs / f"{run_name}-{stamp_}-{secrets.token_hex(3)}").resolve()
    if runs not in path.parents:
        raise ValueError(f"run name {run_name!r} escapes {runs}")
    path.mkdir(parents=True, exist_ok=False)
    return path


class RunWriter:
    """Writes the files of one run folder; ``steps`` are appended and flushed as they come."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._steps: IO[str] | None = None

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.path / CONFIG, stamp(config))

    def append_steps(self, rows: list[dict[str, Any]]) -> None:
        if self._steps is None:
            self._steps = open(self.path / STEPS, "a", buffering=1)  # noqa: SIM115
            self._steps.write(json.dumps(stamp({"kind": "header"})) + "\n")
        self._steps.write("".join(json.dumps(r) + "\n" for r in rows))
        self._steps.flush()

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
    killed); the verdict is then ``interrupted`` with that as evidence."""

    path: Path
    config: dict[str, Any]
    steps: list[dict[str, Any]]
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    stats: dict[str, Any]
    verdict: Verdict
    complete: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def arm(self) -> dict[str, Any]:
        return self.config.get("arm", {})

    def load_state_dict(self) -> dict[str, Any]:
        import torch

        return torch.load(self.path / MODEL, map_location="cpu", weights_only=True)

    def reconstruction(self) -> tuple[np.ndarray, np.ndarray] | None:
        path = self.path / RECONSTRUCTION
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return z["prediction"], z["ground_truth"]


def read_steps(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a ``steps.jsonl``; a half-written last line is dropped with a note."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    if not path.exists():
        return rows, notes
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                notes.append(f"{path}: dropped a half-written last line")
                continue
            raise RecordError(f"{path}: line {i + 1} is not valid JSON") from None
        if i == 0:
            check_stamp(row, path)
            continue
        rows.append(row)
    return rows, notes


def read_record(path: str | os.PathLike) -> RunRecord:
    """Read and validate one run folder (raises :class:`RecordError` naming the bad file)."""
    path = Path(path)
    if not (path / CONFIG).exists():
        raise RecordError(f"{path}: not a run folder (no {CONFIG})")
    config = read_json(path / CONFIG)
    steps, notes = read_steps(path / STEPS)
    history = read_json(path / HISTORY)["epochs"] if (path / HISTORY).exists() else []
    metrics = read_json(path / METRICS)["metrics"] if (path / METRICS).exists() else {}
    if (path / STATS).exists():
        stats_file = read_json(path / STATS)
        stats, verdict = stats_file["stats"], Verdict.from_dict(stats_file["verdict"])
        complete = True
    else:
        stats, complete = {}, False
        last = steps[-1]["step"] if steps else None
        verdict = Verdict(
            VerdictKind.INTERRUPTED,
            (
                Evidence(
                    "record",
                    f"the run ended without writing {STATS} (killed?); {len(steps)} steps logged",
                    step=last,
                ),
            ),
        )
    return RunRecord(path, config, steps, history, metrics, stats, verdict, complete, tuple(notes))


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Run folders (holding a ``config.json``) under ``root``, sorted by path."""
    return sorted(p.parent for p in Path(root).rglob(CONFIG))
