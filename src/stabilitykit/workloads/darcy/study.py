"""The arms of the Darcy stage (docs/darcy.md §4), at full scale: the FNO paper's recipe.

Every arm: FNO width 32, modes 12, 4 Fourier layers; s = 85, 1000 train / 100 test pairs;
Adam lr 1e-3, weight decay 1e-4, batch 20, 500 epochs with the lr halved every 100; relative
L2 loss. The scale option shrinks the data and the epochs.
"""

from __future__ import annotations

from stabilitykit.arm import Arm

#: The control: the paper's recipe with global-norm clipping at 1.0.
CONTROL = Arm(
    name="control",
    workload="darcy",
    architecture="fno",
    batch_size=20,
    lr=1e-3,
    weight_decay=1e-4,
    epochs=500,
    scheduler="step",
    lr_step_epochs=100,
    lr_gamma=0.5,
    loss="rel_l2",
    clip="norm",
    clip_value=1.0,
    seed=20260128,
)
#: No clipping and a ten-fold lr: the arm a stability study expects to suffer.
NO_CLIP_HIGH_LR = CONTROL.replace(name="no_clip_lr1e-2", clip="none", clip_value=None, lr=1e-2)
#: Adaptive gradient clipping per output unit (lambda 0.01) instead of the global norm.
AGC_UNIT = CONTROL.replace(name="agc_unit", clip="agc_unit", clip_value=0.01)
#: The control at twice the depth: 8 Fourier layers.
DEEP = CONTROL.replace(name="deep", fno_blocks=8)

STAGE_DARCY = (CONTROL, NO_CLIP_HIGH_LR, AGC_UNIT, DEEP)
