"""Collate run records into rows (one per arm and seed) and per-arm summaries over seeds.

A row holds the numbers a report needs from one :class:`RunRecord`, finite or ``None``; a
half-written run still gives a row (its verdict ``interrupted``, its numbers from whatever it
logged). Rows of one arm over several seeds are summarised by :func:`summarise_arms`: failure rate
with a Wilson interval, median and IQR over the seeds that stayed stable.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.record.run_record import RunRecord

METRIC_COLUMNS: tuple[str, ...] = (
    "best_val_loss",
    "final_val_loss",
    "amp_ssim",
    "phase_ssim",
    "amp_mae",
    "phase_mae",
    "amp_psnr",
    "amp_frc50",
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

#: (header, row key) of the columns every stage table shows: the summary and the terminal.
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("best val loss", "best_val_loss"),
    ("amp SSIM", "amp_ssim"),
    ("phase SSIM", "phase_ssim"),
    ("amp MAE", "amp_mae"),
    ("grad norm median", "grad_norm_preclip_median"),
    ("p99", "grad_norm_preclip_p99"),
    ("max", "grad_norm_preclip_max"),
)

# Further numbers the narrative rules read (evidence and the arm's recipe).
DETAIL_COLUMNS: tuple[str, ...] = (
    "initial_val_loss",
    "best_val_epoch",
    "epochs_completed",
    "steps",
    "nonfinite_step",
    "grad_norm_preclip_max_step",
    "amp_ssim_floor",
    "pred_amp_std",
    "gt_amp_std",
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
_METRICS_KEYS = frozenset(
    {"amp_ssim", "phase_ssim", "amp_mae", "phase_mae", "amp_psnr", "amp_frc50"}
    | {"amp_ssim_floor", "pred_amp_std", "gt_amp_std"}
)
# Left out of the family hash (as in ``Arm.family_hash``): equal for the seeds of one arm.
_NOT_FAMILY = frozenset({"name", "scale", "seed"})


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
    family = {k: v for k, v in arm.items() if k not in _NOT_FAMILY}
    canonical = json.dumps(family, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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
    """One row for ``record``: who it is, its verdict, :data:`METRIC_COLUMNS`, the
    :data:`DETAIL_COLUMNS` and :data:`ARM_COLUMNS`; every number finite or ``None``."""
    config, arm = record.config, record.arm if isinstance(record.arm, dict) else {}
    stats = _logged_stats(record)
    if stats.get("parameters") is None:
        stats["parameters"] = config.get("parameters")
    seed = arm.get("seed", (config.get("seeds") or {}).get("model_init"))
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
        "phase_vacuous": record.metrics.get("phase_vacuous"),
    }
    for key in (*METRIC_COLUMNS, *DETAIL_COLUMNS):
        source = record.metrics if key in _METRICS_KEYS else stats
        row[key] = finite(source.get(key))
    for key in ARM_COLUMNS:
        value = arm.get(key)
        row[key] = value if isinstance(value, str) else finite(value)
    return row


def wilson_interval(failures: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``failures / n`` (Wilson 1927).

    ``z = 1.96`` gives 95 %. With ``n = 0`` nothing is known: ``(0.0, 1.0)``.
    """
    if n < 0 or not 0 <= failures <= n:
        raise ValueError(f"wilson_interval: expected 0 <= failures <= n, got {failures} and {n}")
    if n == 0:
        return 0.0, 1.0
    p = failures / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    low = 0.0 if failures == 0 else max(0.0, centre - half)
    high = 1.0 if failures == n else min(1.0, centre + half)
    return low, high


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


def medians(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Median and IQR of each :data:`METRIC_COLUMNS` entry over ``rows`` (``None`` if absent)."""
    median: dict[str, float | None] = {}
    iqr: dict[str, float | None] = {}
    for key in METRIC_COLUMNS:
        values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
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
        median, iqr = medians(stable)
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
    if any(r["verdict"] == VerdictKind.STABLE.value for r in arm_rows(arm, rows)):
        return dict(arm.median)
    return medians(arm_rows(arm, rows))[0]
