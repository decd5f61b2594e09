"""The TensorBoard tracker, read back with TensorBoard's own event reader."""

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from stabilitykit.track.base import layer_tag

from .conftest import STEPS


def read(logdir):
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def hparams_of(acc):
    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in start.hparams.items()
    }


def texts(acc, tag):
    return {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)}


def test_every_step_hparams_and_verdict_read_back(run, tmp_path):
    result = run(tensorboard=tmp_path / "tb")
    assert result.stats["trackers"] == {"tensorboard": "ok"}
    acc = read(tmp_path / "tb" / "stage_t" / result.run_dir.name)  # sorts by stage, then arm
    record = result.record
    grad = acc.Scalars("step/grad_norm_preclip")
    assert [e.step for e in grad] == list(range(1, STEPS + 1))
    assert [e.value for e in grad] == pytest.approx([s["grad_norm_preclip"] for s in record.steps])
    for tag in ("step/loss", "step/grad_norm_postclip", "step/lr"):
        assert len(acc.Scalars(tag)) == STEPS
    assert [e.step for e in acc.Scalars("epoch/val_loss")] == [0, 3, 6]  # each epoch's end
    assert [e.step for e in acc.Scalars(layer_tag("grad_norm", "lift"))] == [1, 3, 5]
    assert [e.step for e in acc.Scalars(layer_tag("update_ratio", "lift"))] == [1, 3, 5]
    (final,) = acc.Scalars("final/rel_l2")
    assert final.value == pytest.approx(result.metrics["rel_l2"])
    assert acc.Scalars("final/rel_l2_floor")[0].value == pytest.approx(
        result.metrics["rel_l2_floor"]
    )
    hparams = hparams_of(acc)
    assert hparams["lr"] == pytest.approx(1e-3) and hparams["clip"] == "norm"
    assert hparams["verdict"] == result.verdict.kind.value
    assert hparams.get("git_commit") == record.config["code"]["commit"]  # None: no checkout
    assert result.verdict.kind.value in texts(acc, "verdict/text_summary")[STEPS]
