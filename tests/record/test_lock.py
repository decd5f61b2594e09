"""The run folder lock: one process at a time, the holder named, dropped when the holder dies."""

import os
import platform
import subprocess
import sys

import pytest

from stabilitykit.record.lock import LOCK, RunLock, RunLockedError


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with RunLock(tmp_path):
        holder = f"pid {os.getpid()} on host {platform.node()} since "
        with pytest.raises(RunLockedError, match=f"{tmp_path}: another process .*{holder}"):
            RunLock(tmp_path)
    RunLock(tmp_path).release()  # free again once released


def test_a_killed_holder_leaves_the_folder_unlocked(tmp_path):
    script = (
        "import os, signal, sys; from stabilitykit.record.lock import RunLock; "
        "RunLock(sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], timeout=60)
    assert done.returncode == -9 and (tmp_path / LOCK).exists()
    with RunLock(tmp_path):
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK).read_text()


def test_a_slurm_job_holding_the_folder_is_named_with_how_to_stop_it(tmp_path, monkeypatch):
    """A ``--sk-resume`` never races a job still training the run: it is refused, naming it."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with RunLock(tmp_path):
        monkeypatch.delenv("SLURM_JOB_ID")
        with pytest.raises(RunLockedError, match=r"Slurm job 4242, pid .*; `scancel 4242` stops"):
            RunLock(tmp_path)
