"""Collate run records into rows (one per arm and seed) and per-arm summaries over seeds.

A row holds the numbers a report needs from one :class:`RunRecord`, finite or ``None``; a
half-written run still gives a row (its verdict ``interrupted``, its numbers from whatever it
logged). Rows of one arm over several seeds are summarised by :func:`summarise_arms`: failure rate
with a Wilson interval, median and IQR over the seeds that stayed stable.

The engine's numbers (:data:`METRIC_COLUMNS`) come from ``stats.json``; the workload's from
``metrics.json`` under their own names, and the row carries the record's ``workload`` block
(:class:`~stabilitykit.record.declared.WorkloadDecl`: labels, directions, floors), so a stage of any
workload, or of several, gets its columns from :func:`stage_columns`. A record written before
workloads declared their metrics has ``workload`` ``None``: its metrics are shown, undeclared.

A row also carries the record's ``arm`` dict (as run) and its ``scale_changes`` (``{field: [as
written, as run]}``, ``None`` for a record written before configs carried them), so a summary
can say what tells its arms apart (:func:`differing_fields`), what the scale changed
(:func:`scale_changes_of`) and whether best val losses may be compared (:func:`loss_basis`).

A row carries the record's spikes as ``spikes`` (:func:`spike_summary`: how many, the first
step, the worst; ``None`` for a record written before spike detection: unknown, not none) and
the verdict an arm was meant to end with as ``expect`` (its ``tags.expect``; ``None`` for an
arm meant to pass).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stabilitykit.judge.rates import wilson_interval as wilson_interval  # re-exported
from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.record.declared import DeclaredMetric, WorkloadDecl, workload_of
from stabilitykit.record.run_record import RunRecord

#: The engine's numbers of a run (from ``stats.json``), which every workload has. A workload's
#: own metrics come from ``metrics.json`` under their own names (:func:`metrics_row`).
METRIC_COLUMNS: tuple[str, ...] = (
    "best_val_loss",
    "final_val_loss",
    "grad_norm_preclip_min",
    "grad_norm_preclip_median",
    "grad_norm_preclip_p99",
    "grad_norm_preclip_max",
    "grad_norm_postclip_min",
    "grad_norm_postclip_median",
    "grad_norm_postclip_p99",
    "grad_norm_postclip_max",
    "parameters",
    "train_seconds",
)

# Further engine numbers the narrative rules read (evidence).
DETAIL_COLUMNS: tuple[str, ...] = (
    "initial_val_loss",
    "best_val_epoch",
    "epochs_completed",
    "steps",
    "nonfinite_step",
    "grad_norm_preclip_max_step",
)
ARM_COLUMNS: tuple[str, ...] = (
    "architecture",
    "fno_blocks",
    "max_channels",
    "layerscale_init",
    "clip",
    "clip_value",
    "lr",
    "epochs",
)
#: The fields of a row that say who and what it is (not numbers of the run).
ROW_FIELDS: tuple[str, ...] = (
    "arm_id",
    "arm_name",
    "arm_hash",
    "family_hash",
    "seed",
    "scale",
    "stage",
    "data_hash",
    "run",
    "verdict",
    "verdict_reason",
    "evidence",
    "complete",
    "status",
    "workload",
    "numerics",
    "reference",
    "arm",
    "scale_changes",
    "spikes",
    "expect",
)
_NOT_METRIC = frozenset((*ROW_FIELDS, *DETAIL_COLUMNS, *ARM_COLUMNS))


@dataclass(frozen=True)
class Column:
    """One column of a stage table: ``header`` over the values of row key ``key``, shown beside
    the value of ``floor`` (the trivial predictor's) when the metric declares one;
    ``direction`` (``lower``/``higher``) says which way is better, ``None`` when unknown."""

    header: str
    key: str
    floor: str | None = None
    direction: str | None = None

    @property
    def title(self) -> str:
        """The header with an arrow for the better direction (``rel L2 ↓``)."""
        arrow = {"higher": " ↑", "lower": " ↓"}.get(self.direction or "", "")
        return self.header + arrow


LOSS_COLUMN = Column("best val loss", "best_val_loss", direction="lower")
#: The global grad norm before clipping (median, p99, max over the logged steps) and after it
#: (median, max): what the optimiser was given.
GRAD_COLUMNS: tuple[Column, ...] = (
    Column("pre-clip grad norm median", "grad_norm_preclip_median"),
    Column("p99", "grad_norm_preclip_p99", direction="lower"),
    Column("max", "grad_norm_preclip_max"),
    Column("post-clip median", "grad_norm_postclip_median"),
    Column("post-clip max", "grad_norm_postclip_max"),
)
#: The engine's columns of every stage table (the workload's declared metrics go between).
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (c.header, c.key) for c in (LOSS_COLUMN, *GRAD_COLUMNS)
)


def finite(x: Any) -> float | int | None:
    """``x`` as a finite number (ints stay ints); ``None`` for missing, non-finite, bools, text."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        if isinstance(x, str):
            try:
                x = float(x)
            except ValueError:
                return None
        else:
            return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    return float(x) if math.isfinite(x) else None


def family_hash(config: dict[str, Any]) -> str | None:
    """The run's ``family_hash`` (the arm hash without the seed); for a record written before
    configs carried it, recomputed from the arm dict as ``Arm.family_hash`` does."""
    if config.get("family_hash"):
        return str(config["family_hash"])
    arm = config.get("arm")
    if not isinstance(arm, dict) or not arm:
        return None
    from stabilitykit.arm import hash_of  # only for older records: it imports torch

    return hash_of(arm, family=True)


def _logged_stats(record: RunRecord) -> dict[str, Any]:
    """Summary numbers of a run that never wrote ``stats.json``, from what it logged."""
    if record.complete or not (record.steps or record.history):
        return dict(record.stats)
    from stabilitykit.train.telemetry import summarise_history, summarise_steps

    out: dict[str, Any] = {}
    try:
        out.update(summarise_history(record.history))
        out.update(summarise_steps(record.steps))
    except (KeyError, TypeError, ValueError):  # a partial row: report what there is
        pass
    return out


def metrics_row(record: RunRecord) -> dict[str, Any]:
    """One row for ``record``: who it is, its verdict, the engine's :data:`METRIC_COLUMNS` and
    :data:`DETAIL_COLUMNS`, the :data:`ARM_COLUMNS`, the record's ``workload`` block (``None``
    when it has none) and every entry of ``metrics.json`` under its own name (numbers finite or
    ``None``, flags as bools; a name the row already has is left out); a declared metric, floor
    or diagnostic that ``metrics.json`` lacks (a half-written run) is ``None``."""
    config, arm = record.config, record.arm if isinstance(record.arm, dict) else {}
    stats = _logged_stats(record)
    if stats.get("parameters") is None:
        stats["parameters"] = config.get("parameters")
    seed = arm.get("seed", (config.get("seeds") or {}).get("model_init"))
    decl = workload_of(config)
    row: dict[str, Any] = {
        "arm_id": config.get("arm_id", record.path.name),
        "arm_name": arm.get("name", config.get("arm_id", record.path.name)),
        "arm_hash": config.get("arm_hash"),
        "family_hash": family_hash(config),
        "seed": finite(seed),
        "scale": config.get("scale", arm.get("scale")),
        "stage": (config.get("tags") or {}).get("stage"),
        "data_hash": config.get("data_hash"),
        "run": record.path.name,
        "verdict": record.verdict.kind.value,
        "verdict_reason": str(record.verdict.evidence[0]) if record.verdict.evidence else "",
        "evidence": [str(e) for e in record.verdict.evidence],
        "complete": record.complete,
        "status": stats.get("status"),
        "workload": decl.to_json(),
        "numerics": config.get("numerics"),  # what the bits depend on: the gate reads it
        "arm": dict(arm),
        "scale_changes": _scale_changes(config.get("scale_changes")),
        "spikes": spike_summary(stats),
        "expect": _expect(config.get("tags")),
    }
    for key in (*METRIC_COLUMNS, *DETAIL_COLUMNS):
        row[key] = finite(stats.get(key))
    for key in ARM_COLUMNS:
        value = arm.get(key)
        row[key] = value if isinstance(value, str) else finite(value)
    for key, value in record.metrics.items():
        if key in row or key in _NOT_METRIC:
            continue
        if isinstance(value, bool) or value is None:
            row[key] = value
        elif isinstance(value, (int, float, str)):
            row[key] = finite(value)
    for key in (*(m.name for m in decl.metrics), *decl.floors, *decl.diagnostics):
        if key not in _NOT_METRIC:
            row.setdefault(key, None)  # declared, not logged (a half-written run)
    return row


def _scale_changes(value: Any) -> dict[str, list[Any]] | None:
    """``config["scale_changes"]`` as ``{field: [as written, as run]}`` (malformed entries left
    out); ``None`` when the config has none (a record written before they were recorded)."""
    if not isinstance(value, Mapping):
        return None
    return {
        str(k): list(v) for k, v in value.items() if isinstance(v, (list, tuple)) and len(v) == 2
    }


def _expect(tags: Any) -> str | None:
    """The verdict kind ``tags.expect`` names (an arm meant to fail), else ``None``."""
    value = tags.get("expect") if isinstance(tags, Mapping) else None
    return value if isinstance(value, str) and value else None


# --- spikes ------------------------------------------------------------------------------------


def spike_ratio(spike: Mapping[str, Any]) -> float:
    """How far a spike went past its rule's limit: ``value / limit``, as the ``Spikes``
    criterion ranks spikes (the worst is the largest); ``0`` when a number is missing."""
    value, limit = finite(spike.get("value")), finite(spike.get("limit"))
    if value is None or limit is None:
        return 0.0
    return value / max(limit, 1e-30)


def worst_spike(spikes: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The spike of largest :func:`spike_ratio` (the first of equals); ``None`` for none."""
    spikes = [s for s in spikes if isinstance(s, Mapping)]
    return max(spikes, key=spike_ratio) if spikes else None


def spike_summary(stats: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{count, by_signal, first_step, worst}`` of ``stats["spikes"]``: how many spikes (and
    per signal), the first step flagged and the worst spike (:func:`worst_spike`: criterion,
    signal, step, epoch, value, baseline (the running mean), limit, ratio and its top layer
    ``[name, grad norm]``, or ``None``). ``None`` when the stats have no ``spikes`` list: a
    record written before spike detection, whose spikes are unknown (not zero)."""
    spikes = stats.get("spikes")
    if not isinstance(spikes, list):
        return None
    spikes = [s for s in spikes if isinstance(s, Mapping)]
    by_signal: dict[str, int] = {}
    for s in spikes:
        signal = str(s.get("signal") or "?")
        by_signal[signal] = by_signal.get(signal, 0) + 1
    steps = [step for s in spikes if (step := finite(s.get("step"))) is not None]
    worst = worst_spike(spikes)
    counts = stats.get("spike_counts")  # every spike; the list keeps the first 100 per rule
    counted = [finite(v) for v in counts.values()] if isinstance(counts, Mapping) else []
    return {
        "count": int(sum(v for v in counted if v is not None)) if counted else len(spikes),
        "by_signal": by_signal,
        "first_step": min(steps) if steps else None,
        "worst": None if worst is None else _spike_evidence(worst),
    }


def _spike_evidence(spike: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of one spike for a row (finite or ``None``) and its top layer."""
    top = spike.get("top_layers")
    first = top[0] if isinstance(top, list) and top else None
    top_layer = (
        [str(first[0]), finite(first[1])]
        if isinstance(first, (list, tuple)) and len(first) == 2
        else None
    )
    return {
        "criterion": spike.get("criterion"),
        "signal": spike.get("signal"),
        **{k: finite(spike.get(k)) for k in ("step", "epoch", "value", "baseline", "limit")},
        "ratio": finite(spike_ratio(spike)),
        "top_layer": top_layer,
    }


def row_workload(row: Mapping[str, Any]) -> WorkloadDecl:
    """The workload declaration a row carries (the empty one for an older record)."""
    return workload_of(row)


def metric_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The numeric keys of ``rows``: :data:`METRIC_COLUMNS`, then each row's declared metrics,
    floors and diagnostics, then the other numbers its ``metrics.json`` had, in order of first
    appearance (flags such as bools left out)."""
    keys = dict.fromkeys(METRIC_COLUMNS)
    for row in rows:
        decl = row_workload(row)
        for m in decl.metrics:
            keys.update(dict.fromkeys([m.name, *([m.floor] if m.floor else [])]))
        keys.update(dict.fromkeys(k for k in decl.diagnostics if _numeric(row.get(k))))
        keys.update(
            dict.fromkeys(k for k, v in row.items() if k not in _NOT_METRIC and _numeric(v))
        )
    return list(keys)


def _numeric(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def key_metrics(decl: WorkloadDecl) -> list[DeclaredMetric]:
    """The metrics of ``decl`` that stage tables show in columns: the primary metric and every
    gated one (a tolerance declared), in declaration order. The others are shown with the
    diagnostics (:func:`other_keys`)."""
    primary = decl.primary
    return [m for m in decl.metrics if m is primary or m.rule() is not None]


def declared_metrics(rows: Sequence[Mapping[str, Any]]) -> list[DeclaredMetric]:
    """The :func:`key_metrics` of the rows' workloads, their union in order of first appearance
    (the first declaration of a name wins)."""
    out: dict[str, DeclaredMetric] = {}
    for row in rows:
        for m in key_metrics(row_workload(row)):
            out.setdefault(m.name, m)
    return list(out.values())


def stage_columns(rows: Sequence[Mapping[str, Any]]) -> list[Column]:
    """The columns of a stage table over ``rows``: best val loss, the key metrics of the rows'
    workloads (:func:`key_metrics`: label, floor, direction; the union over workloads), then
    the grad norms."""
    metrics = [Column(m.title, m.name, m.floor, m.direction) for m in declared_metrics(rows)]
    return [LOSS_COLUMN, *metrics, *GRAD_COLUMNS]


def in_table(row: Mapping[str, Any], key: str) -> bool:
    """Whether ``key`` of ``row`` belongs in a metric column of the stage table: an engine
    number, or a key metric (or its floor) of the row's own workload. A record without a
    ``workload`` block declares nothing: its values show under :func:`other_keys` only."""
    if key in METRIC_COLUMNS:
        return True
    return any(key in (m.name, m.floor) for m in key_metrics(row_workload(row)))


def other_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the rows' ``metrics.json`` hold beyond their key metrics and floors: the declared
    metrics without a tolerance, the diagnostics and, for a record without a ``workload``
    block, everything it logged (numbers and flags), in order of first appearance. Shown,
    never gated."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(other_of(row)))
    return list(keys)


def other_of(row: Mapping[str, Any]) -> list[str]:
    """The keys of ``row`` that :func:`other_keys` shows for it."""
    decl = row_workload(row)
    listed = [m.name for m in decl.metrics if m.name in row]
    listed += [k for k in decl.diagnostics if k in row and k not in listed]
    listed += [k for k in row if k not in _NOT_METRIC and k not in listed]
    return [k for k in listed if not in_table(row, k)]


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its seeds.

    Runs group by ``(arm_name, family_hash)``: the arm's name and its hash without the seed, so
    the seeds of a sweep are one arm while two recipes sharing a name stay apart.
    ``n`` counts runs with a verdict on the arm (an ``interrupted`` run was stopped from
    outside and says nothing about it); ``failures`` are those of ``n`` not ``stable``
    (``out_of_memory`` and ``error`` included). ``median`` and ``iqr`` (p75 - p25) are over the
    stable runs, ``None`` where no stable run has the number.
    """

    arm_name: str
    family_hash: str | None
    seeds: tuple[int | None, ...]
    runs: tuple[str, ...]
    n: int
    failures: int
    failure_rate: float | None
    failure_ci: tuple[float, float]
    median: dict[str, float | None]
    iqr: dict[str, float | None]
    verdicts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"], d["runs"], d["failure_ci"] = (
            list(self.seeds),
            list(self.runs),
            list(self.failure_ci),
        )
        return d


def arm_key(row: dict[str, Any]) -> tuple[str, str | None]:
    return row["arm_name"], row.get("family_hash")


def group_rows(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str | None], list[dict]]:
    """Rows by :func:`arm_key`, arms in order of first appearance, runs sorted by seed."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault(arm_key(row), []).append(row)
    for members in groups.values():
        members.sort(key=lambda r: (r["seed"] is None, r["seed"] or 0, r["run"]))
    return groups


def medians(
    rows: Sequence[dict[str, Any]], keys: Sequence[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Median and IQR of each of ``keys`` (default :func:`metric_keys` of ``rows``) over
    ``rows`` (``None`` where no row has a number)."""
    median: dict[str, float | None] = {}
    iqr: dict[str, float | None] = {}
    for key in metric_keys(rows) if keys is None else keys:
        values = [r.get(key) for r in rows]
        values = np.array([v for v in values if _numeric(v) and v is not None], dtype=float)
        if values.size:
            q25, q50, q75 = np.percentile(values, [25, 50, 75])
            median[key], iqr[key] = float(q50), float(q75 - q25)
        else:
            median[key] = iqr[key] = None
    return median, iqr


def summarise_arms(rows: Sequence[dict[str, Any]]) -> list[ArmSummary]:
    """One :class:`ArmSummary` per arm in ``rows`` (rows from :func:`metrics_row`)."""
    out = []
    for (name, family), members in group_rows(rows).items():
        decided = [r for r in members if r["verdict"] != VerdictKind.INTERRUPTED.value]
        stable = [r for r in decided if r["verdict"] == VerdictKind.STABLE.value]
        n, failures = len(decided), len(decided) - len(stable)
        median, iqr = medians(stable, metric_keys(members))
        verdicts: dict[str, int] = {}
        for r in members:
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        out.append(
            ArmSummary(
                arm_name=name,
                family_hash=family,
                seeds=tuple(r["seed"] for r in members),
                runs=tuple(r["run"] for r in members),
                n=n,
                failures=failures,
                failure_rate=failures / n if n else None,
                failure_ci=wilson_interval(failures, n),
                median=median,
                iqr=iqr,
                verdicts=verdicts,
            )
        )
    return out


def arm_rows(arm: ArmSummary, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``arm``'s runs, in its order."""
    by_run = {r["run"]: r for r in rows if arm_key(r) == (arm.arm_name, arm.family_hash)}
    return [by_run[run] for run in arm.runs if run in by_run]


def representative(arm: ArmSummary, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The numbers that stand for ``arm``: medians over its stable runs, or over all its runs
    when none was stable (one run: that run's numbers)."""
    members = arm_rows(arm, rows)
    if any(r["verdict"] == VerdictKind.STABLE.value for r in members):
        return dict(arm.median)
    return medians(members, list(arm.median) or None)[0]


# --- what tells arms apart ---------------------------------------------------------------------

#: Arm fields that are not part of a recipe: the name (the row's label), the seed (its own
#: column), the scale (shown with what it changed), the workload's code fingerprint and a sweep
#: point's family (a label too; the frontier section groups by it).
NOT_RECIPE = frozenset({"name", "seed", "scale", "workload_code", "sweep"})
#: Recipe fields in reading order (what it trains on, the model, the optimiser, the loss and
#: clipping, the length); other fields follow, sorted, the data spec's (``data.N``) last.
RECIPE_ORDER: tuple[str, ...] = (
    "workload",
    "architecture",
    "fno_blocks",
    "width",
    "modes",
    "min_resolution",
    "max_channels",
    "layerscale_init",
    "optimizer",
    "lr",
    "betas",
    "weight_decay",
    "scheduler",
    "warmup_epochs",
    "lr_step_epochs",
    "lr_gamma",
    "loss",
    "clip",
    "clip_value",
    "epochs",
    "batch_size",
    "grad_norm_every",
    "device",
)
#: Fields shown together: when one differs between arms, the other is shown beside it.
PAIRED: dict[str, str] = {"clip": "clip_value", "clip_value": "clip"}
#: The fields of the one-line common recipe (shown when equal for every arm).
KEY_FIELDS: tuple[str, ...] = (
    "workload",
    "architecture",
    "fno_blocks",
    "width",
    "optimizer",
    "lr",
    "scheduler",
    "loss",
    "clip",
    "clip_value",
    "epochs",
    "batch_size",
)


def recipe(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's arm fields as run, flat (the data spec as ``data.N``), without
    :data:`NOT_RECIPE`; ``workload`` from the row's workload block when the arm dict lacks it.
    An older record without an arm dict gives what it has (possibly nothing)."""
    arm = row.get("arm") if isinstance(row.get("arm"), Mapping) else {}
    out: dict[str, Any] = {}
    for key, value in arm.items():
        if key in NOT_RECIPE:
            continue
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    if out.get("workload") is None and row_workload(row).name:
        out["workload"] = row_workload(row).name
    return out


def _order(key: str) -> tuple[int, int, str]:
    if key in RECIPE_ORDER:
        return 0, RECIPE_ORDER.index(key), key
    return (2 if "." in key else 1), 0, key


_MISSING = object()


def differing_fields(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The recipe fields (:func:`recipe`) whose value is not the same for every row (a field
    one row lacks and another has differs), with its :data:`PAIRED` field, in
    :data:`RECIPE_ORDER`. Pass one row per arm: seeds of one arm share their recipe."""
    recipes = [recipe(r) for r in rows]
    keys = {k for r in recipes for k in r}
    differ = {k for k in keys if len({_hashable(r.get(k, _MISSING)) for r in recipes}) > 1}
    differ |= {PAIRED[k] for k in differ if k in PAIRED and PAIRED[k] in keys}
    return sorted(differ, key=_order)


def common_fields(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The :data:`KEY_FIELDS` every row has with one value (``clip_value`` left out when the
    clip is ``none``)."""
    recipes = [recipe(r) for r in rows]
    if not recipes:
        return {}
    out = {}
    for key in KEY_FIELDS:
        values = {_hashable(r.get(key, _MISSING)) for r in recipes}
        if len(values) == 1 and key in recipes[0]:
            out[key] = recipes[0][key]
    if out.get("clip") == "none":
        out.pop("clip_value", None)
    return out


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def field_value(value: Any) -> str:
    """A recipe value for a table: numbers by ``%g``, ``None`` as ``default`` (the
    architecture's or workload's), lists as ``(a, b)``, ``–`` for a field the arm lacks."""
    if value is _MISSING:
        return "–"
    if value is None:
        return "default"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(field_value(v) for v in value) + ")"
    return str(value)


def recipe_cells(row: Mapping[str, Any], fields: Sequence[str]) -> list[str]:
    """``row``'s values of ``fields`` as text (:func:`field_value`; no ``clip_value`` without a
    clip)."""
    own = recipe(row)
    return [
        "–"
        if k == "clip_value" and own.get("clip") == "none"
        else field_value(own.get(k, _MISSING))
        for k in fields
    ]


def recipe_summary(row: Mapping[str, Any], fields: Sequence[str]) -> str:
    """``fno_blocks 8, clip agc 0.01``: ``row``'s values of ``fields`` (``clip`` and
    ``clip_value`` as one: ``clip norm 1``, ``clip none``)."""
    values = dict(zip(fields, recipe_cells(row, fields), strict=True))
    parts = []
    for key, value in values.items():
        if key == "clip_value" and "clip" in values:
            continue
        if key == "clip" and "clip_value" in values and value != "none":
            value = f"{value} {values['clip_value']}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


# --- scales ------------------------------------------------------------------------------------


def scale_changes_of(row: Mapping[str, Any]) -> dict[str, list[Any]] | None:
    """``{field: [as written, as run]}``: what the row's ``--sk-scale`` changed; ``{}`` when
    nothing, ``None`` when the record does not say (written before it was recorded)."""
    changes = row.get("scale_changes")
    return dict(changes) if isinstance(changes, Mapping) else None


def scale_text(changes: Mapping[str, Sequence[Any]]) -> str:
    """``epochs 50 → 25, data.N 64 → 32`` (as written → as run)."""
    return ", ".join(
        f"`{k}` {field_value(v[0])} → {field_value(v[1])}"
        for k, v in sorted(changes.items(), key=lambda kv: _order(kv[0]))
    )


# --- which best val losses compare ---------------------------------------------------------------


def loss_basis(row: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(workload, loss)``: what a row's val loss measures. Two rows' best val losses compare
    only when their bases are equal (a ``None`` loss: not recorded, so not comparable with a
    recorded one)."""
    own = recipe(row)
    workload = own.get("workload")
    loss = own.get("loss")
    return (
        str(workload) if workload is not None else None,
        str(loss) if loss is not None else None,
    )


def basis_text(basis: tuple[str | None, str | None]) -> str:
    """``gridlines/mae``; ``?`` for what is not recorded."""
    return f"{basis[0] or '?'}/{basis[1] or '?'}"


def loss_groups(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str | None, str | None], list]:
    """The rows by :func:`loss_basis`, in order of first appearance; one group: their best val
    losses compare."""
    groups: dict[tuple[str | None, str | None], list] = {}
    for row in rows:
        groups.setdefault(loss_basis(row), []).append(row)
    return groups
