"""CI gating on stability regressions: arm runs held against committed baselines.

Example::

    from stabilitykit.gate import baseline_path, gate_arm, read_baseline

    baseline = read_baseline(baseline_path("benchmarks/baselines", "stage_a", "ci"))
    result = gate_arm(arm_result, baseline)  # the rules of the run's workload, from its record
    if not result.ok(require_baseline=True):
        raise AssertionError(result.render())
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
    rules_from_config,
    workload_of,
)

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
    "read_baseline",
    "rules_from_config",
    "unused_entries",
    "update_baseline",
    "workload_of",
    "write_baseline",
]
