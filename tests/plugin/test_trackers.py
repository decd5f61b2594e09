"""--sk-tensorboard and --sk-mlflow through the plugin: under xdist, one MLflow parent run per
stage and session, and every step of every arm once; without the extra, a usage error."""

import json
import sys

import pytest

pytest_plugins = ["pytester"]

DARCY_ARMS = """
import pytest
from stabilitykit import Arm
from stabilitykit.arm import apply_scale
from stabilitykit.judge.criteria import Finite

SMALL = apply_scale(Arm(workload="darcy", layer_norm_every=2), "smoke").replace(epochs=2)
ARMS = [SMALL.replace(name="slow"), SMALL.replace(name="fast", lr=3e-3)]

@pytest.mark.stability
@pytest.mark.stage_c
@pytest.mark.parametrize("arm", ARMS, ids=lambda a: a.name)
def test_arm(arm, run_arm):
    run_arm(arm, criteria=(Finite(),))
"""


def test_xdist_gives_one_parent_run_and_every_step_once(pytester, sk_pytest, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the fast store, for the test
    uri = (pytester.path / "mlruns").as_uri()
    pytester.makepyfile(DARCY_ARMS)
    trackers = ("--sk-tensorboard", "tb", "--sk-mlflow", uri)
    result = sk_pytest("-n", "2", "--sk-scale", "none", *trackers, subprocess=True, plots=True)
    result.assert_outcomes(passed=2)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("stabilitykit/stage_c")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("role") == "session"]
    children = [r for r in runs if r.data.tags.get("role") != "session"]
    assert sorted(r.data.tags["arm"] for r in children) == ["fast", "slow"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"  # ended by the controller, with the stage's files
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "summary.md" in artifacts and "plots" in artifacts

    folders = sorted((pytester.path / "reports/stage_c/runs").iterdir())
    for folder in folders:
        lines = (folder / "steps.jsonl").read_text().splitlines()[1:]  # after the header
        steps = [json.loads(line)["step"] for line in lines]
        run_id = json.loads((folder / "mlflow.json").read_text())["runs"][uri]
        history = client.get_metric_history(run_id, "step/grad_norm_preclip")
        assert sorted(m.step for m in history) == steps
        acc = EventAccumulator(str(pytester.path / "tb/stage_c" / folder.name), {"scalars": 0})
        acc.Reload()
        assert [e.step for e in acc.Scalars("step/grad_norm_preclip")] == steps
    summaries = list((pytester.path / "tb/stage_c").glob("summary-*"))
    assert len(summaries) == 1  # the stage plots, as images


@pytest.mark.parametrize(
    ("option", "module"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow")]
)
def test_without_the_extra_the_option_is_a_usage_error_naming_it(
    pytester, sk_pytest, monkeypatch, option, module
):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    monkeypatch.setitem(sys.modules, f"{module}.tracking", None)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = sk_pytest(f"--sk-{option}", "somewhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--sk-{option}: " in result.stderr.str()
    assert f"pip install 'stabilitykit[{option}]'" in result.stderr.str()
