import datetime as dt
import json
import os
import re

import pytest
import torch

from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind
from stabilitykit.record.run_record import (
    LAYERS,
    UNFINISHED,
    RunWriter,
    find_runs,
    new_run_dir,
    read_layers,
    read_record,
    scan_runs,
    time_of_name,
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


# --- hostile and unfinished folders -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        ("config.json", [], r"config.json: not a stabilitykit.run file"),
        ("config.json", stamp({"arm": []}), r"config.json: arm: got list \[\]; expected an obj"),
        ("config.json", stamp({"tags": "x"}), r"config.json: tags: got str 'x'"),
        ("config.json", stamp({"arm_id": 3}), r"config.json: arm_id: got int 3; expected a str"),
        ("config.json", stamp({"tags": {"stage": "../../x"}}), r"tags.stage: got '../../x'"),
        ("config.json", stamp({"scale": "../../y"}), r"config.json: scale: got '../../y'"),
        ("config.json", stamp({"arm": {"scale": "/etc"}}), r"arm.scale: got '/etc'"),
        ("config.json", stamp({"created": "yesterday"}), r"created: got 'yesterday'"),
        ("stats.json", stamp({"stats": 3}), r"stats.json: stats: got int 3; expected an object"),
        ("stats.json", stamp({"stats": {}}), r"stats.json: verdict: got null"),
        ("stats.json", stamp({"stats": {}, "verdict": {"kind": "ok"}}), r"verdict.kind: got"),
        (
            "stats.json",
            stamp({"stats": {}, "verdict": {"kind": "stable", "evidence": [{"x": 1}]}}),
            r"verdict.evidence\[0\]: got dict",
        ),
        (
            "stats.json",
            stamp(
                {
                    "stats": {},
                    "verdict": {
                        "kind": "diverged",
                        "evidence": [{"criterion": "c", "message": "m", "step": "1"}],
                    },
                }
            ),
            r"verdict.evidence\[0\].step: got str '1'",
        ),
        ("metrics.json", stamp({"metrics": [1]}), r"metrics.json: metrics: got list"),
        ("history.json", stamp({}), r"history.json: epochs: got null; expected a list"),
        ("history.json", stamp({"epochs": [1]}), r"history.json: epochs\[0\]: got int 1"),
    ],
)
def test_files_of_the_wrong_shape_are_named(tmp_path, name, payload, message):
    path = write_run(tmp_path)
    (path / name).write_text(json.dumps(payload))
    with pytest.raises(RecordError, match=message):
        read_record(path)


def test_steps_of_the_wrong_shape_are_named(tmp_path):
    path = write_run(tmp_path)
    with open(path / "steps.jsonl", "a") as f:
        f.write("[1, 2]\n{}\n")
    with pytest.raises(RecordError, match=r"steps.jsonl: line 4: got list"):
        read_record(path)
    (path / "config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(RecordError, match=r"config.json: not UTF-8 text"):
        read_record(path)
    (path / "config.json").write_text("[" * 100_000)
    with pytest.raises(RecordError, match=r"config.json: "):
        read_record(path)


def test_layer_rows_read_back_by_the_header_names(tmp_path):
    path = write_run(tmp_path)
    assert read_layers(path / LAYERS) == ([], [])  # no layer telemetry: nothing, no error
    writer = RunWriter(path)
    header = {"layers": ["encoder", "blocks.0.spectral"], "every": 5}
    periodic = {"step": 1, "epoch": 1, "grad_norm": [0.5, 2.0], "update_ratio": [1e-3, None]}
    spike = {"step": 3, "epoch": 1, "grad_norm": [0.7, 40.0], "spike": True}
    writer.append_layers(header, [periodic])
    writer.append_layers(header, [spike])  # the header is written once
    assert read_layers(path / LAYERS) == (header["layers"], [periodic, spike])
    with open(path / LAYERS, "a") as f:
        f.write('{"step": 6, "epoch": 2, "grad_n')  # killed mid-line: dropped
    assert read_layers(path / LAYERS)[1] == [periodic, spike]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{broken", r"layers.jsonl: line 3 is not valid JSON"),
        ("[1, 2]", r"layers.jsonl: line 3: got list"),
        ('{"epoch": 1, "grad_norm": [1, 2]}', r"layers.jsonl: line 3: step: got null"),
        ('{"step": 2, "grad_norm": [1]}', r"line 3: grad_norm: got list \[1\]; expected 2"),
        ('{"step": 2, "grad_norm": [1, "x"]}', r"line 3: grad_norm: got list"),
        ('{"step": 2, "grad_norm": [1, 2], "update_ratio": 3}', r"line 3: update_ratio: got"),
    ],
)
def test_malformed_layer_rows_are_named_by_file_and_line(tmp_path, line, message):
    path = write_run(tmp_path)
    writer = RunWriter(path)
    writer.append_layers({"layers": ["a", "b"], "every": 1}, [{"step": 1, "grad_norm": [1, 2]}])
    with open(path / LAYERS, "a") as f:
        f.write(line + "\n" + json.dumps({"step": 4, "grad_norm": [1, 2]}) + "\n")
    with pytest.raises(RecordError, match=message):
        read_layers(path / LAYERS)


def test_a_layers_file_without_its_header_is_named(tmp_path):
    path = write_run(tmp_path)
    (path / LAYERS).write_text(json.dumps(stamp({"kind": "header"})) + "\n")
    with pytest.raises(RecordError, match=r"layers.jsonl: line 1: got dict .*header naming"):
        read_layers(path / LAYERS)
    (path / LAYERS).write_text(json.dumps({"layers": ["a"]}) + "\n")
    with pytest.raises(RecordError, match=r"layers.jsonl: not a stabilitykit.run file"):
        read_layers(path / LAYERS)


def test_a_run_folder_is_complete_or_nothing(tmp_path):
    path = new_run_dir(tmp_path, "arm")
    assert path.name.startswith(".arm-") and path.name.endswith(".partial")
    assert find_runs(tmp_path) == []  # a kill now leaves no run folder, only a named skip
    runs, notes = scan_runs(tmp_path)
    assert runs == [] and notes == [f"left out {path}: {UNFINISHED}"]
    with pytest.raises(RecordError, match="an unfinished run folder"):
        read_record(path)
    writer = RunWriter(path)
    writer.write_config({"arm_id": "arm"})
    assert not path.exists() and writer.path == path.with_name(path.name[1 : -len(".partial")])
    assert find_runs(tmp_path) == [writer.path] and scan_runs(tmp_path)[1] == []


def test_an_empty_run_folder_is_a_named_skip(tmp_path):
    write_run(tmp_path)
    empty = tmp_path / "runs" / "arm-20260101T000000000000Z-abcdef"
    empty.mkdir()
    runs, notes = scan_runs(tmp_path)
    assert len(runs) == 1 and notes == [f"left out {empty}: {UNFINISHED}"]
    with pytest.raises(RecordError, match=r"an unfinished run folder"):
        read_record(empty)


def test_symlinks_are_not_followed(tmp_path):
    elsewhere = write_run(tmp_path / "elsewhere")
    root = tmp_path / "root"
    mine = write_run(root)
    (root / "runs" / "linked").symlink_to(elsewhere, target_is_directory=True)
    runs, notes = scan_runs(root)
    assert runs == [mine] and notes == [
        f"left out {root / 'runs' / 'linked'}: a symlink (not followed)"
    ]


def test_a_runs_folder_that_is_a_symlink_is_refused_as_such(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "runs").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    message = r"the runs folder .*root/runs is a symlink \(to .*elsewhere\)"
    with pytest.raises(ValueError, match=message):
        new_run_dir(tmp_path / "root", "arm")
    assert not list((tmp_path / "elsewhere").iterdir())


def test_the_creation_time_is_recorded(tmp_path):
    path = write_run(tmp_path)
    config = json.loads((path / "config.json").read_text())
    created = dt.datetime.fromisoformat(config["created"])
    assert created.tzinfo is not None and created.utcoffset() == dt.timedelta(0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", config["created"])
    assert read_record(path).created == created
    assert time_of_name(path.name) == created  # the folder's name carries the same time


def test_the_creation_time_of_an_older_record(tmp_path):
    path = write_run(tmp_path)
    config = json.loads((path / "config.json").read_text())
    del config["created"]
    (path / "config.json").write_text(json.dumps(config))
    assert read_record(path).created == time_of_name(path.name)
    renamed = path.rename(tmp_path / "runs" / "older")
    os.utime(renamed / "config.json", (86400.0, 86400.0))
    assert read_record(renamed).created == dt.datetime(1970, 1, 2, tzinfo=dt.UTC)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_are_written_with_an_ordinary_files_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_run(tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()}
    assert {"config.json", "stats.json", "metrics.json", "history.json"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask
