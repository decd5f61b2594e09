"""The pytest plugin, exercised with pytester at smoke scale (``sk_pytest``: tests/conftest.py)."""

import json

import pytest

pytest_plugins = ["pytester"]

HEADER = """
import pytest
from stabilitykit.judge.criteria import Finite, GradNormBounded
from stabilitykit.workloads.gridlines.study import CONTROL

LENIENT = (Finite(),)
"""

TWO_ARMS = """
@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("arm", [CONTROL, CONTROL.replace(name="agc", clip="agc", clip_value=0.01)],
                         ids=lambda a: a.name)
def test_stage(arm, run_arm, sk_options):
    result = run_arm(arm, criteria=LENIENT)
    assert result.arm.scale == "smoke" and sk_options.scale == "smoke"
    assert result.run_dir.parent.parent.name == "stage_a"
"""


def test_options_are_in_the_help(pytester):
    result = pytester.runpytest_inprocess("--help")
    for option in (
        "--sk-scale",
        "--sk-out",
        "--sk-device",
        "--sk-seeds",
        "--sk-rerun",
        "--sk-shard",
        "--sk-baseline",
        "--sk-require-baseline",
        "--sk-accept",
        "--sk-resume",
        "--sk-keep-checkpoints",
    ):
        result.stdout.fnmatch_lines([f"*{option}*"])


def test_markers_are_registered_for_strict_markers(pytester):
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["*stability:*", "*stage_a:*", "*stage_b:*"])


def test_bad_option_value_is_a_usage_error(pytester, sk_pytest):
    pytester.makepyfile(
        HEADER + "\n@pytest.mark.stability\n@pytest.mark.stage_a\n"
        "def test_a(run_arm):\n    run_arm(CONTROL, criteria=LENIENT)\n"
    )
    result = sk_pytest("--sk-seeds", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sk-seeds: got 0; allowed: an int >= 1*"])


def test_a_bad_fast_path_option_is_a_usage_error_before_any_test(pytester, sk_pytest):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = sk_pytest("--sk-fast", "warp")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sk-fast: got 'warp'; allowed: *'fused', 'tf32'*"])


def test_a_stage_runs_records_and_reports(pytester, sk_pytest):
    pytester.makepyfile(HEADER + TWO_ARMS)
    result = sk_pytest("--strict-markers", plots=True)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*stabilitykit stage summary*", "*Stage A*", "*control*", "*agc*"])
    stage = pytester.path / "reports" / "stage_a"
    metrics = json.loads((stage / "stage_a_metrics.json").read_text())
    assert sorted(r["arm_name"] for r in metrics["rows"]) == ["agc", "control"]
    assert (stage / "summary.md").exists()
    assert {p.name for p in (stage / "plots").iterdir()} >= {"losses.png", "grad_norms.png"}


def test_a_failing_criterion_shows_its_reason(pytester, sk_pytest):
    pytester.makepyfile(
        HEADER
        + """
@pytest.mark.stability
@pytest.mark.stage_b
def test_tight(run_arm):
    run_arm(CONTROL, criteria=(GradNormBounded(limit=1e-6),))
"""
    )
    result = sk_pytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*control-hybrid-b4-seed20260128: spiking:*",
            "*grad_norm_bounded] pre-clip grad norm*",
            "*record: *stage_b*runs*",
        ]
    )


def test_missing_stage_marker_is_explained(pytester, sk_pytest):
    pytester.makepyfile(HEADER + "\ndef test_x(run_arm):\n    run_arm(CONTROL)\n")
    result = sk_pytest()
    result.stdout.fnmatch_lines(["*needs a stage marker*"])


def test_seeds_replicate_each_arm(pytester, sk_pytest):
    pytester.makepyfile(
        HEADER
        + """
@pytest.mark.stability
@pytest.mark.stage_a
def test_seeded(run_arm, sk_replicate):
    assert run_arm(CONTROL, criteria=LENIENT).arm.seed == CONTROL.seed + sk_replicate
"""
    )
    result = sk_pytest("--sk-seeds", "2", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_seeded?r0?*PASSED*", "*test_seeded?r1?*PASSED*"])
    rows = json.loads((pytester.path / "reports/stage_a/stage_a_metrics.json").read_text())["rows"]
    assert sorted(r["seed"] for r in rows) == [CONTROL_SEED, CONTROL_SEED + 1]
    # sk_pytest passes --sk-no-plots: the summary, and no plot
    stage = pytester.path / "reports/stage_a"
    assert (stage / "summary.md").exists() and not (stage / "plots").exists()
    assert ".png" not in (stage / "summary.md").read_text()


CONTROL_SEED = 20260128


def test_shards_split_the_benchmarks(pytester, sk_pytest):
    pytester.makepyfile(
        HEADER
        + """
@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("i", range(5))
def test_many(i):
    pass

def test_plain():
    pass
"""
    )
    first = sk_pytest("--sk-shard", "1/2")
    second = sk_pytest("--sk-shard", "2/2")
    first.assert_outcomes(passed=4)  # 3 stability + the plain test
    second.assert_outcomes(passed=3)
    assert sk_pytest("--sk-shard", "3/2").ret == pytest.ExitCode.USAGE_ERROR


GATED = (
    HEADER
    + """
import os
import stabilitykit.run as run_module

@pytest.fixture(autouse=True)
def degrade(monkeypatch):  # a code regression: the optimiser ignores most of the lr
    if os.environ.get("SK_TEST_DEGRADE"):
        build = run_module.build_optimizer
        monkeypatch.setattr(
            run_module,
            "build_optimizer",
            lambda name, params, lr, *a, **kw: build(name, params, lr / 100, *a, **kw),
        )

ARMS = [CONTROL]
if os.environ.get("SK_TEST_NEW"):
    ARMS.append(CONTROL.replace(name="newcomer", lr=2e-3))

@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("arm", ARMS, ids=lambda a: a.name)
def test_gated(arm, run_arm):
    run_arm(arm, criteria=LENIENT)
"""
)


def test_baseline_accept_then_gate(pytester, sk_pytest, monkeypatch):
    pytester.makepyfile(GATED)
    gate = ("--sk-baseline", "baselines")
    accepted = sk_pytest(*gate, "--sk-accept")
    accepted.assert_outcomes(passed=1)
    accepted.stdout.fnmatch_lines(
        ["*stage_a: accepted 1 run(s) into baselines/smoke/stage_a.json*"]
    )
    assert (pytester.path / "baselines/smoke/stage_a.json").exists()

    unchanged = sk_pytest(*gate, "--sk-require-baseline")
    unchanged.assert_outcomes(passed=1)
    unchanged.stdout.fnmatch_lines(["*gate passed against*"])

    monkeypatch.setenv("SK_TEST_DEGRADE", "1")
    degraded = sk_pytest(*gate, "--sk-require-baseline")
    degraded.assert_outcomes(failed=1)
    degraded.stdout.fnmatch_lines(
        ["*stability gate against baselines/smoke/stage_a.json*", "*best_val_loss*worse*"]
    )
    monkeypatch.delenv("SK_TEST_DEGRADE")

    monkeypatch.setenv("SK_TEST_NEW", "1")
    lenient = sk_pytest(*gate)
    lenient.assert_outcomes(passed=2, warnings=1)
    strict = sk_pytest(*gate, "--sk-require-baseline")
    strict.assert_outcomes(passed=1, failed=1)
    strict.stdout.fnmatch_lines(["*newcomer*missing*"])


def test_corrupt_baseline_fails_with_the_file_name(pytester, sk_pytest):
    pytester.makepyfile(GATED)
    (pytester.path / "baselines/smoke").mkdir(parents=True)
    (pytester.path / "baselines/smoke/stage_a.json").write_text("{not json")
    result = sk_pytest("--sk-baseline", "baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*baseline unusable*stage_a.json*"])


XDIST = (
    HEADER
    + """
import os
import stabilitykit.workloads.gridlines.workload as run_module

ARMS = [CONTROL, CONTROL.replace(name="agc", clip="agc", clip_value=0.01)]
if os.environ.get("SK_TEST_CRASH"):
    ARMS.append(CONTROL.replace(name="crash"))

@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("arm", ARMS, ids=lambda a: a.name)
def test_arm(arm, run_arm, monkeypatch):
    if arm.name == "crash":
        mae = run_module.get_loss("mae")
        calls = []
        def dying(pred, x):
            calls.append(1)
            if len(calls) == 3:
                os._exit(1)  # the worker dies mid-run, leaving a half-written record
            return mae(pred, x)
        monkeypatch.setattr(run_module, "get_loss", lambda name: dying)
    run_arm(arm, criteria=LENIENT)
"""
)


def test_xdist_gives_the_serial_metrics_one_summary_and_keeps_a_crashed_run(
    pytester, sk_pytest, monkeypatch
):
    pytester.makepyfile(XDIST)

    def rows(out):
        path = pytester.path / out / "stage_a/stage_a_metrics.json"
        return {r["arm_name"]: r for r in json.loads(path.read_text())["rows"]}

    sk_pytest("--sk-out", "serial").assert_outcomes(passed=2)
    monkeypatch.setenv("SK_TEST_CRASH", "1")  # a third arm, whose worker dies
    result = sk_pytest("-n", "2", "--sk-out", "parallel")
    result.assert_outcomes(passed=2, failed=1)
    assert result.stdout.str().count("stabilitykit stage summary") == 1
    serial, parallel = rows("serial"), rows("parallel")
    verdicts = {name: r["verdict"] for name, r in parallel.items()}
    assert verdicts == {"control": "stable", "agc": "stable", "crash": "interrupted"}
    keep = ("best_val_loss", "amp_ssim", "amp_mae", "grad_norm_preclip_max", "verdict")
    same = {name: [serial[name][k] for k in keep] for name in serial}
    assert same == {name: [parallel[name][k] for k in keep] for name in serial}
    assert len(same) == 2


def test_accept_needs_a_baseline_folder(pytester, sk_pytest):
    pytester.makepyfile(GATED)
    result = sk_pytest("--sk-accept")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sk-accept needs --sk-baseline DIR*"])


def _readme_workload_example() -> str:
    """The README's own-workload example, verbatim."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Your own workload") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_the_readme_own_workload_runs_the_whole_workflow(pytester, sk_pytest):
    pytester.makepyfile(test_smoothing_stage=_readme_workload_example())
    # xdist's controller does not import the test file; the workers and the serial session,
    # which do (it registers a workload class), are processes of their own
    accepted = sk_pytest("-n", "2", "--sk-seeds", "2", "--sk-baseline", "bl", "--sk-accept")
    accepted.assert_outcomes(passed=4)  # xdist workers rebuilt the workload from the test file
    rows = json.loads((pytester.path / "reports/stage_c/stage_c_metrics.json").read_text())["rows"]
    assert {r["arm_name"] for r in rows} == {"adam", "sgd"}
    assert all(r["workload"]["name"] == "smoothing" for r in rows)
    assert (pytester.path / "bl/smoke/stage_c.json").exists()
    # serially, gated against what the xdist session accepted
    gated = sk_pytest(
        "-m",
        "stage_c",
        "--sk-seeds",
        "2",
        "--sk-baseline",
        "bl",
        "--sk-require-baseline",
        subprocess=True,
    )
    gated.assert_outcomes(passed=4)
    assert "not comparable" not in gated.stdout.str()


PLAIN = "def test_plain():\n    pass\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sk-baseline", "missing"], "--sk-baseline: got 'missing', which does not exist*"),
        (["--sk-baseline", "afile"], "--sk-baseline: got 'afile', which is a file*"),
        (
            ["--sk-baseline", "bl", "--sk-accept"],
            "--sk-accept: cannot accept into bl*stage_a.json*",
        ),
        (["--sk-out", "afile"], "--sk-out: got 'afile', which is a file*"),
        (["--sk-cache", "afile/data"], "--sk-cache: got 'afile/data', under 'afile'*"),
        (["--sk-threads", "0"], "--sk-threads: got 0; allowed: an int >= 1*"),
    ],
)
def test_bad_options_are_usage_errors_even_with_no_benchmark_selected(pytester, args, message):
    pytester.makepyfile(PLAIN)
    (pytester.path / "afile").write_text("")
    (pytester.path / "bl/smoke").mkdir(parents=True)
    (pytester.path / "bl/smoke/stage_a.json").write_text("{not json")
    result = pytester.runpytest_inprocess("--sk-scale", "smoke", "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_invalid_stage_markers_fail_their_items_and_other_stages_still_report(pytester, sk_pytest):
    pytester.makepyfile(
        HEADER
        + """
STAGES = [pytest.param(m, marks=getattr(pytest.mark, m)) for m in ("stage_", "stage_x-y")]
STAGES.append(pytest.param("stage_a", marks=pytest.mark.stage_a))

@pytest.mark.stability
@pytest.mark.parametrize("stage", STAGES)
def test_staged(stage, run_arm):
    run_arm(CONTROL, criteria=LENIENT)
"""
    )
    result = sk_pytest()
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_staged?stage_?: invalid stage marker @pytest.mark.stage_ (stage: got*",
            "*test_staged?stage_x-y?: invalid stage marker @pytest.mark.stage_x-y*",
        ]
    )
    assert "INTERNALERROR" not in result.stdout.str()
    rows = json.loads((pytester.path / "reports/stage_a/stage_a_metrics.json").read_text())["rows"]
    assert [r["arm_name"] for r in rows] == ["control"]


def test_two_stage_markers_or_an_overlong_one_fail_the_item_by_name(pytester, sk_pytest):
    long = "stage_" + "x" * 294
    pytester.makepyfile(
        HEADER
        + f"""
@pytest.mark.stability
@pytest.mark.stage_c
@pytest.mark.stage_d
def test_both(run_arm):
    run_arm(CONTROL, criteria=LENIENT)

@pytest.mark.stability
@pytest.mark.{long}
def test_long(run_arm):
    run_arm(CONTROL, criteria=LENIENT)
"""
    )
    result = sk_pytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_both: one stage marker per benchmark, got @pytest.mark.stage_d and "
            "@pytest.mark.stage_c; keep one*",
            f"*test_long: invalid stage marker @pytest.mark.{long} (stage: got*(300 characters)*"
            "at most 64 characters*",
        ]
    )
    out = result.stdout.str()
    assert "File name too long" not in out and "INTERNALERROR" not in out
    assert not (pytester.path / "reports").exists()  # no report under either stage


def test_benchmark_json_has_grad_norms_and_under_xdist_a_warning_says_where_timings_are(
    pytester, sk_pytest
):
    pytester.makepyfile(
        HEADER + "\n@pytest.mark.stability\n@pytest.mark.stage_a\n"
        "def test_a(run_arm):\n    run_arm(CONTROL, criteria=LENIENT)\n"
    )
    sk_pytest("--benchmark-json", "bench.json").assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "bench.json").read_text())["benchmarks"]
    info = bench["extra_info"]
    for key in ("grad_norm_preclip_median", "grad_norm_preclip_p99", "grad_norm_preclip_max"):
        assert info[key] > 0
    assert 0 < info["grad_norm_postclip_max"] <= 1.0 + 1e-4  # clip norm 1.0
    assert info["train_seconds"] > 0 and info["verdict"] == "stable"

    pytester.makepyfile(test_plain=PLAIN)  # the warning comes before any training
    parallel = sk_pytest("-n", "2", "--benchmark-json", "bench.json", "test_plain.py")
    parallel.assert_outcomes(passed=1, warnings=1)
    text = parallel.stdout.str()
    assert text.count("no benchmark JSON is written under xdist") == 1
    assert "stats.json: train_seconds" in text and "<stage>_metrics.json" in text


EXPECT = """
import pytest
from stabilitykit.workloads.gridlines.study import CONTROL

DIVERGES = CONTROL.replace(name="hot", optimizer="sgd", lr=1e12, clip="none", clip_value=None)


@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("arm", [DIVERGES, CONTROL], ids=lambda a: a.name)
def test_meant_to_diverge(arm, run_arm):
    run_arm(arm, expect="diverged")
"""


def test_an_arm_meant_to_fail_passes_when_it_does_and_fails_when_it_survives(pytester, sk_pytest):
    pytester.makepyfile(EXPECT)
    result = sk_pytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*control*expected verdict 'diverged', got *"])
    runs = list((pytester.path / "reports/stage_a/runs").iterdir())
    assert {json.loads((r / "config.json").read_text())["tags"]["expect"] for r in runs} == {
        "diverged"
    }


def test_an_unknown_expected_verdict_is_refused(pytester, sk_pytest):
    pytester.makepyfile(EXPECT.replace('expect="diverged"', 'expect="exploded"'))
    result = sk_pytest()
    result.stdout.fnmatch_lines(["*expect: got 'exploded'; allowed: None or one of*"])


def test_a_failure_the_baseline_already_holds_is_a_known_result_not_a_regression(
    pytester, sk_pytest
):
    pytester.makepyfile(EXPECT.replace('run_arm(arm, expect="diverged")', "run_arm(arm)"))
    accepted = sk_pytest("--sk-baseline", "bl", "--sk-accept")
    # at smoke scale the hot arm diverges and the control learns nothing (collapsed)
    accepted.assert_outcomes(failed=2)
    gated = sk_pytest("--sk-baseline", "bl", "--sk-require-baseline", "-rx")
    gated.assert_outcomes(xfailed=2)
    gated.stdout.fnmatch_lines(["*hot*diverged, as in its baseline*"])
    # a verdict the baseline does not hold is still a failure
    other = pytester.path / "bl" / "smoke" / "stage_a.json"
    other.write_text(other.read_text().replace('"collapsed"', '"stable"'))
    regressed = sk_pytest("--sk-baseline", "bl", "--sk-require-baseline")
    regressed.assert_outcomes(xfailed=1, failed=1)


ONE_ARM = """
@pytest.mark.stability
@pytest.mark.stage_a
def test_control(run_arm):
    run_arm(CONTROL, criteria=LENIENT)
"""


def test_resume_continues_a_killed_run_in_its_folder(pytester, sk_pytest):
    pytester.makepyfile(HEADER + ONE_ARM)
    sk_pytest("--sk-keep-checkpoints").assert_outcomes(passed=1)
    runs = pytester.path / "reports" / "stage_a" / "runs"
    (folder,) = runs.iterdir()
    assert sorted(p.name for p in (folder / "checkpoints").iterdir())[-1] == "epoch-0002.pt"
    first = json.loads((folder / "stats.json").read_text())
    (folder / "stats.json").unlink()  # as a kill after the last epoch's checkpoint leaves it
    sk_pytest("--sk-resume").assert_outcomes(passed=1)
    assert list(runs.iterdir()) == [folder]  # no new run folder
    again = json.loads((folder / "stats.json").read_text())
    assert again["verdict"] == first["verdict"]
    assert again["stats"]["best_val_loss"] == first["stats"]["best_val_loss"]
    (entry,) = again["stats"]["resumes"]
    assert (entry["from_epoch"], entry["steps_replayed"]) == (2, 0)
    assert not (folder / "checkpoints").exists()  # finished, not asked to keep them
