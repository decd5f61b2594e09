"""The arms of the FNO stability study on grid lines (docs/gridlines.md §6), at full scale.

Every arm: N 64, gridsize 1, nphotons 1e9, MAE loss, Adam lr 1e-3, batch 16, 50 epochs,
seed 20260128 (the defaults of :class:`~stabilitykit.arm.Arm` and its data spec).
"""

from __future__ import annotations

from stabilitykit.arm import Arm

#: Stage A control: hybrid, 4 blocks, global-norm clip 1.0.
CONTROL = Arm(name="control", architecture="hybrid", fno_blocks=4, clip="norm", clip_value=1.0)
#: Stage A: AGC per tensor (as in the original study), lambda 0.01.
AGC = CONTROL.replace(name="agc", clip="agc", clip_value=0.01)
#: Stage A: stable_hybrid with LayerScale 1e-3 and no clipping (the study's v2).
STABLE = Arm(
    name="stable",
    architecture="stable_hybrid",
    fno_blocks=4,
    layerscale_init=1e-3,
    clip="none",
    clip_value=None,
)
#: Stage B: the control at depth 8, grad norm logged every step.
DEEP_CONTROL = CONTROL.replace(name="deep_control", fno_blocks=8, grad_norm_every=1)

STAGE_A = (CONTROL, AGC, STABLE)
STAGE_B = (DEEP_CONTROL,)
