"""Stage B: does instability emerge at depth 8?

The deep control (the Stage A control at fno_blocks 8, grad norm every step) must show no NaN, a
bounded grad norm, and val loss and amp SSIM no worse than Stage A's control (docs/gridlines.md §6).
Stage A's control comes from its last record at this scale, or is run now.
"""

import pytest

from stabilitykit.judge.criteria import DEFAULT_CRITERIA, NoWorseThan
from stabilitykit.workloads.gridlines.study import CONTROL, STAGE_B


@pytest.mark.stability
@pytest.mark.stage_b
@pytest.mark.parametrize("arm", STAGE_B, ids=lambda arm: arm.name)
def test_stage_b(arm, run_arm, stage_result):
    control = stage_result("stage_a", CONTROL)
    reference = {"best_val_loss": control.stats["best_val_loss"], **control.metrics}
    run_arm(arm, criteria=(*DEFAULT_CRITERIA, NoWorseThan(reference, "stage_a/control")))
