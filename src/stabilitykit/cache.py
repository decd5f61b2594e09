"""Content-addressed cache of built data sets: ``<cache_dir>/<key>.npz``, shared by every workload.

Writers build under an exclusive ``flock`` on ``<key>.lock``, write a temp file in the same folder
and ``os.replace`` it into place, so readers see a complete file or none. A file that fails to load
or validate is logged, deleted and rebuilt, never trusted. Files are written with the process's
umask, as any other output file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
T = TypeVar("T")


def default_cache_dir() -> Path:
    """``$STABILITYKIT_CACHE`` if set, else ``~/.cache/stabilitykit``."""
    env = os.environ.get("STABILITYKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "stabilitykit"


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_npz_atomic(
    path: Path,
    arrays: Mapping[str, np.ndarray],
    check: Callable[[Path], T] | None = None,
) -> T | None:
    """Write ``arrays`` to ``path`` as ``.npz`` through a temp file and ``os.replace``. With
    ``check``, the temp file is ``check``-ed first (its result is returned): a file that fails
    never reaches ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        checked = check(Path(tmp)) if check is not None else None
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a cache file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return checked


def remove_orphans(cache_dir: Path, key: str) -> None:
    """Delete temp files of ``key`` left by a writer that was killed mid-write (call under the
    key's lock: no live writer of ``key`` can own them then)."""
    for orphan in cache_dir.glob(f".{key}.*.tmp"):
        log.warning("removing %s, left by an interrupted cache writer", orphan)
        orphan.unlink(missing_ok=True)


def read_npz(path: Path) -> Arrays:
    """Every member of ``path`` (reading them all checks the zip CRCs)."""
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def load_or_build(
    key: str,
    build: Callable[[], Mapping[str, np.ndarray]],
    cache_dir: str | os.PathLike,
    load: Callable[[Path], object] = read_npz,
    save: Callable[[object], Mapping[str, np.ndarray]] | None = None,
) -> object:
    """The data set cached under ``key``: ``load(path)``, or ``build()`` stored there first.

    ``load`` reads and validates a file (raising on anything it cannot trust); a built set is
    loaded from its written file before that file is put in place, so a set that fails is never
    cached. ``save`` turns a built object into arrays (identity when ``build`` already returns
    arrays). Safe with
    concurrent callers, processes or threads: one builds, the others wait and load.
    """
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ValueError(f"cache_dir: {cache_dir} exists and is not a folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.npz"
    if path.exists():  # fast path: files appear only by atomic rename, never half-written
        try:
            return load(path)
        except Exception:  # judged (and logged) again under the lock
            pass
    with exclusive_lock(cache_dir / f"{key}.lock"):
        remove_orphans(cache_dir, key)
        if path.exists():  # built by another process while we waited, or corrupt
            try:
                return load(path)
            except Exception as err:  # any failure to read or validate: do not trust the file
                log.warning("discarding cached data set %s: %s: %s", path, type(err).__name__, err)
                path.unlink()
        built = build()
        # the written file is loaded before it is put in place: a set that fails is not cached
        loaded = write_npz_atomic(path, built if save is None else save(built), check=load)
    return built if save is not None else loaded
