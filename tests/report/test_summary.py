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


def test_an_arm_that_fails_as_meant_gets_no_mitigation(make_run):
    meant = diverged(make_run, tags={"expect": "diverged"})
    report = build_stage_report("stage_b", [meant])
    assert "`deep_control` (diverged 1/1, as meant)" in report.conclusion
    assert "as it was meant to" in report.recommendation
    assert "AGC" not in report.recommendation and "LayerScale" not in report.recommendation
    surprise = diverged(make_run, tags={"expect": "collapsed"})  # failed, but not as meant
    report = build_stage_report("stage_b", [surprise])
    assert "as meant" not in report.conclusion and "AGC" in report.recommendation


def test_mitigation_offers_what_the_arm_does_not_use_yet(make_run):
    agc = diverged(make_run, arm={**DEEP, "clip": "agc", "clip_value": 0.01})
    report = build_stage_report("stage_b", [agc])
    assert "LayerScale" in report.recommendation and "AGC (" not in report.recommendation
    both = diverged(
        make_run,
        arm={**DEEP, "clip": "agc", "clip_value": 0.01, "layerscale_init": 1e-3},
    )
    assert "`lr` 0.001 → 0.0001" in build_stage_report("stage_b", [both]).recommendation


#: A user's MLP classifier: one architecture that takes only ``width``, no mitigations of its own.
MLP = {
    "name": "mlp_classifier",
    "primary_metric": "error",
    "metrics": [{"name": "error", "direction": "lower", "rel_tol": 0.1}],
    "architectures": {"mlp": {"width": 64}},
    "mitigations": [],
}


def test_a_recommendation_names_only_levers_the_arms_workload_has(make_run):
    arm = {"architecture": "mlp", "width": 64, "fno_blocks": None}
    for verdict in ("diverged", "collapsed"):
        rec = make_run("mlp", verdict=verdict, workload=MLP, arm=arm, evidence=(NONFINITE,))
        text = build_stage_report("stage_b", [rec]).recommendation
        assert "LayerScale" not in text and "layerscale_init" not in text, text
        assert "stable_hybrid" not in text
        assert ("AGC (" if verdict == "diverged" else "`lr` 0.001 → 0.0001") in text, text
    own = {**MLP, "mitigations": [{"text": "Batch norm", "changes": {"norm": "batch"}}]}
    rec = make_run("mlp", verdict="diverged", workload=own, arm=arm, evidence=(NONFINITE,))
    assert "Batch norm (`norm='batch'`)" in build_stage_report("stage_b", [rec]).recommendation
    # a workload's mitigation that sets a field the arm's architecture does not accept is left out
    odd = {**MLP, "mitigations": [{"text": "LayerScale", "changes": {"layerscale_init": 1e-3}}]}
    odd["architectures"] = {"mlp": {"width": 64}, "res": {"width": 64, "layerscale_init": 0.1}}
    rec = make_run("mlp", verdict="diverged", workload=odd, arm=arm, evidence=(NONFINITE,))
    assert "LayerScale" not in build_stage_report("stage_b", [rec]).recommendation


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
    assert "collapsed to the trivial predictor" in report.recommendation
    assert "prediction std 0.0004, vs truth 0.21" in report.recommendation  # collapse_std
    assert "amp SSIM 0.277, vs trivial-predictor floor 0.277" in report.recommendation
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
    assert "best val loss 0.0241 vs 0.0138 (+75%, worse)" in comparison  # beyond 25 %
    assert "amp SSIM 0.925 (floor 0.277) vs 0.925 (+0, within tolerance)" in comparison
    assert "different data: other vs data0123" in comparison
    assert "different workload" not in comparison
    assert report.references[0]["reference"] == "stage_a/control"


def test_comparison_calls_worse_and_better_by_the_metrics_direction(make_run, tmp_path):
    control = make_run("control", root=tmp_path / "a")
    refs = {"stage_a/control": control}
    better = make_run("b", metrics={"amp_ssim": 0.99}, stats={"best_val_loss": 0.005})
    (text,) = build_stage_report("stage_b", [better], refs).comparisons
    assert "best val loss 0.005 vs 0.0138 (-64%, better)" in text
    assert "amp SSIM 0.99 (floor 0.277) vs 0.925 (+0.065, better)" in text
    worse = make_run("w", metrics={"amp_ssim": 0.5})
    (text,) = build_stage_report("stage_b", [worse], refs).comparisons
    assert "amp SSIM 0.5 (floor 0.277) vs 0.925 (-0.425, worse)" in text
    # a lower-is-better primary metric with a relative tolerance: deltas in per cent
    darcy_ref = {"stage_a/control": make_run("dc", workload="darcy", root=tmp_path / "d")}
    darcy = make_run("deep", workload="darcy", metrics={"rel_l2": 0.3})
    (text,) = build_stage_report("stage_b", [darcy], darcy_ref).comparisons
    assert "rel L2 0.3 (floor 0.97) vs 0.12 (+150%, worse)" in text
    (text,) = build_stage_report("stage_b", [darcy], refs).comparisons
    assert "(different workload: darcy vs gridlines)" in text


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
    assert (
        "| arm | seed | verdict | best val loss ↓ | amp SSIM ↑ | phase SSIM ↑ | amp MAE ↓ | "
        "phase MAE ↓ | pre-clip grad norm median | p99 ↓ | max | post-clip median | post-clip max |"
    ) in md
    assert (
        "| deep_control | 1 | **diverged** | 0.0138 | 0.925 (floor 0.277) | – | 0.063 | – |" in md
    )
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
    assert "## Other metrics" in md and "| arm | seed | amp PSNR | amp_frc50 |" in md
    assert "| deep_control | 1 | 25 | 12 |" in md  # no tolerance: shown beside the diagnostics
    block = metrics["rows"][0]["workload"]  # each row carries its metric declarations
    assert block["name"] == "gridlines" and block["primary_metric"] == "amp_ssim"
    assert block["metrics"][0] == {
        "name": "amp_ssim",
        "label": "amp SSIM",
        "direction": "higher",
        "abs_tol": 0.035,
        "rel_tol": None,
        "floor": "amp_ssim_floor",
    }


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


def test_a_darcy_stage_shows_its_own_metrics_beside_their_floors(make_run, tmp_path):
    records = [
        make_run("control", seed=s, workload="darcy", reconstruction="field") for s in (1, 2)
    ]
    records.append(
        make_run(
            "deep",
            workload="darcy",
            reconstruction="field",
            verdict="collapsed",
            metrics={"rel_l2": 0.96, "pred_std": 0.001, "true_std": 0.4},
        )
    )
    report = build_stage_report("stage_a", records)
    report = write_stage_report(report, tmp_path / "out", records)
    assert {"losses", "grad_norms", "reconstructions"} <= set(report.files)
    assert not [n for n in report.notes if "plot" in n]  # every plot drawn
    md = report.files["summary"].read_text()
    assert "| rel L2 ↓ | MSE ↓ |" in md and "amp SSIM" not in md and "amp_ssim" not in md
    assert "| control | 1 | stable | 0.0138 | 0.12 (floor 0.97) | 0.0031 |" in md
    assert "rel L2 median [IQR]" in md and "0.12 [0] (floor 0.97)" in md
    assert "rel L2 0.12 (floor 0.97), MSE 0.0031" in report.findings[0]
    assert (
        "`deep` collapsed to the trivial predictor (prediction std 0.001, vs truth 0.4, rel L2 "
        "0.96, vs trivial-predictor floor 0.97"
    ) in report.recommendation
    metrics = read_stage_metrics(report.files["metrics"])
    assert metrics["rows"][0]["workload"]["primary_metric"] == "rel_l2"
    assert metrics["rows"][0]["rel_l2"] == 0.12 and metrics["rows"][0]["rel_l2_floor"] == 0.97


def test_the_metrics_rows_gate_by_their_own_workload(make_run, tmp_path):
    from stabilitykit.gate import arm_run

    records = [make_run("control", workload="darcy"), make_run("old", workload=None)]
    report = write_stage_report(build_stage_report("s", records), tmp_path, records)
    rows = read_stage_metrics(report.files["metrics"])["rows"]
    darcy = arm_run({**rows[0], "family_hash": "f" * 16, "arm_hash": "a" * 16})
    assert darcy.rules["rel_l2"].rel_tol == 0.2 and "amp_ssim" not in darcy.rules
    old = arm_run({**rows[1], "family_hash": "e" * 16, "arm_hash": "b" * 16})
    assert list(old.rules) == ["best_val_loss", "grad_norm_preclip_p99"]


def test_records_without_a_workload_block_still_render(make_run, tmp_path):
    records = [make_run("old", workload=None), make_run("older", seed=2, workload=None)]
    report = build_stage_report("stage_a", records)
    report = write_stage_report(report, tmp_path / "out", records)
    md = report.files["summary"].read_text()
    assert "| best val loss ↓ | pre-clip grad norm median | p99 ↓ | max |" in md  # none declared
    assert "## Other metrics" in md  # what metrics.json had, shown ungated
    assert "| amp_mae | amp_ssim |" in md.replace(" | amp_psnr", "").replace(" | amp_frc50", "")
    assert "| old | 1 | 0.063 | 0.925 |" in md.replace(" | 25 | 12", "")
    assert "floor" not in report.findings[0] and "amp SSIM" not in report.findings[0]
    assert read_stage_metrics(report.files["metrics"])["rows"][0]["workload"] is None


def test_arms_of_different_workloads_share_one_table(make_run, tmp_path):
    records = [
        make_run("image", reconstruction="phase"),
        make_run("darcy", workload="darcy", reconstruction="field"),
        make_run("old", workload=None),
    ]
    report = build_stage_report("stage_a", records)
    report = write_stage_report(report, tmp_path / "out", records)
    md = report.files["summary"].read_text()
    assert "| amp SSIM ↑ | phase SSIM ↑ | amp MAE ↓ | phase MAE ↓ | rel L2 ↓ | MSE ↓ |" in md
    # the arms' val losses are different losses on different workloads: flagged, not ranked
    assert "| image | 1 | stable | 0.0138 † | 0.925 (floor 0.277) | – | 0.063 | – | – | – |" in md
    assert "| darcy | 1 | stable | 0.0138 † | – | – | – | – | 0.12 (floor 0.97) | 0.0031 |" in md
    assert "| old | 1 | stable | 0.0138 † | – | – | – | – | – | – |" in md
    assert "\n† Best val loss is each arm's own training loss" in md
    assert "gridlines/mae: image; darcy/rel_l2: darcy" in md
    assert "| arm | `workload` | `loss` |" in md and "| darcy | darcy | rel_l2 |" in md
    metrics = read_stage_metrics(report.files["metrics"])
    assert metrics["best_val_loss_comparable"] is False
    assert metrics["differing_fields"] == ["workload", "loss"]
    assert not [n for n in report.notes if "plot" in n]


def test_a_malformed_block_is_a_note_not_a_crash(make_run, tmp_path):
    block = {"name": "x", "metrics": [{"name": "m", "direction": "sideways"}]}
    records = [make_run("odd", workload=block)]
    report = build_stage_report("stage_a", records)
    assert any("workload.metrics[0]: m: direction 'sideways'" in n for n in report.notes)
    write_stage_report(report, tmp_path / "out", records)


def test_the_report_and_the_gate_name_no_workload():
    from pathlib import Path

    import stabilitykit.gate
    import stabilitykit.report

    for package in (stabilitykit.report, stabilitykit.gate):
        for source in Path(package.__file__).parent.glob("*.py"):
            text = source.read_text()
            for name in ("stabilitykit.workloads", "stabilitykit.evaluate", "amp_", "phase_"):
                assert name not in text, f"{source.name} names {name}"


# --- telling arms apart, scales, comparability --------------------------------------------------

HOT = {"lr": 1e-2, "clip": "none", "clip_value": None}
CI_SCALE = {"epochs": [50, 25], "data.N": [64, 32], "width": [None, 16]}


def test_the_summary_shows_the_fields_that_differ_and_not_the_identical_ones(make_run, tmp_path):
    records = [
        make_run("control"),
        make_run("hot", arm=HOT),
        make_run("deep", arm={"fno_blocks": 8, "data": {"N": 32, "seed": 7}}),
    ]
    report = build_stage_report("stage_c", records)
    report = write_stage_report(report, tmp_path / "out", records)
    md = report.files["summary"].read_text()
    assert "| arm | `fno_blocks` | `lr` | `clip` | `clip_value` | `data.N` |" in md
    assert "| control | 4 | 0.001 | norm | 1 | 64 |" in md
    assert "| hot | 4 | 0.01 | none | – | 64 |" in md  # no clip value without a clip
    assert "| deep | 8 | 0.001 | norm | 1 | 32 |" in md
    head = md.split("## Runs")[0]
    for same in ("optimizer", "epochs", "batch_size", "architecture", "loss", "data.seed"):
        assert f"| `{same}` |" not in head and f"`{same}` |" not in head
    assert "Same for every arm: `workload` gridlines, `architecture` hybrid" in md
    assert "`optimizer` adam" in md and "`loss` mae" in md
    control, hot, deep = report.findings
    assert control.startswith("`control` (fno_blocks 4, lr 0.001, clip norm 1, data.N 64)")
    assert hot.startswith("`hot` (fno_blocks 4, lr 0.01, clip none, data.N 64)")
    assert deep.startswith("`deep` (fno_blocks 8, lr 0.001, clip norm 1, data.N 32)")
    assert "hybrid, 4 blocks" not in " ".join(report.findings)  # no common recipe per arm
    metrics = read_stage_metrics(report.files["metrics"])
    assert metrics["differing_fields"] == ["fno_blocks", "lr", "clip", "clip_value", "data.N"]
    assert metrics["rows"][1]["arm"]["lr"] == 0.01  # each row carries its arm as run


def test_arms_alike_but_for_the_name_say_so(make_run, tmp_path):
    records = [make_run("a"), make_run("b")]
    md = (
        write_stage_report(build_stage_report("s", records), tmp_path / "out", records)
        .files["summary"]
        .read_text()
    )
    assert "No recipe field differs between the arms" in md and "What differs" not in md


def test_best_val_loss_between_different_losses_is_flagged_and_not_ranked(make_run, tmp_path):
    control = make_run("control", root=tmp_path / "a")
    records = [
        make_run("mae", stats={"best_val_loss": 0.05}, metrics={"amp_ssim": 0.9}),
        make_run(
            "poisson",
            arm={"loss": "poisson"},
            stats={"best_val_loss": 0.001},
            metrics={"amp_ssim": 0.8},
        ),
    ]
    refs = {"stage_a/control": control}
    report = build_stage_report("stage_c", records, refs)
    report = write_stage_report(report, tmp_path / "out", records, refs)
    md = report.files["summary"].read_text()
    assert "| mae | 1 | stable | 0.05 † |" in md and "| poisson | 1 | stable | 0.001 † |" in md
    assert "| stage_a/control (reference) | 1 | stable | 0.0138 † |" in md
    assert (
        "† Best val loss is each arm's own training loss on its own workload (workload/loss: "
        "gridlines/mae: stage_a/control (reference), mae; gridlines/poisson: poisson)"
    ) in md
    assert "| arm | `loss` |" in md
    # the narrative ranks by the workload's metric, never by the incomparable loss
    assert not any("By best val loss" in r for r in report.ranking)
    assert "Best val loss is not ranked" in " ".join(report.ranking)
    assert "best first: `mae` 0.9, then `poisson` 0.8" in report.ranking[0]
    poisson = next(c for c in report.comparisons if "`poisson`" in c)
    assert "best val loss 0.001 vs 0.0138 (not comparable: gridlines/poisson vs gridlines/mae)" in (
        poisson
    )
    assert "different loss: poisson vs mae" in poisson
    assert "-93%" not in poisson and "better)" not in poisson.split("amp SSIM")[0]
    metrics = read_stage_metrics(report.files["metrics"])
    assert metrics["best_val_loss_comparable"] is False


def test_one_loss_ranks_by_best_val_loss_without_a_dagger(make_run, tmp_path):
    records = [
        make_run("a", stats={"best_val_loss": 0.05}, metrics={"amp_ssim": 0.9}),
        make_run("b", arm={"lr": 3e-4}, stats={"best_val_loss": 0.01}, metrics={"amp_ssim": 0.95}),
        make_run("c", arm={"lr": 1e-4}, verdict="diverged"),
    ]
    report = build_stage_report("stage_c", records)
    md = write_stage_report(report, tmp_path / "out", records).files["summary"].read_text()
    assert "†" not in md
    assert report.ranking[0].startswith("By amp SSIM ↑ (the gridlines workload's primary metric)")
    assert "`b` 0.95, then `a` 0.9" in report.ranking[0]
    assert "By best val loss ↓, best first: `b` 0.01, then `a` 0.05." in report.ranking
    assert "Not ranked (no stable run): `c`." in report.ranking
    assert "## How the arms rank" in md


def test_ranking_within_the_gate_tolerance_says_the_arms_are_not_told_apart(make_run):
    records = [make_run("a", metrics={"amp_ssim": 0.93}), make_run("b", arm={"lr": 3e-4})]
    report = build_stage_report("s", records)
    assert "`a` 0.93, then `b` 0.925 (all within the gate's tolerance" in report.ranking[0]
    assert "`a` 0.0138 = `b` 0.0138" in report.ranking[1]  # a tie


def test_scale_changes_appear_and_no_epochs_the_scale_overrides_are_recommended(make_run, tmp_path):
    rec = make_run(
        "control",
        verdict="stagnated",
        evidence=(Evidence("learns", "no drop"),),
        arm={"epochs": 25},
        scale_changes=CI_SCALE,
    )
    report = build_stage_report("stage_a", [rec])
    report = write_stage_report(report, tmp_path / "out", [rec])
    md = report.files["summary"].read_text()
    assert (
        "The arm: scale `ci` changed `width` default → 16, `epochs` 50 → 25, `data.N` 64 → 32 "
        "(as written → as run)."
    ) in md
    (step,) = report.next_steps
    assert "more epochs" not in step and "`epochs` 25 → 50" not in step
    assert "`epochs` 50 as written → 25 as run" in step  # names the field the scale set
    assert "run it as written with `--sk-scale none` (`epochs` 50)" in step
    assert "or at `--sk-scale full`" in step
    # a scale that lengthened the run: raise the arm's epochs and run as written
    short = make_run(
        "short",
        verdict="stagnated",
        arm={"epochs": 25},
        scale_changes={"epochs": [4, 25]},
    )
    (step,) = build_stage_report("stage_a", [short]).next_steps
    assert "more epochs" not in step
    assert (
        "set `epochs` above 25 in the arm (e.g. 50) and run it as written with `--sk-scale none`"
        in (step)
    )
    # without a scale change of epochs, more epochs is the advice
    plain = make_run("plain", verdict="stagnated", scale_changes={"data.N": [64, 32]})
    assert "more epochs (`epochs` 3 → 6)" in build_stage_report("s", [plain]).recommendation


def test_a_recommended_depth_the_scale_sets_says_to_run_as_written(make_run):
    records = [
        make_run("deep", seed=s, arm={"fno_blocks": 2}, scale_changes={"fno_blocks": [8, 2]})
        for s in range(5)
    ]
    text = build_stage_report("s", records).recommendation
    assert "`fno_blocks` 2 → 4" in text
    assert "The `ci` scale sets `fno_blocks` (8 as written, 2 as run)" in text
    assert "run it as written (`--sk-scale none`) or at `--sk-scale full`" in text


def test_scale_changes_per_arm_when_they_differ_and_older_records_say_not_recorded(
    make_run, tmp_path
):
    records = [
        make_run("control", scale_changes=CI_SCALE),
        make_run("written", scale="custom", scale_changes={}),
        make_run("old", workload=None),
    ]
    report = write_stage_report(build_stage_report("s", records), tmp_path / "out", records)
    md = report.files["summary"].read_text()
    assert "| arm | what `--sk-scale` changed |" in md
    assert "| control | scale `ci` changed `width` default → 16, `epochs` 50 → 25" in md
    assert "| written | ran as written (`--sk-scale none`): no field set by a scale |" in md
    assert "| old | scale `ci`; what it changed is not recorded" in md
    rows = read_stage_metrics(report.files["metrics"])["rows"]
    assert rows[0]["scale_changes"] == CI_SCALE and rows[1]["scale_changes"] == {}
    assert rows[2]["scale_changes"] is None and rows[2]["workload"] is None


def test_the_post_clip_grad_norm_is_shown(make_run, tmp_path):
    rec = make_run(
        "agc",
        arm={"clip": "agc", "clip_value": 0.01},
        stats={"grad_norm_postclip_median": 0.42, "grad_norm_postclip_max": 0.77},
    )
    report = write_stage_report(build_stage_report("s", [rec]), tmp_path / "out", [rec])
    md = report.files["summary"].read_text()
    assert "| post-clip median | post-clip max |" in md and "| 39.9 | 0.42 | 0.77 |" in md
    assert "post-clip median 0.42, max 0.77" in report.findings[0]


def test_a_seeded_stage_of_mixed_workloads_and_old_records_writes_everything(make_run, tmp_path):
    records = [make_run("image", seed=s, scale_changes=CI_SCALE) for s in (1, 2, 3)]
    records += [make_run("darcy", seed=s, workload="darcy") for s in (1, 2)]
    records += [make_run("old", seed=s, workload=None) for s in (1, 2)]
    report = write_stage_report(build_stage_report("s", records), tmp_path / "out", records)
    assert not [n for n in report.notes if "plot" in n]
    md = report.files["summary"].read_text()
    assert "## Seeds" in md and "0.0138 [0] †" in md
    assert "| image | gridlines | mae |" in md and "| darcy | darcy | rel_l2 |" in md
    metrics = read_stage_metrics(report.files["metrics"])
    assert [r["arm_name"] for r in metrics["rows"]] == ["image"] * 3 + ["darcy"] * 2 + ["old"] * 2
    assert metrics["differing_fields"] == ["workload", "loss"]


# --- spikes and expected verdicts ---------------------------------------------------------------


@pytest.fixture
def spiky_runs(make_run, make_spike, make_layers):
    """A run with three spikes (the worst: a grad-norm spike at step 2, 4 × its limit) and a
    ``layers.jsonl``, a run with none, and one written before spike detection."""
    spikes = [
        make_spike(4, value=0.5, baseline=0.2, limit=0.4),  # 1.25 × its limit
        make_spike(2, signal="grad_norm_preclip", value=80.0, baseline=10.0, limit=20.0),
        make_spike(5, value=0.9, baseline=0.2, limit=0.4),  # 2.25 ×
    ]
    return [
        make_run("spiky", stats={"spikes": spikes}, layers=make_layers([2, 4, 5])),
        make_run("calm", stats={"spikes": []}),
        make_run("old"),  # no "spikes" in its stats: unknown
    ]


def test_the_spikes_section_gives_count_first_step_and_worst(spiky_runs, tmp_path):
    report = build_stage_report("stage_b", spiky_runs)
    report = write_stage_report(report, tmp_path / "out", spiky_runs)
    md = report.files["summary"].read_text()
    assert "## Spikes" in md
    assert "| arm | seed | spikes | first step | worst spike | top layer (grad norm) |" in md
    assert (
        "| spiky | 1 | 3 (loss 2, pre-clip grad norm 1) | 2 | step 2: pre-clip grad norm 80 vs "
        "running mean 10 (limit 20) | `blocks.1.spectral` 30 |"
    ) in md
    assert "| calm | 1 | 0 | – | – | – |" in md  # detection ran and found none
    assert "| old | 1 | – | – | – | – |" in md  # older than detection: unknown, not zero
    rows = {r["arm_name"]: r for r in read_stage_metrics(report.files["metrics"])["rows"]}
    assert rows["spiky"]["spikes"]["count"] == 3 and rows["spiky"]["spikes"]["first_step"] == 2
    worst = rows["spiky"]["spikes"]["worst"]
    assert worst["step"] == 2 and worst["signal"] == "grad_norm_preclip" and worst["ratio"] == 4
    assert rows["old"]["spikes"] is None and rows["calm"]["spikes"]["count"] == 0
    assert "| count |" not in md and "| spikes |" not in md.split("## Spikes")[0]  # no metric


def test_the_worst_spike_is_the_one_furthest_past_its_limit(make_run, make_spike):
    big_but_near = make_spike(1, value=100.0, baseline=60.0, limit=90.0)  # 1.11 ×
    small_but_far = make_spike(3, value=0.9, baseline=0.1, limit=0.2)  # 4.5 ×
    rec = make_run("x", stats={"spikes": [big_but_near, small_but_far]})
    (row,) = build_stage_report("s", [rec]).rows
    assert row["spikes"]["worst"]["step"] == 3 and row["spikes"]["first_step"] == 1


def test_no_spikes_section_without_a_record_of_spikes(make_run, tmp_path):
    records = [make_run("old")]
    report = write_stage_report(build_stage_report("s", records), tmp_path / "out", records)
    md = report.files["summary"].read_text()
    assert "## Spikes" not in md and not [k for k in report.files if "spike" in k]


def test_only_an_arm_with_spikes_gets_its_per_layer_bar_chart(spiky_runs, tmp_path):
    report = write_stage_report(
        build_stage_report("stage_b", spiky_runs), tmp_path / "out", spiky_runs
    )
    charts = {k: p for k, p in report.files.items() if k.startswith("spike_layers")}
    assert list(charts) == ["spike_layers:spiky"]
    assert charts["spike_layers:spiky"] == tmp_path / "out" / "plots" / "spike_layers-spiky.png"
    assert charts["spike_layers:spiky"].exists()
    assert sorted(p.name for p in (tmp_path / "out" / "plots").glob("spike_layers*")) == [
        "spike_layers-spiky.png"
    ]
    md = report.files["summary"].read_text()
    link = "![per-layer grad norm at the worst spike of spiky](plots/spike_layers-spiky.png)"
    assert link in md and "at the arm's worst spike" in md
    assert not [n for n in report.notes if "plot" in n]


def test_an_arm_meant_to_fail_shows_the_expected_and_the_actual_verdict(make_run, tmp_path):
    records = [
        make_run("control", verdict="diverged", tags={"expect": "diverged"}),
        make_run("survivor", tags={"expect": "diverged"}),
        make_run("plain", verdict="collapsed"),
        make_run("killed", finish=False, tags={"expect": "diverged"}),
    ]
    report = write_stage_report(build_stage_report("s", records), tmp_path / "out", records)
    md = report.files["summary"].read_text()
    assert "| control | 1 | diverged (expected diverged) |" in md  # as meant: not in bold
    assert "| survivor | 1 | stable (expected diverged: **mismatch**) |" in md
    assert "| plain | 1 | **collapsed** |" in md  # no expectation: as before
    assert "| killed | 1 | **interrupted** (expected diverged; not judged) |" in md
    rows = read_stage_metrics(report.files["metrics"])["rows"]
    assert [r["expect"] for r in rows] == ["diverged", "diverged", None, "diverged"]


def test_the_seeds_table_counts_the_seeds_that_missed_their_expected_verdict(make_run, tmp_path):
    tags = {"expect": "diverged"}
    records = [make_run("control", seed=s, verdict="diverged", tags=tags) for s in (1, 2)]
    records.append(make_run("control", seed=3, tags=tags))
    records += [make_run("agc", seed=s, tags={"expect": "stable"}) for s in (1, 2)]
    report = write_stage_report(build_stage_report("s", records), tmp_path / "out", records)
    md = report.files["summary"].read_text()
    assert "| control | 3 | diverged ×2, stable ×1 (expected diverged: **1 mismatch**) |" in md
    assert "| agc | 2 | stable ×2 (expected stable) |" in md
