"""The run-record schema: one name and version for every JSON file of a run folder.

Every JSON file carries ``{"schema": SCHEMA, "version": VERSION, ...}``; ``steps.jsonl`` carries
them in its first line. Readers reject a file of another schema or a newer version, naming it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = "stabilitykit.run"
VERSION = 1

CONFIG = "config.json"
STEPS = "steps.jsonl"
HISTORY = "history.json"
METRICS = "metrics.json"
STATS = "stats.json"
MODEL = "model.pt"


class RecordError(ValueError):
    """A run-record file that cannot be trusted (foreign, newer, corrupt)."""


def stamp(payload: dict[str, Any], schema: str = SCHEMA, version: int = VERSION) -> dict[str, Any]:
    return {"schema": schema, "version": version, **payload}


def check_stamp(
    d: Any, path: Path | str, schema: str = SCHEMA, version: int = VERSION
) -> dict[str, Any]:
    """Return ``d`` when it is a dict stamped with ``schema`` at a version <= ``version``."""
    if not isinstance(d, dict) or "schema" not in d:
        raise RecordError(f"{path}: not a {schema} file (no 'schema' field)")
    if d["schema"] != schema:
        raise RecordError(f"{path}: schema {d['schema']!r} is not {schema!r}")
    found = d.get("version")
    if not isinstance(found, int) or found < 1:
        raise RecordError(f"{path}: version {found!r} is not a positive int")
    if found > version:
        raise RecordError(
            f"{path}: written by a newer stabilitykit ({schema} version {found}); this one reads "
            f"up to version {version}"
        )
    return d


def file_mode() -> int:
    """The mode of an ordinary new file here: ``0o666`` less the process umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where ``/proc`` tells it (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file in the same folder, then rename; a symlink at
    ``path`` is replaced, never written through), with the mode of an ordinary file
    (:func:`file_mode`; ``mkstemp`` alone would leave it ``0600``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON with :func:`write_text` (atomic, an ordinary file's mode)."""
    text = json.dumps(payload, indent=1, allow_nan=True, default=_json_default)
    write_text(path, text + "\n")


def read_json(path: Path | str, schema: str = SCHEMA, version: int = VERSION) -> dict[str, Any]:
    """Read a stamped JSON file; :class:`RecordError` naming it when it is not valid JSON (or
    not text, or nested too deep) or not stamped with ``schema`` at a version <= ``version``."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except RecursionError:
        raise RecordError(f"{path}: JSON nested too deep") from None
    return check_stamp(d, path, schema, version)


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
