"""The frontier gate: a committed frontier baseline, and a check that flags a family whose
stable range shrank, its boundary moving down beyond its interval (docs/frontiers.md).

The baseline is ``<baselines>/<scale>/frontiers/<stage>.json`` (beside the stage's baseline
file, in a folder of its own), written by ``--sk-accept`` for the stages that hold sweeps. Per
family it keeps the edge's estimate and interval and ``stable_at``: the largest value at which
the family was confidently stable below its edge (the interval's lower end; for a family stable
to the top of its range, the largest value whose Wilson interval lies below 1/2).

A family *regressed* when a run now fails confidently (Wilson interval wholly above 1/2) at a
value at or below ``stable_at``: its edge's interval lies wholly below the baseline's. One seed
per value never decides (0/1 is [0, 0.62] at 80 %): gating a frontier takes 2 or more.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabilitykit.frontier import Frontier, interval_text
from stabilitykit.names import check_path_name
from stabilitykit.record.schema import RecordError, read_json, stamp, write_json

SCHEMA = "stabilitykit.frontier_baseline"
VERSION = 1
FOLDER = "frontiers"


def frontier_baseline_path(root: str | os.PathLike, stage: str, scale: str) -> Path:
    """``root/<scale>/frontiers/<stage>.json``."""
    check_path_name("stage", stage)
    check_path_name("scale", scale)
    return Path(root) / scale / FOLDER / f"{stage}.json"


def stable_at(frontier: Frontier) -> float | None:
    """The largest value at which ``frontier`` was confidently stable below its edge."""
    if frontier.boundary.bracketed:
        return frontier.boundary.interval[0]
    if frontier.stable_range is None:
        return None
    top = frontier.stable_range[1]
    below = [p for p in frontier.points if p.value <= top and p.ok]
    return next((p.value for p in reversed(below) if p.ci[1] < 0.5), None)


def failing_from(frontier: Frontier) -> float | None:
    """The smallest value at or above ``frontier``'s edge at which it failed confidently
    (``None``: none, e.g. stable to the top of its range)."""
    if frontier.boundary.bracketed:
        return frontier.boundary.interval[1]
    if frontier.stable_range is not None:
        return None
    return next((p.value for p in frontier.points if p.n and p.ci[0] > 0.5), None)


def recipe_hash(rows: Sequence[dict[str, Any]], field: str) -> str | None:
    """The hash of a family's recipe: the arm of its first row without the seed and the swept
    field (``None`` without an arm)."""
    from stabilitykit.arm import hash_of

    arm = next((r.get("arm") for r in rows if r.get("arm")), None)
    return hash_of({**arm, field: None}, family=True) if arm else None


def entry(frontier: Frontier, recipe: str | None = None) -> dict[str, Any]:
    """A family's baseline entry."""
    b = frontier.boundary
    return {
        "family": frontier.family,
        "field": frontier.field,
        "recipe": recipe,
        "bracketed": b.bracketed,
        "reason": b.reason,
        "estimate": b.estimate,
        "bracket": list(b.bracket) if b.bracket else None,
        "interval": list(b.interval),
        "stable_at": stable_at(frontier),
        "confidence": frontier.confidence,
        "values": [p.value for p in frontier.points],
        "runs": frontier.runs,
    }


def key_of(family: str, field: str) -> str:
    return f"{family}/{field}"


def read_frontier_baseline(path: str | os.PathLike) -> dict[str, Any] | None:
    """The baseline at ``path``, ``None`` when there is none; :class:`RecordError` naming a
    file that is not one."""
    path = Path(path)
    if not path.exists():
        return None
    d = read_json(path, SCHEMA, VERSION)
    if not isinstance(d.get("families"), dict):
        raise RecordError(f"{path}: field 'families' missing or not a dict")
    return d


def accept_frontiers(
    path: str | os.PathLike,
    items: Sequence[Frontier],
    stage: str,
    scale: str,
    recipes: dict[str, str | None] | None = None,
) -> list[str]:
    """Write ``items`` into the baseline at ``path`` (other families' entries kept); lines
    saying what moved."""
    path = Path(path)
    old = read_frontier_baseline(path) or {"families": {}}
    families = dict(old["families"])
    lines = []
    for f in items:
        key = key_of(f.family, f.field)
        new = entry(f, (recipes or {}).get(key))
        before = families.get(key)
        was = f" (was {before['estimate']:.3g})" if before and before.get("estimate") else ""
        said = (
            f"{new['estimate']:.3g} {interval_text(f.boundary)}"
            if f.boundary.bracketed
            else f.boundary.reason
        )
        lines.append(f"frontier {key}: edge {said}{was}")
        families[key] = new
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, stamp({"stage": stage, "scale": scale, "families": families}, SCHEMA, VERSION))
    return lines


@dataclass(frozen=True)
class EdgeCheck:
    """One family against its baseline entry. ``status``: ``ok``, ``regressed``, ``missing``
    (no entry) or ``not comparable`` (the recipe changed)."""

    key: str
    status: str
    message: str

    @property
    def regressed(self) -> bool:
        return self.status == "regressed"


def check_edge(
    frontier: Frontier, base: dict[str, Any] | None, recipe: str | None = None
) -> EdgeCheck:
    """``frontier`` against its baseline entry ``base`` (see the module docstring)."""
    key = key_of(frontier.family, frontier.field)
    now = (
        f"{frontier.boundary.estimate:.3g} {interval_text(frontier.boundary)}"
        if frontier.boundary.bracketed
        else frontier.boundary.reason
    )
    if base is None:
        return EdgeCheck(key, "missing", f"{key}: no frontier baseline entry; edge now {now}")
    if recipe and base.get("recipe") and recipe != base["recipe"]:
        return EdgeCheck(key, "not comparable", f"{key}: the recipe changed since the baseline")
    limit, failing = base.get("stable_at"), failing_from(frontier)
    was = (
        f"{base['estimate']:.3g} [{_g(base['interval'][0])}, {_g(base['interval'][1])}]"
        if base.get("bracketed")
        else str(base.get("reason"))
    )
    if limit is not None and failing is not None and failing <= limit:
        return EdgeCheck(
            key,
            "regressed",
            f"{key}: the edge moved down: failing confidently at {frontier.field} {failing:.3g}, "
            f"where the baseline was stable ({limit:.3g}); edge now {now}, baseline {was}",
        )
    return EdgeCheck(key, "ok", f"{key}: edge {now}; baseline {was}")


def _g(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def check_frontiers(
    items: Sequence[Frontier],
    baseline: dict[str, Any] | None,
    recipes: dict[str, str | None] | None = None,
) -> list[EdgeCheck]:
    """Each of ``items`` against ``baseline`` (a read baseline, or ``None``)."""
    families = (baseline or {}).get("families", {})
    return [
        check_edge(
            f,
            families.get(key_of(f.family, f.field)),
            (recipes or {}).get(key_of(f.family, f.field)),
        )
        for f in items
    ]
