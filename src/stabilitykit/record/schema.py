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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, allow_nan=True, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path | str, schema: str = SCHEMA, version: int = VERSION) -> dict[str, Any]:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    return check_stamp(d, path, schema, version)


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
