"""Records on disk into the trackers (``stabilitykit export``): each run replayed from its
folder as it would have streamed, records of 0.2 and 0.3 included (what they lack is left out).
A run exported before (or tracked live) is continued, not repeated: TensorBoard purges its
earlier events, MLflow continues the run named in ``mlflow.json`` and sends only what it lacks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from stabilitykit.record.run_record import RunRecord
from stabilitykit.track import TrackedRun, trackers


def export_records(
    records: Iterable[RunRecord],
    *,
    tensorboard: str | os.PathLike | None = None,
    mlflow: str | os.PathLike | None = None,
) -> list[tuple[str, bool]]:
    """Send each of ``records`` to the trackers asked for; returns per run a line naming each
    tracker's outcome (``ok`` or why it failed) and whether all were ok. MLflow parent runs of
    the sessions seen end ``FINISHED``."""
    lines: list[tuple[str, bool]] = []
    sessions: set[tuple[str, str]] = set()
    for record in records:
        fan = trackers(tensorboard, mlflow)
        run = TrackedRun(record.path, record.config)
        fan.start(run)
        fan.replay(record)
        fan.close()
        status = ", ".join(f"{name} {state}" for name, state in fan.status.items())
        ok = all(state == "ok" for state in fan.status.values())
        steps = f"{len(record.steps)} steps, {record.verdict.kind.value}"
        lines.append((f"{run.name}: {steps}: {status}", ok))
        session = (record.config.get("tags") or {}).get("session")
        if session:
            sessions.add((run.stage, session))
    if mlflow is not None:
        from stabilitykit.track.mlflow import finish_session

        for stage, session in sorted(sessions):
            finish_session(mlflow, stage, session, {})
    return lines
