"""CI gating on stability regressions: arm runs held against committed baselines.

Example::

    from stabilitykit.gate import baseline_path, gate_arm, read_baseline

    baseline = read_baseline(baseline_path("benchmarks/baselines", "stage_a", "ci"))
    result = gate_arm(arm_result, baseline)  # the rules of the run's workload, from its record
    if not result.ok(require_baseline=True):  # strict=True: "not decided" fails too
        raise AssertionError(result.render())

Seed against seed where the run's numerics fingerprint matches the baseline seed's, else
against the spread of the baseline's seeds (docs/criteria.md, "The gate").
"""

from stabilitykit.gate.baseline import (
    Baseline,
    BaselineDiff,
    BaselineEntry,
    BaselineError,
    baseline_from_runs,
    baseline_path,
    read_baseline,
    update_baseline,
    write_baseline,
)
from stabilitykit.gate.compare import (
    Check,
    FailureRateCheck,
    GateReport,
    GateResult,
    GateStatus,
    check_arm,
    check_failure_rate,
    family_rate,
    gate_arm,
    gate_runs,
    same_seed,
    unused_entries,
)
from stabilitykit.gate.metrics import (
    DEFAULT_RULES,
    ArmRun,
    DeclaredMetric,
    MetricRule,
    Rules,
    WorkloadDecl,
    arm_run,
    numerics_of,
    rules_from_config,
    workload_of,
)
from stabilitykit.gate.power import power_markdown, power_table
from stabilitykit.gate.spread import judge_value, prediction_interval

__all__ = [
    "DEFAULT_RULES",
    "ArmRun",
    "Baseline",
    "BaselineDiff",
    "BaselineEntry",
    "BaselineError",
    "Check",
    "DeclaredMetric",
    "FailureRateCheck",
    "GateReport",
    "GateResult",
    "GateStatus",
    "MetricRule",
    "Rules",
    "WorkloadDecl",
    "arm_run",
    "baseline_from_runs",
    "baseline_path",
    "check_arm",
    "check_failure_rate",
    "family_rate",
    "gate_arm",
    "gate_runs",
    "judge_value",
    "numerics_of",
    "power_markdown",
    "power_table",
    "prediction_interval",
    "read_baseline",
    "rules_from_config",
    "same_seed",
    "unused_entries",
    "update_baseline",
    "workload_of",
    "write_baseline",
]
