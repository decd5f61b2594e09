"""A run killed mid-epoch and resumed continues its TensorBoard curves and its MLflow run:
every step once, none missing."""

import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from stabilitykit import run_arm
from stabilitykit.track.mlflow import RUN_FILE

from .conftest import ARM, STEPS
from .test_tensorboard import read

KILL_AT = 5  # mid epoch 2: the checkpoint is epoch 1's (step 3)

SCRIPT = """
import os, signal, sys
from stabilitykit import Arm, run_arm
from stabilitykit.arm import apply_scale
from stabilitykit.track.mlflow import MlflowTracker
from stabilitykit.track.tensorboard import TensorBoardTracker

out, cache, tb, uri = sys.argv[1:]
arm = apply_scale(Arm(workload="darcy", layer_norm_every=2), "smoke").replace(epochs=2)

def progress(step, total, info):
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)

trackers = [TensorBoardTracker(tb, flush_secs=1), MlflowTracker(uri, flush_secs=0)]
run_arm(arm, out_dir=out, cache_dir=cache, progress=progress, threads=1, trackers=trackers,
        tags={{"stage": "stage_t", "session": "killed"}})
"""


def test_a_killed_run_resumes_its_curves_without_duplicates(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the fast store, for the test
    uri = (tmp_path / "mlruns").as_uri()
    tb, out, cache = tmp_path / "tb", tmp_path / "out", tmp_path / "cache"
    script = textwrap.dedent(SCRIPT.format(kill_at=KILL_AT))
    argv = [sys.executable, "-c", script, str(out), str(cache), str(tb), uri]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (folder,) = (out / "runs").iterdir()
    assert (folder / RUN_FILE).exists()

    tags = {"stage": "stage_t", "session": "resumed"}  # as --sk-resume tags it
    result = run_arm(
        ARM, resume=folder, progress=False, tensorboard=tb, mlflow=uri, cache_dir=cache, tags=tags
    )
    assert result.stats["trackers"] == {"tensorboard": "ok", "mlflow": "ok"}
    assert result.stats["resumes"][0]["from_step"] == 3

    acc = read(tb / "stage_t" / folder.name)
    for tag in ("step/grad_norm_preclip", "step/loss"):
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, STEPS + 1))
    assert [e.step for e in acc.Scalars("epoch/val_loss")] == [0, 3, 6]
    assert [e.step for e in acc.Scalars("layer_grad_norm/lift")] == [1, 3, 5]

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("stabilitykit/stage_t")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "arm" in r.data.tags]
    (child,) = children  # the same MLflow run, continued
    assert child.info.status == "FINISHED"
    for key in ("step/grad_norm_preclip", "step/loss"):
        steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
        assert sorted(steps) == list(range(1, STEPS + 1))
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "epoch/val_loss")]
    assert sorted(steps) == [0, 3, 6]
