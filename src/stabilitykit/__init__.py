"""stabilitykit: training-stability studies of neural operators as pytest benchmarks.

The names a user needs are here (imported on first use, so that ``import stabilitykit`` stays
cheap for a pytest session that trains nothing)::

    from stabilitykit import Arm, run_arm, apply_scale, Workload, MetricSpec
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.4.0"

_EXPORTS = {
    "Arm": "stabilitykit.arm",
    "apply_scale": "stabilitykit.arm",
    "ArmResult": "stabilitykit.run",
    "run_arm": "stabilitykit.run",
    "Workload": "stabilitykit.workload",
    "MetricSpec": "stabilitykit.workload",
    "Mitigation": "stabilitykit.workload",
    "Evaluation": "stabilitykit.workload",
    "Tensors": "stabilitykit.workload",
    "Scale": "stabilitykit.workload",
    "NoSpec": "stabilitykit.workload",
    "WorkloadError": "stabilitykit.workload",
    "register_workload": "stabilitykit.workload",
    "get_workload": "stabilitykit.workload",
    "available_workloads": "stabilitykit.workload",
    "SupervisedWorkload": "stabilitykit.workloads.supervised",
    "Verdict": "stabilitykit.judge.verdict",
    "VerdictKind": "stabilitykit.judge.verdict",
    "DEFAULT_CRITERIA": "stabilitykit.judge.criteria",
    "with_criteria": "stabilitykit.judge.criteria",
    "NoWorseThan": "stabilitykit.judge.criteria",
    "GradNormBounded": "stabilitykit.judge.criteria",
    "Spikes": "stabilitykit.judge.criteria",
    "replay": "stabilitykit.replay",
    "MetricRule": "stabilitykit.gate.metrics",
    "DEFAULT_RULES": "stabilitykit.gate.metrics",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stabilitykit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
