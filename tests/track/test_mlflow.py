"""The MLflow tracker, read back with ``MlflowClient``."""

import pytest

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from stabilitykit import Arm
from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.track.mlflow import ARTIFACTS, tracking_uri

from .conftest import ARM, STEPS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds)."""
    return tmp_path_factory.mktemp("mlflow")


def runs_of(uri, stage="stage_t"):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"stabilitykit/{stage}")
    return client, client.search_runs([experiment.experiment_id])


def test_params_histories_tags_and_artifacts_read_back(run, store):
    written = Arm(workload="darcy", layer_norm_every=2)  # as its author wrote it
    result = run(mlflow=store, tags={"stage": "stage_t", "session": "read-back"}, written=written)
    assert result.stats["trackers"] == {"mlflow": "ok"}
    uri = tracking_uri(store)
    assert uri == f"sqlite:///{store.resolve()}/mlflow.db"
    client, runs = runs_of(uri)
    session = [r for r in runs if r.data.tags.get("session") == "read-back"]
    (parent,) = [r for r in session if r.data.tags.get("role") == "session"]
    (child,) = [r for r in session if r.data.tags.get("role") != "session"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.run_name == result.run_dir.name
    params = child.data.params
    assert params["lr"] == "0.001" and params["clip"] == "norm" and params["arm_hash"] == ARM.hash
    assert params["data.resolution"] == "16"
    assert params["scale_changes.epochs"].endswith("-> 2")
    run_id = child.info.run_id
    history = client.get_metric_history(run_id, "step/grad_norm_preclip")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
    assert len(client.get_metric_history(run_id, "step/loss")) == STEPS
    assert sorted(m.step for m in client.get_metric_history(run_id, "epoch/val_loss")) == [0, 3, 6]
    assert len(client.get_metric_history(run_id, "layer_grad_norm/lift")) == 3
    assert child.data.metrics["final/rel_l2"] == pytest.approx(result.metrics["rel_l2"])
    tags = child.data.tags
    code = result.record.config["code"]
    assert tags["verdict"] == result.verdict.kind.value and tags["stage"] == "stage_t"
    assert tags["workload"] == "darcy" and tags["seed"] == str(ARM.seed)
    assert tags["numerics"] == result.record.config["numerics"]["mode"]
    assert tags.get("git_commit") == code["commit"]  # None: not a git checkout
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == set(ARTIFACTS)
    assert child.info.status == "FINISHED"


def test_a_run_that_dies_is_failed_with_its_verdict(run, store):
    arm = ARM.replace(optimizer="sgd", lr=1e12, clip="none", clip_value=None)
    result = run(arm, mlflow=store, tags={"stage": "stage_t", "session": "dies"})
    assert result.verdict.kind is VerdictKind.DIVERGED
    _, runs = runs_of(tracking_uri(store))
    (child,) = [r for r in runs if r.data.tags.get("session") == "dies" and "arm" in r.data.tags]
    assert child.info.status == "FAILED"
    assert child.data.tags["verdict"] == "diverged" and child.data.tags["verdict_reason"]
