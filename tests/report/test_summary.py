import json

import pytest

from stabilitykit.judge.verdict import Evidence
from stabilitykit.record.schema import RecordError, stamp, write_json
from stabilitykit.report.summary import (
    STAGE_METRICS_SCHEMA,
    build_stage_report,
    read_stage_metrics,
    stage_title,
    write_stage_report,
)

DEEP = {"fno_blocks": 8}
NONFINITE = Evidence("finite", "loss or gradient became non-finite", step=312)


def diverged(make_run, **kw):
    return make_run(
        "deep_control",
        verdict="diverged",
        evidence=(NONFINITE,),
        stats={"nonfinite": True, "nonfinite_step": 312, "grad_norm_preclip_max": 39927.0},
        **{"arm": DEEP, **kw},
    )


def test_stage_title():
    assert stage_title("stage_b") == "Stage B"
    assert stage_title("stage_a/control") == "Stage A `control`"


def test_stable_single_seed_recommends_a_seed_sweep(make_run):
    report = build_stage_report("stage_b", [make_run("deep_control", arm=DEEP)])
    assert not report.instability
    assert report.conclusion.startswith("No instability emerged: all 1 run of 1 arm")
    assert "at most 39.9" in report.conclusion  # the record's pre-clip grad norm max
    assert "--sk-seeds 5" in report.recommendation
    assert "79%" in report.recommendation  # Wilson upper bound for 0 failures in 1 seed
    assert "AGC" not in report.recommendation and "LayerScale" not in report.recommendation


def test_stable_over_five_seeds_recommends_more_depth(make_run):
    records = [make_run("deep_control", seed=s, arm=DEEP) for s in range(5)]
    report = build_stage_report("stage_b", records)
    assert not report.instability and "--sk-seeds" not in report.recommendation
    assert "`fno_blocks` 8 → 16" in report.recommendation
    assert "43%" in report.recommendation  # Wilson upper bound of 0/5


def test_diverged_recommends_agc_or_layerscale_with_the_evidence(make_run):
    report = build_stage_report("stage_b", [diverged(make_run)])
    assert report.instability
    assert report.conclusion.startswith("Instability emerged in 1 of 1 arm")
    assert "`deep_control` (diverged 1/1)" in report.conclusion
    (finding,) = report.findings
    assert "hybrid, 8 blocks, clip norm 1" in finding and "(at step 312)" in finding
    assert "pre-clip grad norm max 39927" in finding
    assert "AGC" in report.recommendation and "LayerScale" in report.recommendation
    assert "--sk-seeds" not in report.recommendation


def test_mitigation_offers_what_the_arm_does_not_use_yet(make_run):
    agc = diverged(make_run, arm={**DEEP, "clip": "agc", "clip_value": 0.01})
    report = build_stage_report("stage_b", [agc])
    assert "LayerScale" in report.recommendation and "AGC (" not in report.recommendation
    both = diverged(
        make_run,
        arm={**DEEP, "clip": "agc", "clip_value": 0.01, "layerscale_init": 1e-3},
    )
    assert "`lr` 0.001 → 0.0001" in build_stage_report("stage_b", [both]).recommendation


def test_collapse_is_named_with_its_numbers(make_run):
    rec = make_run(
        "stable",
        verdict="collapsed",
        arm={"architecture": "stable_hybrid", "layerscale_init": 1e-3},
        evidence=(Evidence("no_collapse", "predicted amplitude is constant"),),
        metrics={"pred_amp_std": 0.0004, "amp_ssim": 0.277},
        stats={"final_val_loss": 0.179, "best_val_loss": 0.0237, "best_val_epoch": 4},
    )
    report = build_stage_report("stage_a", [rec])
    assert report.instability
    assert "collapsed to a constant amplitude" in report.recommendation
    assert "predicted amplitude std 0.0004" in report.recommendation
    assert "best val loss 0.0237, at epoch 4, final 0.179" in report.recommendation
    assert "`layerscale_init` 0.001 → 0.0001" in report.recommendation


def test_out_of_memory_is_not_instability_and_suggests_a_fallback(make_run):
    rec = make_run(
        "deep_control",
        verdict="out_of_memory",
        arm=DEEP,
        evidence=(Evidence("run", "OutOfMemoryError: CUDA out of memory"),),
        stats={"parameters": 4_400_000_000},
    )
    report = build_stage_report("stage_b", [rec])
    assert not report.instability and "not every run passed" in report.conclusion
    assert "4,400,000,000 parameters" in report.recommendation
    assert "`fno_blocks` 8 → 6" in report.recommendation and "max_channels" in report.recommendation


def test_stagnation_suggests_longer_training(make_run):
    rec = make_run("control", verdict="stagnated", evidence=(Evidence("learns", "no drop"),))
    report = build_stage_report("stage_a", [rec])
    assert "`epochs` 3 → 6" in report.recommendation and "--sk-scale full" in report.recommendation


def test_seed_sweep_reports_failure_rate_with_wilson_interval(make_run):
    records = [make_run("control", seed=s) for s in (1, 2)]
    records.append(make_run("control", seed=3, verdict="collapsed"))
    report = build_stage_report("stage_a", records)
    assert "failure rate 1/3 = 33% (95% CI 6%–79%)" in report.findings[0]


def test_comparison_with_a_reference_gives_deltas(make_run, tmp_path):
    control = make_run("control", root=tmp_path / "a")
    deep = make_run("deep_control", arm=DEEP, stats={"best_val_loss": 0.0241}, data_hash="other")
    report = build_stage_report("stage_b", [deep], {"stage_a/control": control})
    (comparison,) = report.comparisons
    assert comparison.startswith("Stage B `deep_control` (stable) vs Stage A `control` (stable)")
    assert "best val loss 0.0241 vs 0.0138 (+75%)" in comparison
    assert "different data: other vs data0123" in comparison
    assert report.references[0]["reference"] == "stage_a/control"


def test_writes_metrics_summary_and_plots(make_run, tmp_path):
    control = make_run("control", root=tmp_path / "a")
    records = [diverged(make_run), make_run("agc", finish=False)]
    references = {"stage_a/control": control}
    report = build_stage_report("stage_b", records, references)
    report = write_stage_report(report, tmp_path / "out", records, references)
    assert set(report.files) == {"metrics", "summary", "losses", "grad_norms", "reconstructions"}
    assert all(p.exists() for p in report.files.values())
    md = report.files["summary"].read_text()
    assert md.startswith("# Stage B summary") and "data hash: data0123" in md
    assert "| deep_control | 1 | **diverged** | 0.0138 | 0.925 | – | 0.063 |" in md
    assert "| agc | 1 | **interrupted** |" in md  # the half-written run still appears
    assert "stage_a/control (reference)" in md and "## Against the reference" in md
    assert "**Yes.** Instability emerged" in md and "AGC" in md
    assert "![train and val loss per epoch](plots/losses.png)" in md
    assert all(f"]({'../runs/' + r.path.name})" in md for r in records)
    metrics = read_stage_metrics(report.files["metrics"])
    assert metrics["stage"] == "stage_b" and metrics["scale"] == "ci"
    assert [r["verdict"] for r in metrics["rows"]] == ["diverged", "interrupted"]
    assert metrics["rows"] == json.loads(json.dumps(report.rows))
    assert metrics["arms"][0]["failure_ci"] == list(report.arms[0].failure_ci)
    assert metrics["references"][0]["reference"] == "stage_a/control"


def test_a_report_with_only_references_renders(make_run, tmp_path):
    control = make_run("control", root=tmp_path / "a")
    report = build_stage_report("stage_b", [], {"stage_a/control": control})
    assert "no run" in report.conclusion and not report.instability
    report = write_stage_report(report, tmp_path / "out", [], {"stage_a/control": control})
    assert "stage_a/control (reference)" in report.files["summary"].read_text()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (stamp({"stage": "s"}, "other.tool", 1), "schema 'other.tool'"),
        (stamp({"stage": "s"}, STAGE_METRICS_SCHEMA, 2), "newer stabilitykit"),
        (stamp({"stage": "s", "arms": []}, STAGE_METRICS_SCHEMA, 1), "field 'rows'"),
        ({"rows": []}, "no 'schema' field"),
    ],
)
def test_foreign_newer_or_incomplete_metrics_files_are_rejected_by_name(tmp_path, payload, message):
    path = tmp_path / "stage_b_metrics.json"
    write_json(path, payload)
    with pytest.raises(RecordError, match=message) as info:
        read_stage_metrics(path)
    assert "stage_b_metrics.json" in str(info.value)


def test_a_failing_plot_does_not_cost_the_summary(make_run, tmp_path, monkeypatch):
    from stabilitykit.report import plots

    def broken(records, path):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "plot_losses", broken)
    records = [make_run("control")]
    report = write_stage_report(build_stage_report("stage_a", records), tmp_path, records)
    md = report.files["summary"].read_text()
    assert "losses" not in report.files and "plots/grad_norms.png" in md
    assert "plot losses failed: RuntimeError: no fonts" in md
