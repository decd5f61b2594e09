"""An exclusive lock on a run folder while one process trains or resumes it.

The lock is ``fcntl.flock`` on ``<run>/run.lock``: the kernel drops it when its holder exits,
however it dies, so a killed run never leaves its folder locked. While held, the file names its
holder (pid, host, time); a second process is refused with :class:`RunLockedError` naming them.
The file stays in the folder (removing it could let two processes lock two different files).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
from pathlib import Path
from typing import Any

LOCK = "run.lock"


class RunLockedError(RuntimeError):
    """A run folder another process is training or resuming; the message names the holder."""


class RunLock:
    """Holds the lock of the run folder ``folder`` from construction until :meth:`release`
    (or the end of a ``with`` block); :class:`RunLockedError` when another process holds it."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{folder}: another process is training or resuming this run ({holder}); "
                "wait for it to end, or stop it"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        holder = {
            "pid": os.getpid(),
            "host": platform.node(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        if os.environ.get("SLURM_JOB_ID"):  # a job on another node: scancel is the way to stop it
            holder["slurm_job"] = os.environ["SLURM_JOB_ID"]
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder(fd: int) -> str:
    """The holder named in the lock file, as ``pid N on host H since T``."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        where = f"pid {info['pid']} on host {info['host']} since {info['since']}"
        if info.get("slurm_job"):
            where = (
                f"Slurm job {info['slurm_job']}, {where}; `scancel {info['slurm_job']}` stops it"
            )
        return where
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not named in the lock file"
