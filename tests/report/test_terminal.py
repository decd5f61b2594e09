from rich.console import Console

from stabilitykit.judge.verdict import Evidence
from stabilitykit.report.summary import build_stage_report
from stabilitykit.report.terminal import print_stage_report, verdict_text


def render(report) -> str:
    console = Console(record=True, width=200, color_system=None)
    print_stage_report(report, console)
    return console.export_text()


def test_prints_arms_verdicts_references_and_the_rules_outcome(make_run, tmp_path):
    control = make_run("control", root=tmp_path / "a")
    records = [
        make_run(
            "deep_control",
            verdict="diverged",
            arm={"fno_blocks": 8},
            evidence=(Evidence("finite", "loss became non-finite", step=312),),
        ),
        make_run("agc", finish=False),
    ]
    text = render(build_stage_report("stage_b", records, {"stage_a/control": control}))
    assert "Stage B · scale ci" in text
    for expected in ("deep_control", "diverged", "agc", "interrupted", "stage_a/control (ref)"):
        assert expected in text
    assert "[finite] loss became non-finite (at step 312)" in text  # evidence is not markup
    assert "Instability emerged in 1 of 2 arms" in text and "AGC" in text
    assert "failure rate" not in text  # one seed per arm: no rate column
    assert "amp SSIM ↑" in text and "0.925 (floor 0.277)" in text  # declared metric, its floor


def test_a_darcy_arm_shows_its_metrics_and_an_old_record_the_engines(make_run):
    records = [make_run("darcy", workload="darcy"), make_run("old", workload=None)]
    text = render(build_stage_report("stage_a", records))
    assert "rel L2 ↓" in text and "0.12 (floor 0.97)" in text and "amp SSIM" not in text
    old_line = next(line for line in text.splitlines() if "│ old" in line)
    assert "0.925" not in old_line  # undeclared: not in a metric column


def test_failure_rate_with_interval_over_seeds(make_run):
    records = [make_run("control", seed=s) for s in (1, 2, 3, 4)]
    records.append(make_run("control", seed=5, verdict="spiking"))
    text = render(build_stage_report("stage_a", records))
    assert "failure rate (95% CI)" in text and "1/5 = 20% (95% CI 4%–62%)" in text
    assert "stable ×4, spiking ×1" in text


def test_verdicts_are_coloured_by_kind():
    text = verdict_text({"stable": 2, "diverged": 1, "collapsed": 1}, counted=True)
    styles = {text.plain[s.start : s.end]: str(s.style) for s in text.spans}
    assert "green" in styles["stable"] and "red" in styles["diverged"]
    assert "yellow" in styles["collapsed"]
    assert text.plain == "stable ×2, diverged ×1, collapsed ×1"


def test_the_terminal_tells_arms_apart_and_flags_incomparable_losses(make_run):
    records = [
        make_run("mae", scale_changes={"epochs": [50, 25]}),
        make_run("poisson", arm={"loss": "poisson"}, scale_changes={"epochs": [50, 25]}),
    ]
    text = render(build_stage_report("stage_c", records))
    assert "What differs between the arms (as run)" in text
    poisson_line = next(line for line in text.splitlines() if "│ poisson" in line)
    assert "poisson" in poisson_line.split("│ poisson", 1)[1]  # its loss in the differs table
    assert "0.0138 †" in text and "† Best val loss is each arm's own training loss" in text
    assert "Every arm: scale ci changed epochs 50 → 25 (as written → as run)." in text
    assert "post-clip median / max" in text and "1 / 1" in text
    assert "Best val loss is not ranked" in text
