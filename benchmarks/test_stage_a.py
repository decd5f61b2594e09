"""Stage A: does clipping or LayerScale change the stability of the 4-block hybrid?

Arms (docs/gridlines.md §6): control (hybrid, clip norm 1.0), agc (AGC per tensor, lambda 0.01),
stable (stable_hybrid, LayerScale 1e-3, no clipping).
"""

import pytest

from stabilitykit.workloads.gridlines.study import STAGE_A


@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("arm", STAGE_A, ids=lambda arm: arm.name)
def test_stage_a(arm, run_arm):
    run_arm(arm)
