"""MLflow: one run per arm and seed, nested under one parent run per stage and session, written
with ``MlflowClient``.

Where: :func:`tracking_uri` (a folder becomes ``sqlite:///<folder>/mlflow.db``, artifacts
beside it in ``<folder>/mlartifacts``; any URI is taken as it is). The experiment is
``stabilitykit/<stage>``, or ``$MLFLOW_EXPERIMENT_NAME``.

What: params are the arm's fields, its hashes and the scale's changes; metric histories the
per-step, per-layer and per-epoch values (names as in TensorBoard, :mod:`.base`), sent in
batches (each epoch's end, and at most :data:`FLUSH_SECS` apart); ``final/<metric>`` at the end;
tags for the verdict, stage, workload, seed, numerics mode and git commit (also MLflow's own
``mlflow.source.git.commit``); the run folder's summary files as artifacts. A run that dies
(non-finite, an error, out of memory) ends ``FAILED``, an interrupted one ``KILLED``.

The MLflow run's id is kept in the run folder (``mlflow.json``): a resumed run, or an export of
a run already sent, continues that MLflow run and sends only the steps it lacks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stabilitykit.record.run_record import RunRecord
from stabilitykit.track.base import (
    EPOCH_KEYS,
    STEP_KEYS,
    TrackedRun,
    final_metrics,
    flat_params,
    layer_tag,
    number,
    verdict_tags,
)

EXTRA = "mlflow"
#: The run folder's file naming its MLflow run.
RUN_FILE = "mlflow.json"
#: Seconds between batches within an epoch (each epoch's end sends one too).
FLUSH_SECS = 15.0
#: MLflow's limits per ``log_batch`` call.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
#: Files of a run folder sent as artifacts.
ARTIFACTS = ("config.json", "stats.json", "metrics.json", "history.json")
#: ``stats.status`` of a run that died: its MLflow run ends FAILED.
DIED = ("diverged", "error", "out_of_memory")


def tracking_uri(where: str | os.PathLike) -> str:
    """``where`` as a tracking URI: a URI (``scheme:...``) as it is; a path ending ``.db`` as
    ``sqlite:///<absolute path>``; any other path as the folder ``sqlite:///<path>/mlflow.db``
    (made when missing)."""
    text = os.fspath(where)
    if "://" in text or text.startswith(("sqlite:", "file:", "databricks")):
        return text
    path = Path(text).expanduser().resolve()
    if path.suffix != ".db":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store: ``<its folder>/mlartifacts`` (as ``mlflow server``
    would put them); other stores choose their own (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return None


def experiment_name(stage: str) -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"stabilitykit/{stage}"


def client_for(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder/.mlflow.lock``: one process at a time creates an
    experiment or a session's parent run (xdist workers share the output folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".mlflow.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_folder(uri: str, stage_dir: Path) -> Path:
    """Where the processes writing to ``uri`` take turns: beside a local SQLite store (shared by
    all stages), else the stage's folder."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent
    return stage_dir


def experiment_id(client: Any, uri: str, name: str) -> str:
    """The id of experiment ``name``, created when missing (another process may race: then
    its experiment is taken)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def parent_run(client: Any, experiment: str, stage: str, session: str) -> str:
    """The id of the parent run of ``stage`` in ``session`` (tags ``role=session``, ``stage``,
    ``session``), created when none exists; call it under :func:`_locked`."""
    query = f"tags.role = 'session' and tags.session = '{session}' and tags.stage = '{stage}'"
    found = client.search_runs([experiment], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    tags = {"role": "session", "stage": stage, "session": session}
    return client.create_run(experiment, tags=tags, run_name=f"{stage}-{session}").info.run_id


class MlflowTracker:
    """Writes a run to the MLflow tracking store at ``uri`` (:mod:`stabilitykit.track.mlflow`)."""

    name = "mlflow"

    def __init__(self, uri: str | os.PathLike, flush_secs: float = FLUSH_SECS) -> None:
        check_available()
        self.uri = tracking_uri(uri)
        self.flush_secs = flush_secs
        self.client: Any = None
        self.run_id: str | None = None
        self.pending: list[Any] = []
        self.sent: dict[str, int] = {}  # key -> the last step the store holds (a resumed run)
        self.last_flush = time.monotonic()

    def start(self, run: TrackedRun) -> None:
        from mlflow.entities import RunStatus

        # one process at a time: the first use of a new SQLite store (the client's constructor
        # opens it) creates its tables, and every stage and xdist worker of a session shares it
        with _locked(lock_folder(self.uri, run.path.parent.parent)):
            self.client = client_for(self.uri)
            known = _known_run(run.path, self.uri)
            if known is not None and self._exists(known):
                self.run_id = known
                self.client.update_run(known, status=RunStatus.to_string(RunStatus.RUNNING))
                self.sent = self._sent_steps()
                return
            experiment = experiment_id(self.client, self.uri, experiment_name(run.stage))
            tags = {**run.tags, "mlflow.source.git.commit": run.tags.get("git_commit")}
            session = (run.config.get("tags") or {}).get("session")
            if session:
                tags["mlflow.parentRunId"] = parent_run(self.client, experiment, run.stage, session)
        tags = {k: v for k, v in tags.items() if v is not None}
        created = self.client.create_run(experiment, tags=tags, run_name=run.path.name)
        self.run_id = created.info.run_id
        _write_known(run.path, self.uri, self.run_id, experiment)
        self._log_params(flat_params(run.config))

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def _sent_steps(self) -> dict[str, int]:
        run = self.client.get_run(self.run_id)
        out = {}
        for key in run.data.metrics:
            steps = [m.step for m in self.client.get_metric_history(self.run_id, key)]
            out[key] = max(steps, default=-1)
        return out

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [
            Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in params.items()
        ]
        for i in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS])

    def _add(self, key: str, value: Any, step: int) -> None:
        from mlflow.entities import Metric

        value = number(value)
        if value is None or step <= self.sent.get(key, -1):
            return
        self.pending.append(Metric(key, value, int(time.time() * 1000), int(step)))

    def flush(self) -> None:
        """Send the pending metric values (in batches of :data:`MAX_METRICS`)."""
        pending, self.pending = self.pending, []
        for i in range(0, len(pending), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=pending[i : i + MAX_METRICS])
        self.last_flush = time.monotonic()

    def _maybe_flush(self) -> None:
        if len(self.pending) >= MAX_METRICS or time.monotonic() - self.last_flush > self.flush_secs:
            self.flush()

    def steps(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            for key, tag in STEP_KEYS.items():
                self._add(tag, row.get(key), row.get("step"))
        self._maybe_flush()

    def layers(self, names: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            for kind in ("grad_norm", "update_ratio"):
                for layer, value in zip(names, row.get(kind) or (), strict=False):
                    self._add(layer_tag(kind, layer), value, row["step"])
        self._maybe_flush()

    def epoch(self, row: dict[str, Any], step: int) -> None:
        for key, tag in EPOCH_KEYS.items():
            self._add(tag, row.get(key), step)
        self.flush()

    def finish(self, record: RunRecord) -> None:
        from mlflow.entities import RunTag

        last = max((r["step"] for r in record.steps if isinstance(r.get("step"), int)), default=0)
        for key, value in final_metrics(record).items():
            self._add(key, value, last)
        self.flush()
        tags = [RunTag(k, v) for k, v in verdict_tags(record).items()]
        self.client.log_batch(self.run_id, tags=tags[:MAX_TAGS])
        for name in ARTIFACTS:
            if (record.path / name).is_file():
                self.client.log_artifact(self.run_id, str(record.path / name))
        self.client.set_terminated(self.run_id, status=run_status(record))
        self.run_id = None

    def close(self) -> None:
        if self.run_id is not None and self.pending:
            self.flush()


def run_status(record: RunRecord) -> str:
    """``FINISHED``, ``FAILED`` (the run died: :data:`DIED`) or ``KILLED`` (interrupted, or
    a record without its end)."""
    kind = record.verdict.kind.value
    if not record.complete or kind == "interrupted":
        return "KILLED"
    if record.stats.get("status") in DIED or kind in DIED:
        return "FAILED"
    return "FINISHED"


def _known_run(folder: Path, uri: str) -> str | None:
    """The MLflow run id ``folder/mlflow.json`` names for ``uri``, else None."""
    try:
        known = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    runs = known.get("runs") if isinstance(known, dict) else None
    run_id = runs.get(uri) if isinstance(runs, dict) else None
    return run_id if isinstance(run_id, str) else None


def _write_known(folder: Path, uri: str, run_id: str, experiment: str) -> None:
    """Add ``uri: run_id`` to ``folder/mlflow.json`` (one run per tracking store)."""
    from stabilitykit.record.schema import write_json

    try:
        known = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        known = {}
    runs = known.get("runs") if isinstance(known, dict) else None
    runs = runs if isinstance(runs, dict) else {}
    with contextlib.suppress(OSError):  # a read-only record (an export): not continued later
        write_json(folder / RUN_FILE, {"runs": {**runs, uri: run_id}, "experiment": experiment})


def finish_session(uri: str | os.PathLike, stage: str, session: str, files: dict) -> None:
    """End the parent run of ``stage`` in ``session`` (when there is one): the stage report's
    files (summary, metrics, plots) as its artifacts, then ``FINISHED``."""
    uri = tracking_uri(uri)
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment_name(stage))
    if found is None:
        return
    query = f"tags.role = 'session' and tags.session = '{session}' and tags.stage = '{stage}'"
    for run in client.search_runs([found.experiment_id], filter_string=query, max_results=1):
        for _key, path in sorted(files.items()):
            if Path(path).is_file():
                folder = "plots" if str(path).endswith(".png") else None
                client.log_artifact(run.info.run_id, str(path), folder)
        client.set_terminated(run.info.run_id, status="FINISHED")


def check_available() -> None:
    """``ImportError`` naming the extra to install when the MLflow client is not installed."""
    from stabilitykit.track import missing_extra

    try:
        from mlflow.tracking import MlflowClient  # noqa: F401
    except ImportError as exc:
        raise missing_extra(EXTRA, "MLflow", exc) from None
