"""A frontier under ``-n 2`` (a pytester subprocess, tiny arms) equals the serial one."""

import json

from stabilitykit.frontier import frontiers
from stabilitykit.report.collate import metrics_row
from stabilitykit.stage import StudyOptions, run_in_stage
from stabilitykit.sweep import sweep
from stabilitykit.testing.linear import CRITERIA, GD

pytest_plugins = ["pytester"]

POINTS = sweep(GD.replace(epochs=8), "lr", [0.05, 0.1, 0.2, 0.4])
SWEEP = """
import pytest
from stabilitykit.sweep import point_ids, sweep
from stabilitykit.testing.linear import CRITERIA, GD

POINTS = sweep(GD.replace(epochs=8), "lr", [0.05, 0.1, 0.2, 0.4])


@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("arm", POINTS, ids=point_ids(POINTS))
def test_frontier(arm, run_arm):
    run_arm(arm, criteria=CRITERIA, xfail_unstable=True)  # past the edge: xfailed
"""


def _comparable(items):
    """Frontier dicts as JSON, without the run folder names (they carry the time)."""
    items = json.loads(json.dumps(items))
    for item in items:
        for point in item["points"]:
            point.pop("runs")
    return items


def test_a_frontier_under_xdist_equals_the_serial_one(pytester, tmp_path):
    serial_options = StudyOptions(scale="none", out=tmp_path / "serial", cache_dir=tmp_path)
    results = [run_in_stage(p, "stage_a", serial_options, criteria=CRITERIA) for p in POINTS]
    serial = [f.to_dict() for f in frontiers([metrics_row(r.record) for r in results])]
    pytester.makepyfile(SWEEP)
    argv = ["--sk-scale", "none", "--sk-cache", str(tmp_path), "-p", "no:cacheprovider"]
    result = pytester.runpytest_subprocess(*argv, "-p", "no:benchmark", "-n", "2")
    result.assert_outcomes(passed=2, xfailed=2)
    payload = json.loads((pytester.path / "reports/stage_a/stage_a_metrics.json").read_text())
    assert _comparable(payload["frontiers"]) == _comparable(serial)
    (gd,) = serial
    assert gd["boundary"]["bracket"] == (0.1, 0.2)
    assert [p["failures"] for p in gd["points"]] == [0, 0, 1, 1]
