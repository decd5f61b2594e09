"""The session's stage reports through the pytest plugin (pytester, smoke scale): a malformed
record and a partial rerun."""

import json

import pytest

pytest_plugins = ["pytester"]

TWO_ARMS = """
import pytest
from stabilitykit.judge.criteria import Finite
from stabilitykit.workloads.gridlines.study import CONTROL

ARMS = [CONTROL, CONTROL.replace(name="agc", clip="agc", clip_value=0.01)]

@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("arm", ARMS, ids=lambda a: a.name)
def test_stage(arm, run_arm):
    run_arm(arm, criteria=(Finite(),))
"""


def test_a_malformed_record_and_a_partial_rerun(pytester, sk_pytest):
    pytester.makepyfile(TWO_ARMS)
    sk_pytest().assert_outcomes(passed=2)
    stage = pytester.path / "reports" / "stage_a"
    first = json.loads((stage / "stage_a_metrics.json").read_text())["rows"]
    agc_run = next(r["run"] for r in first if r["arm_name"] == "agc")

    bad = stage / "runs" / "bad-20260101T000000000000Z-abcdef"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"schema": "stabilitykit.run", "version": 1}))
    (bad / "stats.json").write_text(
        json.dumps({"schema": "stabilitykit.run", "version": 1, "stats": 3})
    )
    result = sk_pytest("-k", "control")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*stabilitykit stage summary*", "*control*", "*agc*"])
    rows = json.loads((stage / "stage_a_metrics.json").read_text())["rows"]
    assert sorted(r["arm_name"] for r in rows) == ["agc", "control"]
    assert next(r["run"] for r in rows if r["arm_name"] == "agc") == agc_run  # the earlier one
    summary = (stage / "summary.md").read_text()
    assert f"left out {bad.name}" in summary and "stats.json: stats: got int 3" in summary
    assert f"{agc_run}: not run in this session" in summary
