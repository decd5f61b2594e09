"""The gated metrics (direction and tolerance of each) and the numbers of one arm run.

The rules and the record's declarations live in :mod:`stabilitykit.record.declared` (the
reports read them too) and are re-exported here.

A :class:`MetricRule` says which way a metric is better and how much worse than its baseline is
still noise. :data:`DEFAULT_RULES` holds the engine's own metrics (best val loss, pre-clip grad
norm p99), which every workload has. The workload's metrics come from the run record: its
``config.json`` carries a ``workload`` block (:class:`WorkloadDecl`) declaring each metric's
label, direction, default tolerance and trivial-predictor floor, and :func:`rules_from_config`
turns it into rules (engine rules plus one per declared metric with a tolerance). A record
without the block (written before workloads declared their metrics) gates the engine metrics
only. A benchmark overrides rules in one call::

    rules = run.rules.override(rel_l2=MetricRule("rel_l2", "lower", rel_tol=0.5))
    rules = DEFAULT_RULES.override({"grad_norm_preclip_p99": None})  # stop gating a metric

:class:`ArmRun` is what the gate reads of a run, built by :func:`arm_run` from a run record, a
run folder, an ``ArmResult`` or a stage-metrics row (a row carries its record's ``workload``
block under the same key), with the rules of its workload in ``ArmRun.rules`` and the
fingerprint of its numerics (``config["numerics"]``, :func:`numerics_of`) in ``ArmRun.numerics``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stabilitykit.record.declared import (  # the declarations, re-exported for the gate's API
    DEFAULT_RULES as DEFAULT_RULES,
)
from stabilitykit.record.declared import DIRECTIONS as DIRECTIONS
from stabilitykit.record.declared import DeclaredMetric as DeclaredMetric
from stabilitykit.record.declared import Direction as Direction
from stabilitykit.record.declared import MetricRule as MetricRule
from stabilitykit.record.declared import Rules as Rules
from stabilitykit.record.declared import WorkloadDecl as WorkloadDecl
from stabilitykit.record.declared import is_name
from stabilitykit.record.declared import rules_from_config as rules_from_config
from stabilitykit.record.declared import workload_of as workload_of
from stabilitykit.record.run_record import (
    RunRecord,
    parse_created,
    read_record,
    time_of_name,
)

_SEED_SUFFIX = re.compile(r"-seed\d+$")


def as_rules(
    rules: Rules | Mapping[str, MetricRule] | Iterable[MetricRule] | None,
    run: ArmRun | None = None,
) -> Rules:
    """``rules`` as :class:`Rules`; ``None`` gives ``run.rules`` (the rules of the run's
    workload, from its record) when a run is given, else :data:`DEFAULT_RULES`."""
    if rules is None:
        return run.rules if run is not None else DEFAULT_RULES
    return rules if isinstance(rules, Rules) else Rules(rules)


def merged_rules(runs: Iterable[ArmRun]) -> Rules:
    """The union of the runs' rules (the first run's rule wins for a metric they share); the
    engine's :data:`DEFAULT_RULES` when there are no runs."""
    merged: dict[str, MetricRule] = {}
    for run in runs:
        for name, rule in run.rules.items():
            merged.setdefault(name, rule)
    return Rules(merged.values()) if merged else DEFAULT_RULES


# --- the numbers of one run ---------------------------------------------------------------------


@dataclass(frozen=True)
class ArmRun:
    """What the gate reads of one run: who it is, its verdict and its numbers.

    ``values`` maps metric names to finite floats; a metric the run logged as NaN or infinity is
    present as ``None``. ``family_hash`` is the arm's hash without the seed (equal for every seed
    replicate); ``arm_hash`` includes it.
    """

    arm_id: str
    arm_name: str
    arm_hash: str
    family_hash: str
    seed: int | None
    scale: str | None
    verdict: str
    values: Mapping[str, float | None] = field(default_factory=dict)
    stage: str | None = None
    complete: bool = True
    source: str = ""
    arm: Mapping[str, Any] = field(default_factory=dict)  # the arm's fields, where recorded
    # The gate's rules for this run: its workload's declared metrics plus the engine's.
    rules: Rules = field(default_factory=lambda: DEFAULT_RULES, repr=False)
    # When the run began (UTC), where known: its record's ``created`` (see newest_per_arm).
    created: dt.datetime | None = None
    # What its bits depend on (numerics mode, torch, machine): two runs of one arm hash with the
    # same fingerprint give identical numbers. ``None``: unknown (a record without the block),
    # equal to nothing. ``numerics_label`` describes it for people.
    numerics: str | None = None
    numerics_label: str = ""

    @property
    def family_id(self) -> str:
        """The arm id without its seed suffix: the readable name of the seed family."""
        return family_id(self.arm_id)


def numerics_of(config: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(fingerprint, description)`` of the ``numerics`` block of a ``config.json`` (or a
    stage-metrics row)::

        {"mode": "portable", "fingerprint": "16 hex", "torch": "2.13.0+cpu", "machine": "x86_64",
         "device": "cpu", "threads": 2, "aten_capability": "AVX2", ...}

    ``(None, "unknown")`` without a block or a fingerprint (records before stabilitykit 0.4)."""
    block = config.get("numerics") if isinstance(config, Mapping) else None
    if not isinstance(block, Mapping) or not is_name(block.get("fingerprint")):
        return None, "unknown"
    mode = block.get("mode") if is_name(block.get("mode")) else "mode unknown"
    keys = _NUMERICS_DESCRIBED + (("cpu_model",) if mode == "native" else ())
    details = [f"{k} {block[k]}" for k in keys if isinstance(block.get(k), (str, int, float))]
    text = f"{mode} {block['fingerprint']}"
    return block["fingerprint"], f"{text} ({', '.join(details)})" if details else text


# The entries of a numerics block that describe it for people (the fingerprint covers them all).
_NUMERICS_DESCRIBED = (
    "torch",
    "machine",
    "device",
    "device_name",
    "threads",
    "aten_capability",
    "onednn_isa",
    "mkl_branch",
)


def family_id(arm_id: str) -> str:
    """``"control-hybrid-b4-seed20260128"`` -> ``"control-hybrid-b4"``."""
    return _SEED_SUFFIX.sub("", arm_id)


def as_number(x: Any) -> float | None:
    """``x`` as a finite float; ``None`` for NaN, infinities, bools, text and anything else."""
    if isinstance(x, bool):
        return None
    if isinstance(x, str):
        try:
            x = float(x.replace("Infinity", "inf"))
        except ValueError:
            return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _values(*sources: Mapping[str, Any]) -> dict[str, float | None]:
    """Numeric entries of ``sources`` (later ones win); non-finite numbers kept as ``None``."""
    out: dict[str, float | None] = {}
    for source in sources:
        for key, value in source.items():
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                number = as_number(value)
                if number is not None or not isinstance(value, str) or _is_nonfinite(value):
                    out[key] = number
    return out


def _is_nonfinite(text: str) -> bool:
    return text.strip().lower().lstrip("+-") in {"nan", "inf", "infinity"}


def arm_run(source: ArmRun | RunRecord | Mapping[str, Any] | str | os.PathLike | Any) -> ArmRun:
    """The :class:`ArmRun` of ``source``: a run record, a run folder, an ``ArmResult`` (anything
    with ``run_dir``), or a stage-metrics row (a mapping with ``arm_id``, ``arm_hash``,
    ``family_hash``, ``verdict`` and metric values). Raises ``ValueError`` naming what is missing.
    """
    if isinstance(source, ArmRun):
        return source
    if isinstance(source, RunRecord):
        return _from_record(source)
    if isinstance(source, (str, os.PathLike)):
        return _from_record(read_record(source))
    if isinstance(source, Mapping):
        return _from_row(source)
    if hasattr(source, "run_dir"):
        return _from_record(read_record(source.run_dir))
    raise TypeError(
        "arm_run: expected an ArmRun, RunRecord, run folder, ArmResult or metrics row, got "
        f"{type(source).__name__}"
    )


def _from_record(record: RunRecord) -> ArmRun:
    config = record.config
    arm = config.get("arm") if isinstance(config.get("arm"), dict) else {}
    missing = [k for k in ("arm_id", "arm_hash", "family_hash") if not config.get(k)]
    if missing:
        raise ValueError(f"{record.path}: config.json has no {', '.join(missing)}")
    seed = arm.get("seed")
    tags = config.get("tags") if isinstance(config.get("tags"), dict) else {}
    try:
        rules = rules_from_config(config)
    except ValueError as exc:
        raise ValueError(f"{record.path}: config.json: {exc}") from None
    numerics = numerics_of(config)
    return ArmRun(
        arm_id=config["arm_id"],
        arm_name=arm.get("name", family_id(config["arm_id"])),
        arm_hash=config["arm_hash"],
        family_hash=config["family_hash"],
        seed=seed if isinstance(seed, int) else None,
        scale=config.get("scale", arm.get("scale")),
        verdict=record.verdict.kind.value,
        values=_values(record.stats, record.metrics),
        stage=tags.get("stage"),
        complete=record.complete,
        source=str(record.path),
        arm=arm,
        rules=rules,
        created=record.created,
        numerics=numerics[0],
        numerics_label=numerics[1],
    )


_ROW_IDENTITY = frozenset(
    {
        "arm_id",
        "arm_name",
        "arm_hash",
        "family_hash",
        "seed",
        "scale",
        "arm",
        "workload",
        "numerics",
    }
)


def _from_row(row: Mapping[str, Any]) -> ArmRun:
    missing = [k for k in ("arm_id", "arm_hash", "family_hash", "verdict") if not row.get(k)]
    if missing:
        who = row.get("arm_id") or row.get("run") or "?"
        raise ValueError(f"metrics row {who}: no {', '.join(missing)}")
    seed = row.get("seed")
    try:
        rules = rules_from_config(row)
    except ValueError as exc:
        raise ValueError(f"metrics row {row['arm_id']}: {exc}") from None
    numerics = numerics_of(row)
    return ArmRun(
        arm_id=row["arm_id"],
        arm_name=row.get("arm_name") or family_id(row["arm_id"]),
        arm_hash=row["arm_hash"],
        family_hash=row["family_hash"],
        seed=int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None,
        scale=row.get("scale"),
        verdict=str(row["verdict"]),
        values=_values({k: v for k, v in row.items() if k not in _ROW_IDENTITY}),
        stage=row.get("stage"),
        complete=bool(row.get("complete", True)),
        source=str(row.get("run", "")),
        arm=row["arm"] if isinstance(row.get("arm"), dict) else {},
        rules=rules,
        created=parse_created(row.get("created")),
        numerics=numerics[0],
        numerics_label=numerics[1],
    )


NOT_FAMILY = frozenset({"name", "scale", "seed"})  # arm fields outside the family hash


def family_fields(arm: Mapping[str, Any]) -> dict[str, Any]:
    """The arm's fields that make its family hash (all but name, scale and seed)."""
    return {k: v for k, v in arm.items() if k not in NOT_FAMILY}


def arm_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """``(field, old, new)`` for each arm field that differs (nested ones as ``data.N``)."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += arm_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


_NO_TIME = dt.datetime.min.replace(tzinfo=dt.UTC)


def run_time(run: ArmRun) -> dt.datetime:
    """When ``run`` began: its recorded ``created``, else the time in its run folder's name
    (``<arm id>-<UTC time>-<random>``), else the earliest time."""
    return run.created or time_of_name(Path(run.source).name) or _NO_TIME


def newest_per_arm(runs: Iterable[ArmRun]) -> list[ArmRun]:
    """One run per ``arm_hash``: the complete one that began last (:func:`run_time`; the
    source name breaks a tie), else the newest half-written one; sorted by arm id."""
    best: dict[str, ArmRun] = {}
    for run in runs:
        old = best.get(run.arm_hash)
        key = (run.complete, run_time(run), Path(run.source).name)
        if old is None or key > (old.complete, run_time(old), Path(old.source).name):
            best[run.arm_hash] = run
    return sorted(best.values(), key=lambda r: (r.arm_id, r.arm_hash))
