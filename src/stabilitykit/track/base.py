"""What a tracker is given, and the fan-out that isolates a failing one.

A tracker mirrors one run record into an experiment tracker as the run goes (TensorBoard,
MLflow): the same rows the record streams, under the names of :data:`STEP_KEYS`,
:data:`EPOCH_KEYS` and :func:`layer_tag`. A run's record stays the source of truth: a tracker
that raises (a locked database, a full disk) is closed and left out for the rest of the run,
its failure goes into the run's ``stats.json`` (``trackers``), and the run goes on.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from stabilitykit.record.run_record import LAYERS, RunRecord, read_layers, read_record

#: Per-step fields of ``steps.jsonl`` a tracker writes, as ``field: tag``.
STEP_KEYS = {
    "loss": "step/loss",
    "grad_norm_preclip": "step/grad_norm_preclip",
    "grad_norm_postclip": "step/grad_norm_postclip",
    "lr": "step/lr",
}
#: Per-epoch fields of ``history.json``, as ``field: tag`` (x-axis: the epoch's last step).
EPOCH_KEYS = {"train_loss": "epoch/train_loss", "val_loss": "epoch/val_loss", "lr": "epoch/lr"}
#: Summary stats written beside the workload's metrics at the end (``final/<name>``).
FINAL_STATS = ("best_val_loss", "final_val_loss", "steps", "train_seconds")


def layer_tag(kind: str, layer: str) -> str:
    """``layer_grad_norm/<layer>`` or ``layer_update_ratio/<layer>``."""
    return f"layer_{kind}/{layer}"


def number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools and None are not), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass(frozen=True)
class TrackedRun:
    """One run as a tracker sees it at its start: its folder, its ``config.json``, a display
    name that sorts by stage and arm (``<stage>/<run folder>``), and whether the folder already
    holds rows from an earlier process (a resume, or an export of a finished record)."""

    path: Path
    config: dict[str, Any]
    resumed: bool = False

    @property
    def stage(self) -> str:
        return (self.config.get("tags") or {}).get("stage") or "runs"

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.path.name}"

    @property
    def tags(self) -> dict[str, str]:
        """Tags a user filters by: verdict comes at the end (:func:`verdict_tags`)."""
        config, arm = self.config, self.config.get("arm") or {}
        code = config.get("code") or {}
        numerics = config.get("numerics") or {}
        tags = {
            "stage": self.stage,
            "arm": arm.get("name"),
            "arm_id": config.get("arm_id"),
            "arm_hash": config.get("arm_hash"),
            "workload": arm.get("workload") or (config.get("workload") or {}).get("name"),
            "seed": arm.get("seed"),
            "scale": config.get("scale") or arm.get("scale"),
            "device": config.get("device"),
            "numerics": numerics.get("mode") if isinstance(numerics, dict) else None,
            "session": (config.get("tags") or {}).get("session"),
            "expect": (config.get("tags") or {}).get("expect"),
            "git_commit": code.get("commit"),
            "git_dirty": code.get("dirty"),
            "package": _package(code.get("package")),
            "stabilitykit": (config.get("versions") or {}).get("stabilitykit"),
        }
        return {k: str(v) for k, v in tags.items() if v is not None}


def _package(package: Any) -> str | None:
    if isinstance(package, dict) and package.get("name"):
        return f"{package['name']}=={package.get('version')}"
    return None


def flat_params(config: dict[str, Any]) -> dict[str, Any]:
    """The arm's fields (``data.<field>`` for its data spec), its hashes and the scale's
    changes (``scale_changes.<field>``: ``written -> run``), for a tracker's parameters."""
    out: dict[str, Any] = {}
    for key, value in (config.get("arm") or {}).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    for key in ("arm_hash", "family_hash", "data_hash", "code_fingerprint"):
        if config.get(key) is not None:
            out[key] = config[key]
    for key, change in (config.get("scale_changes") or {}).items():
        if isinstance(change, list) and len(change) == 2:
            out[f"scale_changes.{key}"] = f"{change[0]} -> {change[1]}"
    return out


def verdict_tags(record: RunRecord) -> dict[str, str]:
    """``verdict`` (its kind) and ``verdict_reason`` (its explanation, when it failed)."""
    tags = {"verdict": record.verdict.kind.value}
    if not record.verdict.ok:
        tags["verdict_reason"] = record.verdict.explain()[:5000]
    return tags


def final_metrics(record: RunRecord) -> dict[str, float]:
    """``final/<name>``: the workload's metrics (floors included) and :data:`FINAL_STATS`."""
    out = {f"final/{k}": v for k, v in record.metrics.items() if number(v) is not None}
    out.update({f"final/{k}": record.stats[k] for k in FINAL_STATS if number(record.stats.get(k))})
    return {k: float(v) for k, v in out.items()}


def epoch_steps(steps: Iterable[dict[str, Any]]) -> dict[int, int]:
    """``{epoch: its last logged step}`` (epoch 0, before training: step 0)."""
    out = {0: 0}
    for row in steps:
        epoch, step = row.get("epoch"), row.get("step")
        if isinstance(epoch, int) and isinstance(step, int):
            out[epoch] = max(out.get(epoch, step), step)
    return out


def epoch_rows(
    history: Sequence[dict[str, Any]], steps: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], int]]:
    """The rows of ``history`` with the step each is drawn at: its epoch's last logged step. A
    row whose epoch has no logged step is left out (a resumed run's history past its checkpoint
    is trained again); in a record whose steps name no epoch (older ones), the step is
    estimated from the last step, pro rata."""
    ends = epoch_steps(steps)
    last = max((r["step"] for r in steps if isinstance(r.get("step"), int)), default=0)
    epochs = [r["epoch"] for r in history if isinstance(r.get("epoch"), int)]
    out = []
    for row in history:
        epoch = row.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            continue
        if epoch in ends:
            out.append((row, ends[epoch]))
        elif len(ends) == 1 and epochs:  # no epoch in the steps: an older record
            out.append((row, round(last * epoch / max(epochs))))
    return out


@runtime_checkable
class Tracker(Protocol):
    """Receives one run's rows as the run goes; :class:`Trackers` calls it."""

    name: str

    def start(self, run: TrackedRun) -> None: ...
    def steps(self, rows: Sequence[dict[str, Any]]) -> None: ...
    def layers(self, names: Sequence[str], rows: Sequence[dict[str, Any]]) -> None: ...
    def epoch(self, row: dict[str, Any], step: int) -> None: ...
    def finish(self, record: RunRecord) -> None: ...
    def close(self) -> None: ...


class Trackers:
    """Fans a run's rows out to ``trackers``; one that raises is closed, named in
    :attr:`status` (``{name: "ok" | "failed in <call>: <error>"}``) and skipped from then on."""

    def __init__(self, trackers: Iterable[Tracker] = ()) -> None:
        self.active: list[Tracker] = list(trackers)
        self.status: dict[str, str] = {t.name: "ok" for t in self.active}
        self._step = 0
        self.started = False

    def __bool__(self) -> bool:
        return bool(self.status)

    def _call(self, method: str, *args: Any) -> None:
        for tracker in list(self.active):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # the record is the truth: a tracker must not cost it
                self.active.remove(tracker)
                reason = f"failed in {method}: {type(exc).__name__}: {exc}"
                self.status[tracker.name] = reason[:2000]
                warnings.warn(f"stabilitykit: {tracker.name} {reason}; left out", stacklevel=3)
                with contextlib.suppress(Exception):  # the first error is the one named
                    tracker.close()

    def start(self, run: TrackedRun) -> None:
        """Start every tracker; for a folder with earlier rows, replay them from the record
        (each tracker drops what it already holds: no step twice, none missing)."""
        self.started = True
        self._call("start", run)
        if run.resumed and self.active:
            self.replay(read_record(run.path), with_finish=False)

    def replay(self, record: RunRecord, *, with_finish: bool = True) -> None:
        """Send ``record``'s rows on disk (and, ``with_finish``, its end)."""
        self.steps(record.steps)
        if (record.path / LAYERS).exists():
            names, rows = read_layers(record.path / LAYERS)
            self.layers(names, rows)
        for row, step in epoch_rows(record.history, record.steps):
            self._call("epoch", row, step)
        if with_finish:
            self.finish(record)

    def steps(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows and isinstance(rows[-1].get("step"), int):
            self._step = rows[-1]["step"]
        self._call("steps", rows)

    def layers(self, names: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        self._call("layers", names, rows)

    def epoch(self, row: dict[str, Any]) -> None:
        """``row`` of ``history.json`` at the last step seen (epoch 0: step 0)."""
        self._call("epoch", row, self._step if row.get("epoch") else 0)

    def finish(self, record: RunRecord) -> None:
        """The run's end; a run that ended before its trackers started (its model failed to
        build) starts them first, so that it shows, with its verdict."""
        if not self.started:
            self.start(TrackedRun(record.path, record.config))
        self._call("finish", record)

    def close(self) -> None:
        self._call("close")
