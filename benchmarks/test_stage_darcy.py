"""Stage Darcy: the FNO paper's Darcy flow benchmark under four training recipes.

Arms (docs/darcy.md §4): the control (the paper's recipe, clip norm 1.0), no clipping with a
ten-fold lr, AGC per unit, and the control at twice the depth. Each must stay finite, learn
clearly past the mean-solution floor, and not collapse.
"""

import pytest

from stabilitykit.workloads.darcy.study import STAGE_DARCY


@pytest.mark.stability
@pytest.mark.stage_darcy
@pytest.mark.parametrize("arm", STAGE_DARCY, ids=lambda arm: arm.name)
def test_stage_darcy(arm, run_arm):
    result = run_arm(arm)
    assert result.metrics["rel_l2"] < 0.5 * result.metrics["rel_l2_floor"]
