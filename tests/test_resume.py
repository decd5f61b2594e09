"""Epoch checkpoints and resume: a killed run continues to the numbers of an uninterrupted one,
and a folder that cannot be resumed is refused before anything is written."""

import contextlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from stabilitykit import Arm, run_arm
from stabilitykit.arm import apply_scale
from stabilitykit.record.lock import LOCK, RunLock, RunLockedError
from stabilitykit.record.run_record import CHECKPOINTS, read_record
from stabilitykit.train.checkpoint import list_checkpoints, read_payload

#: 40 training samples in batches of 16: 3 steps per epoch, 5 epochs.
ARM = apply_scale(Arm(workload="darcy", layer_norm_every=2), "smoke").replace(epochs=5)
KILL_AT = 8  # mid epoch 3: the last checkpoint is epoch 2's (step 6)
#: What may differ between a resumed and an uninterrupted run: time, and the resume's own record.
VOLATILE = {"train_seconds", "resumes", "checkpoint_bytes"}


def _run(tmp_path, name, **kw):
    return run_arm(
        ARM, out_dir=tmp_path / name, cache_dir=tmp_path / "cache", progress=False, threads=1, **kw
    )


def _killed_run(tmp_path, how="kill", keep=False):
    """Run ARM in a subprocess that dies at step KILL_AT: SIGKILL, or Ctrl-C."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from stabilitykit import Arm, run_arm
        from stabilitykit.arm import apply_scale
        arm = apply_scale(Arm(workload="darcy", layer_norm_every=2), "smoke").replace(epochs=5)

        def progress(step, total, info):
            if step == {KILL_AT}:
                if {how!r} == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise KeyboardInterrupt

        try:
            run_arm(
                arm, out_dir=sys.argv[1], cache_dir=sys.argv[2], progress=progress, threads=1,
                keep_checkpoints={keep!r},
            )
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "killed"), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected = -signal.SIGKILL if how == "kill" else 130
    assert done.returncode == expected, done.stderr
    (folder,) = (tmp_path / "killed" / "runs").iterdir()
    return folder


def _steps(folder):
    return (folder / "steps.jsonl").read_text().splitlines()


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_a_killed_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path, how):
    whole = _run(tmp_path, "whole")
    folder = _killed_run(tmp_path, how)
    assert len(_steps(folder)) == 1 + KILL_AT  # header + the steps logged before it died
    assert [e for e, _ in list_checkpoints(folder / CHECKPOINTS)] == [2]

    default = torch.get_num_threads()
    torch.set_num_threads(2)  # resume takes the recorded count (1), not torch's default
    try:
        resumed = run_arm(ARM, out_dir=tmp_path / "unused", progress=False, resume=folder)
    finally:
        torch.set_num_threads(default)

    assert resumed.run_dir == folder  # the same folder, no new one
    assert read_record(folder).config["torch_threads"] == 1
    assert not (tmp_path / "unused").exists()
    assert _steps(folder)[1:] == _steps(whole.run_dir)[1:]
    layers = (folder / "layers.jsonl").read_text().splitlines()
    assert layers[1:] == (whole.run_dir / "layers.jsonl").read_text().splitlines()[1:]
    assert resumed.metrics == whole.metrics
    untimed = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]
    assert untimed == [{k: v for k, v in row.items() if k != "seconds"} for row in whole.history]
    same = {k: v for k, v in resumed.stats.items() if k not in VOLATILE}
    assert same == {k: v for k, v in whole.stats.items() if k not in VOLATILE}
    assert resumed.verdict == whole.verdict
    a = read_record(folder).load_state_dict()
    b = read_record(whole.run_dir).load_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    (entry,) = resumed.stats["resumes"]
    assert (entry["from_epoch"], entry["from_step"], entry["steps_replayed"]) == (2, 6, 2)
    assert read_record(folder).config["resumes"] == [entry]
    assert not (folder / CHECKPOINTS).exists()  # finished: removed


def test_checkpoints_are_removed_when_a_run_finishes_unless_kept(tmp_path):
    gone = _run(tmp_path, "gone")
    assert not (gone.run_dir / CHECKPOINTS).exists()
    assert gone.stats["checkpoint_bytes"] > 0
    kept = _run(tmp_path, "kept", keep_checkpoints=True)
    assert [e for e, _ in list_checkpoints(kept.run_dir / CHECKPOINTS)] == [1, 2, 3, 4, 5]


def _snapshot(folder):
    return {
        p.relative_to(folder): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file() and p.name != LOCK  # the lock names its latest holder
    }


def test_resume_refuses_what_it_cannot_continue_and_writes_nothing(tmp_path):
    folder = _killed_run(tmp_path)
    before = _snapshot(folder)
    with pytest.raises(ValueError, match=r"another arm .*'lr': \(0\.001, 0\.002\)"):
        run_arm(ARM.replace(lr=2e-3), out_dir=tmp_path, cache_dir=tmp_path / "cache", resume=folder)
    text = (folder / "config.json").read_text()
    other_code = {**json.loads(text), "code_fingerprint": "0" * 16}
    (folder / "config.json").write_text(json.dumps(other_code))
    with pytest.raises(ValueError, match="other engine code"):
        _run(tmp_path, "x", resume=folder)
    (folder / "config.json").write_text(text)
    with pytest.raises(ValueError, match=r"threads: the run was trained with torch_threads = 1"):
        run_arm(ARM, cache_dir=tmp_path / "cache", resume=folder, threads=2)
    with pytest.raises(ValueError, match="resume: got 123; allowed: a run folder"):
        _run(tmp_path, "x", resume=123)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match=r"out_dir: got .*a-file.*; allowed: a folder"):
        run_arm(ARM, out_dir=tmp_path / "a-file", cache_dir=tmp_path / "cache")
    after = _snapshot(folder)
    assert set(after) == set(before)
    assert all(after[k][1] == before[k][1] for k in before)
    assert _steps(folder) and len(_steps(folder)) == 1 + KILL_AT
    finished = _run(tmp_path, "done")
    with pytest.raises(ValueError, match=r"the run finished .* nothing to resume"):
        _run(tmp_path, "x", resume=finished.run_dir)
    with pytest.raises(ValueError, match="not a readable run folder"):
        _run(tmp_path, "x", resume=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="keep_checkpoints"):
        _run(tmp_path, "x", keep_checkpoints="yes")
    assert not (tmp_path / "x").exists()


def test_a_stage_session_with_resume_continues_the_killed_run_of_each_arm(tmp_path):
    from stabilitykit.stage import StudyOptions, run_in_stage

    killed = _killed_run(tmp_path)
    stage = tmp_path / "out" / "stage_x" / "runs"
    stage.mkdir(parents=True)
    folder = killed.rename(stage / killed.name)
    options = StudyOptions(
        out=tmp_path / "out", scale="none", cache_dir=tmp_path / "cache", resume=True
    )
    other = run_in_stage(ARM.replace(lr=2e-3), "stage_x", options)
    assert other.run_dir != folder and not other.stats["resumes"]  # no run of that arm to resume
    resumed = run_in_stage(ARM, "stage_x", options)
    assert resumed.run_dir == folder and resumed.stats["resumes"][0]["from_epoch"] == 2
    assert read_record(folder).config["tags"]["session"] == options.session
    # requeued again after both finished: nothing is trained twice
    again = StudyOptions(**{**options.__dict__, "session": "requeued"})
    assert run_in_stage(ARM, "stage_x", again).run_dir == folder
    assert run_in_stage(ARM.replace(lr=2e-3), "stage_x", again).run_dir == other.run_dir
    assert len(list(stage.iterdir())) == 2


def test_xdist_workers_spread_a_stage_over_the_gpus(monkeypatch):
    from stabilitykit.stage import StudyOptions

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    devices = [StudyOptions(device="cuda", worker=w).prepare(ARM).device for w in range(6)]
    assert devices == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert StudyOptions(device="cuda").prepare(ARM).device == "cuda"  # not under xdist
    assert StudyOptions(device="cuda:2", worker=1).prepare(ARM).device == "cuda:2"  # as given
    # one arm on any GPU: the same hash (the gate compares it across workers), not the CPU's
    hashes = {ARM.replace(device=d).hash for d in ("cuda", "cuda:0", "cuda:3")}
    assert len(hashes) == 1 and ARM.hash not in hashes


def test_a_background_writer_keeps_the_epochs_numbers_and_reports_a_failed_write(tmp_path):
    from stabilitykit.train.checkpoint import CheckpointWriter, load_checkpoint

    weights = torch.ones(3)
    writer = CheckpointWriter(lambda: tmp_path / "ck", background=True)
    for epoch in (1, 2):
        writer.write({"epoch": epoch, "weights": weights})
        weights.add_(1.0)  # training goes on while the thread writes
    writer.close()
    assert [e for e, _ in list_checkpoints(tmp_path / "ck")] == [2]  # only the newest kept
    saved = torch.load(
        io.BytesIO(read_payload(tmp_path / "ck" / "epoch-0002.pt")), weights_only=True
    )
    assert torch.equal(saved["weights"], torch.full((3,), 2.0))  # as at the epoch's end
    assert writer.bytes == (tmp_path / "ck" / "epoch-0002.pt").stat().st_size
    with pytest.raises(Exception, match="no such checkpoint"):
        load_checkpoint(tmp_path / "ck" / "epoch-0001.pt")
    (tmp_path / "file").write_text("")
    broken = CheckpointWriter(lambda: tmp_path / "file" / "ck", background=True)
    broken.write({"epoch": 1})
    with pytest.raises(OSError, match="writing a checkpoint failed"):
        broken.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A run killed at step KILL_AT with its checkpoints of epochs 1 and 2 kept, and the same
    arm run whole: copy the killed folder before changing it."""
    tmp = tmp_path_factory.mktemp("pristine")
    return _killed_run(tmp, keep=True), _run(tmp, "whole").run_dir


def _copy(pristine, tmp_path):
    killed, _ = pristine
    return shutil.copytree(killed, tmp_path / "out" / "stage_x" / "runs" / killed.name)


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_a_corrupt_checkpoint_is_refused_and_the_run_falls_back_in_its_folder(
    tmp_path, pristine, damage
):
    from stabilitykit.stage import StudyOptions, run_in_stage

    folder = _copy(pristine, tmp_path)
    newest = folder / CHECKPOINTS / "epoch-0002.pt"
    if damage == "flip":  # the earlier checkpoint is kept: continue from it
        _flip(newest)
        with pytest.warns(UserWarning, match="refused .*epoch-0002.pt: .*checksum mismatch"):
            resumed = _run(tmp_path, "unused", resume=folder)
        expect = {"from_epoch": 1, "from_step": 3, "checkpoint": "epoch-0001.pt"}
        fallback = "earlier checkpoint"
    else:  # under --sk-resume, with no other checkpoint: afresh, in the killed run's folder
        (folder / CHECKPOINTS / "epoch-0001.pt").unlink()
        newest.write_bytes(newest.read_bytes()[:1000])
        options = StudyOptions(
            out=tmp_path / "out", scale="none", cache_dir=tmp_path / "cache", resume=True
        )
        with pytest.warns(UserWarning, match="refused .*epoch-0002.pt"):
            resumed = run_in_stage(ARM, "stage_x", options)
        expect = {"from_epoch": 0, "from_step": 0, "checkpoint": None}
        fallback = "afresh"
    assert resumed.run_dir == folder and len(list(folder.parent.iterdir())) == 1
    (entry,) = read_record(folder).config["resumes"]
    assert {k: entry[k] for k in expect} == expect and entry["fallback"] == fallback
    assert [r["checkpoint"] for r in entry["refused"]] == ["epoch-0002.pt"]
    whole = read_record(pristine[1])
    assert _steps(folder)[1:] == _steps(whole.path)[1:]
    assert resumed.metrics == whole.metrics and resumed.verdict == whole.verdict


def test_a_run_folder_is_locked_while_it_trains_or_resumes(tmp_path, pristine):
    folder = _copy(pristine, tmp_path)
    steps = _steps(folder)
    with RunLock(folder):  # another resume of it, under way
        holder = f"pid {os.getpid()} on host {platform.node()}"
        with pytest.raises(RunLockedError, match=f"{folder}: another process .*{holder}"):
            _run(tmp_path, "unused", resume=folder)
    assert _steps(folder) == steps

    unlocked = []

    def progress(step, total, info):  # a fresh run holds its folder's lock while it trains
        (fresh,) = (tmp_path / "fresh" / "runs").iterdir()
        with contextlib.suppress(RunLockedError):
            RunLock(fresh).release()
            unlocked.append(step)

    run_arm(
        ARM.replace(epochs=1),
        out_dir=tmp_path / "fresh",
        cache_dir=tmp_path / "cache",
        progress=progress,
        threads=1,
    )
    assert unlocked == []


def test_resume_keeps_what_finished_after_a_killed_run(tmp_path, pristine):
    from stabilitykit.stage import StudyOptions, run_in_stage

    folder = _copy(pristine, tmp_path)
    steps = _steps(folder)
    options = StudyOptions(out=tmp_path / "out", scale="none", cache_dir=tmp_path / "cache")
    finished = run_in_stage(ARM, "stage_x", options)  # newer than the killed run
    again = run_in_stage(ARM, "stage_x", StudyOptions(**{**options.__dict__, "resume": True}))
    assert again.run_dir == finished.run_dir != folder
    assert _steps(folder) == steps  # the killed run is not trained again
