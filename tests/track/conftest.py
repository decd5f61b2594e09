"""A tiny Darcy arm (6 steps over 2 epochs, layer rows every 2 steps) and a way to run it."""

import pytest

from stabilitykit import Arm, run_arm
from stabilitykit.arm import apply_scale

#: 40 training samples in batches of 16: 3 steps per epoch.
ARM = apply_scale(Arm(workload="darcy", layer_norm_every=2), "smoke").replace(epochs=2)
STEPS = 6


@pytest.fixture
def run(tmp_path, tmp_path_factory):
    """``run(arm=ARM, **run_arm kwargs)`` in stage ``stage_t``, session ``s1``."""
    cache = tmp_path_factory.getbasetemp() / "data-cache"

    def go(arm=ARM, **kw):
        kw.setdefault("tags", {"stage": "stage_t", "session": "s1"})
        return run_arm(
            arm, out_dir=tmp_path / "out", cache_dir=cache, progress=False, threads=1, **kw
        )

    return go
