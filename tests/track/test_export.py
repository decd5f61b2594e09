"""``stabilitykit export``: records on disk, old ones included, into both trackers."""

import json

import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from stabilitykit.cli import main
from stabilitykit.judge.verdict import Verdict, VerdictKind
from stabilitykit.record.run_record import RunWriter, new_run_dir

from .test_tensorboard import hparams_of, read


def old_record(root):
    """A record as 0.2 wrote it: no code, tags, workload block, layers or epoch per step."""
    writer = RunWriter(new_run_dir(root, "control-hybrid-b4-seed1"))
    arm = {"name": "control", "lr": 1e-3, "clip": "norm", "clip_value": 1.0, "seed": 1}
    writer.write_config({"arm": arm, "arm_id": "control-hybrid-b4-seed1", "arm_hash": "h0"})
    writer.append_steps(
        [{"step": s, "loss": 1 / s, "grad_norm_preclip": 2.0} for s in (1, 2, 3, 4)]
    )
    writer.write_history(
        [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 0.5} for e in (0, 1, 2)]
    )
    writer.write_metrics({"amp_ssim": 0.5, "amp_ssim_floor": 0.27})
    writer.write_stats({"status": "completed"}, Verdict(VerdictKind.STABLE, ()))
    writer.close()
    return writer.path


def test_export_sends_an_old_record_and_a_new_one_once(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the fast store, for the test
    old = old_record(tmp_path / "old")
    new = run().run_dir
    uri = (tmp_path / "mlruns").as_uri()
    argv = ["export", str(tmp_path / "old"), str(tmp_path / "out"), "--mlflow", uri]
    argv += ["--tensorboard", str(tmp_path / "tb")]
    assert main(argv) == 0
    assert main(argv) == 0  # again: continued, not repeated
    out = capsys.readouterr().out
    assert out.count("tensorboard ok, mlflow ok") == 4

    acc = read(tmp_path / "tb" / "runs" / old.name)  # no stage in a 0.2 record
    assert [e.step for e in acc.Scalars("step/grad_norm_preclip")] == [1, 2, 3, 4]
    assert [e.step for e in acc.Scalars("epoch/val_loss")] == [0, 2, 4]  # estimated pro rata
    assert hparams_of(acc)["verdict"] == "stable"
    assert [e.step for e in read(tmp_path / "tb/stage_t" / new.name).Scalars("step/loss")] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]

    client = MlflowClient(tracking_uri=uri)
    for folder, stage, steps in ((old, "runs", 4), (new, "stage_t", 6)):
        run_id = json.loads((folder / "mlflow.json").read_text())["runs"][uri]
        assert len(client.get_metric_history(run_id, "step/loss")) == steps
        got = client.get_run(run_id)
        assert got.info.status == "FINISHED" and got.data.tags["stage"] == stage
        assert got.data.params["lr"] == "0.001"
