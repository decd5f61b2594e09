"""Stability frontiers of the Darcy stage's arms (docs/frontiers.md): up to which lr the
control, AGC per unit and the deeper FNO train.

Each family is swept over the lr from 1e-3 to 1e-1 at 2 values per decade (the paper's 1e-3
at the bottom); each run of the same command adds one value per family inside its bracket
(bisection) and trains only the new points, until every bracket is within a factor of 1.25.
A point past the edge shows as xfailed with its verdict. Not selected by ``-m stage_darcy``::

    pytest benchmarks/test_frontier_darcy.py -m stage_frontier_darcy --sk-scale proxy \
        --sk-seeds 3 -n 2
"""

from pathlib import Path

import pytest

from stabilitykit.frontier import refine
from stabilitykit.sweep import log_grid, point_ids, sweep
from stabilitykit.workloads.darcy.study import AGC_UNIT, CONTROL, DEEP

STAGE = "stage_frontier_darcy"
GRID = log_grid(1e-3, 1e-1, per_decade=2)
COARSE = [point for arm in (CONTROL, AGC_UNIT, DEEP) for point in sweep(arm, "lr", GRID)]


def pytest_generate_tests(metafunc):
    """The coarse grid and what the runs already in ``--sk-out`` add (one value a pass)."""
    if "point" in metafunc.fixturenames:
        config = metafunc.config
        stage_dir = Path(config.getoption("sk_out")) / STAGE
        points = refine(COARSE, stage_dir, scale=config.getoption("sk_scale"), per_pass=1)
        metafunc.parametrize("point", points, ids=point_ids(points))


@pytest.mark.stability
@pytest.mark.stage_frontier_darcy
def test_frontier_darcy(point, run_arm):
    run_arm(point, xfail_unstable=True)
