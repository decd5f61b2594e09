"""Stability frontiers of the grid-lines study (docs/frontiers.md): up to which lr each arm
trains, and whether AGC or LayerScale moves that edge.

Families: the study's control, agc, stable (LayerScale, no clipping) and deep_control, each
swept over the lr from 1e-3 to 3.16e-2 at 2 values per decade (the ci recipe's 3e-3 lies
inside); each run of the same command adds one value per family inside its bracket (bisection)
and trains only the new points, until every bracket is within a factor of 1.25. A point past
the edge shows as xfailed with its verdict. Not selected by the CI's gate commands::

    pytest benchmarks/test_frontier_gridlines.py -m stage_frontier_gridlines --sk-scale proxy \
        --sk-seeds 3 -n 2
"""

from pathlib import Path

import pytest

from stabilitykit.frontier import refine
from stabilitykit.sweep import log_grid, point_ids, sweep
from stabilitykit.workloads.gridlines.study import AGC, CONTROL, DEEP_CONTROL, STABLE

STAGE = "stage_frontier_gridlines"
GRID = log_grid(1e-3, 3.2e-2, per_decade=2)
COARSE = [point for arm in (CONTROL, AGC, STABLE, DEEP_CONTROL) for point in sweep(arm, "lr", GRID)]


def pytest_generate_tests(metafunc):
    """The coarse grid and what the runs already in ``--sk-out`` add (one value a pass)."""
    if "point" in metafunc.fixturenames:
        config = metafunc.config
        stage_dir = Path(config.getoption("sk_out")) / STAGE
        points = refine(COARSE, stage_dir, scale=config.getoption("sk_scale"), per_pass=1)
        metafunc.parametrize("point", points, ids=point_ids(points))


@pytest.mark.stability
@pytest.mark.stage_frontier_gridlines
def test_frontier_gridlines(point, run_arm):
    run_arm(point, xfail_unstable=True)
