"""Names that become parts of a path: checked at every entry point, so that no stage or scale
name (from an option, a record or a baseline file) can lead a write out of its folder.

::

    check_path_name("stage", "stage_b")      # 'stage_b'
    check_path_name("scale", "../../y")      # ValueError: scale: got '../../y'; allowed: ...
"""

from __future__ import annotations

import os
import re
from typing import Any

STAGE_PREFIX = "stage_"
#: The longest stage name: a folder name, far below a file system's 255 bytes.
MAX_STAGE_LENGTH = 64
#: ``stage_`` then ASCII letters, digits and ``_`` (``stage_b``, ``stage_darcy``, ``stage_2x``).
STAGE_PATTERN = re.compile(r"stage_[A-Za-z0-9_]+")
#: The scales a record or baseline can carry (``custom``: an arm run as written).
PATH_SCALES: tuple[str, ...] = ("smoke", "proxy", "ci", "full", "custom")

_ALLOWED = {
    "stage": (
        f"'stage_' then letters, digits or '_', at most {MAX_STAGE_LENGTH} characters "
        "(e.g. 'stage_b')"
    ),
    "scale": f"one of {PATH_SCALES}",
}


def is_path_name(kind: str, value: Any) -> bool:
    """Whether ``value`` is an allowed ``kind`` name (``"stage"`` or ``"scale"``)."""
    if kind not in _ALLOWED:
        raise ValueError(f"check_path_name: kind {kind!r} is not one of {tuple(_ALLOWED)}")
    if not isinstance(value, str):
        return False
    if kind == "stage":
        return len(value) <= MAX_STAGE_LENGTH and STAGE_PATTERN.fullmatch(value) is not None
    return value in PATH_SCALES


def check_plain_name(where: str, value: Any) -> str:
    """Return ``value`` when it is one plain path component (no separator, not ``.``/``..``);
    else ``ValueError`` naming ``where``. The weaker check of a library call that takes any
    name; :func:`check_path_name` is the check of names read from options and records."""
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or any(c in value for c in ("/", "\\", "\0", os.sep))
    ):
        raise ValueError(f"{where}: got {value!r}; allowed: a plain name (no '/', not '..')")
    return value


def check_path_name(kind: str, value: Any, where: str | None = None) -> str:
    """Return ``value`` when it is an allowed ``kind`` name; else raise ``ValueError`` naming
    ``where`` (default ``kind``), the value and what is allowed."""
    if not is_path_name(kind, value):
        long = isinstance(value, str) and len(value) > MAX_STAGE_LENGTH
        size = f" ({len(value)} characters)" if long else ""
        raise ValueError(f"{where or kind}: got {value!r}{size}; allowed: {_ALLOWED[kind]}")
    return value
