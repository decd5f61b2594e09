"""Sweeps: one arm expanded over the values of one numeric field and over seeds (docs/frontiers.md).

Each point is an ordinary :class:`~stabilitykit.arm.Arm`, named ``<family>-<field><value>``
(``control-lr3e-3``) and carrying ``sweep = (family, field)``; so ``parametrize``, xdist,
shards, Slurm, resume, the records and the gate treat it as any arm, and the stage summary
groups the points into one frontier per family (:mod:`stabilitykit.frontier`). A scale keeps a
point's swept value; a point whose run is already complete in ``--sk-out`` is read, not trained
again (``--sk-rerun`` trains it again).

Example::

    POINTS = sweep(CONTROL, "lr", log_grid(1e-4, 1e-1, per_decade=2), seeds=3)

    @pytest.mark.stability
    @pytest.mark.stage_frontier
    @pytest.mark.parametrize("arm", POINTS, ids=point_ids(POINTS))
    def test_frontier(arm, run_arm):
        run_arm(arm)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from stabilitykit.arm import SWEEPABLE, Arm

#: Points per decade of the default lr grid, and decades each side of the arm's lr.
DEFAULT_PER_DECADE = 2
DEFAULT_DECADES = 2


def round_sig(value: float, digits: int = 3) -> float:
    """``value`` to ``digits`` significant figures (grid values that print as they are)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def log_grid(lo: float, hi: float, per_decade: int = 4) -> tuple[float, ...]:
    """The values ``10**(k / per_decade)`` in ``[lo, hi]`` (3 significant figures), ascending:
    ``log_grid(1e-3, 1e-1, 2)`` is ``(0.001, 0.00316, 0.01, 0.0316, 0.1)``."""
    if not (lo > 0 and hi >= lo and math.isfinite(hi)):
        raise ValueError(f"log_grid: expected 0 < lo <= hi, got lo={lo!r}, hi={hi!r}")
    if not (isinstance(per_decade, int) and per_decade >= 1):
        raise ValueError(f"log_grid: per_decade: expected an int >= 1, got {per_decade!r}")
    eps = 1e-9
    first = math.ceil(math.log10(lo) * per_decade - eps)
    last = math.floor(math.log10(hi) * per_decade + eps)
    return tuple(round_sig(10 ** (k / per_decade)) for k in range(first, last + 1))


def value_text(value: float) -> str:
    """A swept value as it reads in a name: ``3e-3``, ``3.16e-4``, ``0.316``, ``8``."""
    if isinstance(value, int) or (abs(value) < 1e6 and float(value).is_integer()):
        return str(int(value))
    if 0.01 <= abs(value) < 1000:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def point_name(family: str, field: str, value: float) -> str:
    """The name of the point of ``family`` at ``field = value``: ``control-lr3e-3``."""
    return f"{family}-{field}{value_text(value)}"


def sweep(
    arm: Arm,
    field: str = "lr",
    values: Iterable[float] | None = None,
    *,
    seeds: int = 1,
    family: str | None = None,
) -> list[Arm]:
    """``arm`` at each of ``values`` of ``field`` and each of ``seeds`` seeds (``arm.seed``,
    ``arm.seed + 1``, ...), ordered by value then seed; each point is named by
    :func:`point_name` and carries ``sweep = (family, field)`` (``family`` default: the arm's
    name). ``values`` default, for ``lr`` only: the arm's lr times ``10**(k/2)`` for
    ``k = -4 ... 4`` (two decades each way). ``ValueError`` names what is wrong."""
    if field not in SWEEPABLE:
        raise ValueError(f"sweep: field: got {field!r}; allowed: one of {SWEEPABLE}")
    if values is None:
        if field != "lr":
            raise ValueError(
                f"sweep: values: expected values for field {field!r} (only lr has a default grid)"
            )
        ks = range(-DEFAULT_DECADES * DEFAULT_PER_DECADE, DEFAULT_DECADES * DEFAULT_PER_DECADE + 1)
        values = [round_sig(arm.lr * 10 ** (k / DEFAULT_PER_DECADE)) for k in ks]
    values = sorted(values)
    if not values or len(set(values)) != len(values):
        raise ValueError(f"sweep: values: expected distinct values, got {values!r}")
    if not (isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1):
        raise ValueError(f"sweep: seeds: expected an int >= 1, got {seeds!r}")
    family = arm.name if family is None else family
    points = []
    for value in values:
        point = arm.replace(name=point_name(family, field, value), sweep=(family, field))
        point = point.replace(**{field: value})
        points += [point.replace(seed=arm.seed + k) for k in range(seeds)]
    return points


def point_ids(arms: Sequence[Arm]) -> list[str]:
    """Test ids for ``arms``: ``control-lr3e-3-s1``, the seed counted from the lowest seed of
    the arm's family in ``arms`` (an arm outside a sweep: from its name's lowest seed)."""

    def family(arm: Arm) -> str:
        return arm.sweep[0] if arm.sweep is not None else arm.name

    base: dict[str, int] = {}
    for arm in arms:
        base[family(arm)] = min(arm.seed, base.get(family(arm), arm.seed))
    return [f"{arm.name}-s{arm.seed - base[family(arm)]}" for arm in arms]
