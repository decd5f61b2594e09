import json

import pytest
import torch

from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
from stabilitykit.record.run_record import (
    RunWriter,
    find_runs,
    new_run_dir,
    read_record,
)
from stabilitykit.record.schema import RecordError, read_json, stamp, write_json


def write_run(root, name="arm", *, finish=True):
    writer = RunWriter(new_run_dir(root, name))
    writer.write_config({"arm": {"name": name}, "arm_id": name})
    writer.append_steps([{"step": 1, "epoch": 1, "lr": 1e-3, "loss": 0.5}])
    writer.append_steps([{"step": 2, "epoch": 1, "lr": 1e-3, "loss": "nan"}])
    writer.write_history([{"epoch": 0, "val_loss": 0.6}, {"epoch": 1, "val_loss": 0.4}])
    if finish:
        writer.write_metrics({"amp_ssim": 0.5})
        writer.save_model({"w": torch.ones(2)})
        verdict = Verdict(VerdictKind.DIVERGED, (Evidence("finite", "nan", step=2),))
        writer.write_stats({"steps": 2}, verdict)
    writer.close()
    return writer.path


def test_round_trip(tmp_path):
    path = write_run(tmp_path)
    record = read_record(path)
    assert record.complete and record.verdict.kind is VerdictKind.DIVERGED
    assert record.verdict.evidence[0].step == 2
    assert [s["step"] for s in record.steps] == [1, 2]
    assert record.history[-1]["val_loss"] == 0.4 and record.metrics == {"amp_ssim": 0.5}
    assert torch.equal(record.load_state_dict()["w"], torch.ones(2))


def test_each_run_gets_a_fresh_folder(tmp_path):
    assert write_run(tmp_path) != write_run(tmp_path)
    assert len(find_runs(tmp_path)) == 2


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ""])
def test_run_names_cannot_escape(tmp_path, name):
    with pytest.raises(ValueError, match="run name"):
        new_run_dir(tmp_path, name)


def test_half_written_run_reads_as_interrupted(tmp_path):
    path = write_run(tmp_path, finish=False)
    with open(path / "steps.jsonl", "a") as f:
        f.write('{"step": 3, "epo')  # killed mid-line
    record = read_record(path)
    assert not record.complete and record.verdict.kind is VerdictKind.INTERRUPTED
    assert [s["step"] for s in record.steps] == [1, 2]
    assert record.verdict.evidence[0].step == 2 and record.notes


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = write_run(tmp_path)
    lines = (path / "steps.jsonl").read_text().splitlines()
    lines[1] = "{broken"
    (path / "steps.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"steps.jsonl: line 2"):
        read_record(path)


def test_foreign_and_newer_files_are_rejected_by_name(tmp_path):
    path = write_run(tmp_path)
    (path / "stats.json").write_text(json.dumps({"schema": "other.tool", "version": 1}))
    with pytest.raises(RecordError, match=r"stats.json: schema 'other.tool'"):
        read_record(path)
    write_json(path / "stats.json", stamp({"stats": {}}, version=99))
    with pytest.raises(RecordError, match=r"stats.json: written by a newer stabilitykit"):
        read_record(path)
    (path / "metrics.json").write_text("{not json")
    with pytest.raises(RecordError, match=r"metrics\.json: not valid JSON"):
        read_json(path / "metrics.json")


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RecordError, match="not a run folder"):
        read_record(tmp_path)


def test_weights_load_refuses_pickled_objects(tmp_path):
    path = write_run(tmp_path)
    torch.save({"w": torch.ones(1), "evil": object}, path / "model.pt")
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported"):
        read_record(path).load_state_dict()
