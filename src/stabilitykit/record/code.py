"""The code under test: which git commit a run ran, whether the tree was dirty, and the version
of the package its workload came from (``config.json`` ``code``).

Never fails a run: a folder that is no git checkout, or no ``git`` on the machine, gives
``None`` for what it cannot tell.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Seconds ``git`` may take per call (a huge or network-mounted checkout must not hold a run).
GIT_TIMEOUT = 10.0


def _git(folder: Path, *args: str) -> str | None:
    """``git -C folder args`` stdout (stripped), or ``None`` when git is absent or fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # a status must not lock the index
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(folder: str | os.PathLike) -> dict[str, Any]:
    """``{"commit", "dirty", "root"}`` of the git checkout holding ``folder`` (each ``None``
    when not a checkout or git is absent). ``dirty``: ``git status --porcelain`` lists a change
    (untracked files included)."""
    folder = Path(folder)
    if not folder.is_dir():
        folder = folder.parent
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "root": None}
    status = _git(folder, "status", "--porcelain")
    return {
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "root": _git(folder, "rev-parse", "--show-toplevel"),
    }


def package_of(cls: type) -> dict[str, str] | None:
    """``{"name", "version"}`` of the installed distribution that provides ``cls``'s top-level
    package, else ``None`` (a class in a test file or conftest)."""
    top = cls.__module__.partition(".")[0]
    names = importlib.metadata.packages_distributions().get(top) or []
    for name in names:
        try:
            return {"name": name, "version": importlib.metadata.version(name)}
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def source_folder(cls: type) -> Path:
    """The folder of ``cls``'s module file, else the working directory."""
    module = sys.modules.get(cls.__module__)
    try:
        path = inspect.getsourcefile(module) if module is not None else None
    except TypeError:  # a built-in module
        path = None
    return Path(path).parent if path else Path.cwd()


def code_under_test(workload_class: type) -> dict[str, Any]:
    """The ``code`` block of ``config.json``: the git state of the workload's module folder
    (:func:`git_state`; the working directory for a class without a file), and its package
    (:func:`package_of`)."""
    folder = source_folder(workload_class)
    return {**git_state(folder), "package": package_of(workload_class)}
