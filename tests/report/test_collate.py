import math

import pytest

from stabilitykit.judge.verdict import Evidence
from stabilitykit.report.collate import (
    METRIC_COLUMNS,
    family_hash,
    metrics_row,
    other_keys,
    representative,
    stage_columns,
    summarise_arms,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("failures", "n", "expected"),
    [
        (0, 5, (0.0, 0.4345)),
        (5, 5, (0.5655, 1.0)),
        (1, 3, (0.0615, 0.7923)),
        (1, 10, (0.0179, 0.4042)),
        (0, 0, (0.0, 1.0)),
    ],
)
def test_wilson_interval_known_values(failures, n, expected):
    low, high = wilson_interval(failures, n)
    assert low == pytest.approx(expected[0], abs=1e-4)
    assert high == pytest.approx(expected[1], abs=1e-4)


def test_wilson_interval_narrows_with_z_and_rejects_bad_counts():
    assert wilson_interval(1, 3, z=1.0)[1] < wilson_interval(1, 3)[1]
    with pytest.raises(ValueError, match="0 <= failures <= n"):
        wilson_interval(4, 3)


def test_row_of_a_complete_run(make_run):
    rec = make_run(
        "deep_control",
        seed=3,
        verdict="diverged",
        evidence=(Evidence("finite", "loss or gradient became non-finite", step=5),),
        stats={"final_val_loss": math.nan, "grad_norm_preclip_max": math.inf},
    )
    row = metrics_row(rec)
    assert set(METRIC_COLUMNS) <= set(row)
    assert row["arm_name"] == "deep_control" and row["seed"] == 3 and row["scale"] == "ci"
    assert row["arm_id"] == "deep_control-hybrid-b4-seed3" and row["run"] == rec.path.name
    assert row["verdict"] == "diverged" and row["complete"] is True
    assert row["verdict_reason"] == "[finite] loss or gradient became non-finite (at step 5)"
    assert row["best_val_loss"] == 0.0138 and row["amp_ssim"] == 0.925
    assert row["final_val_loss"] is None and row["grad_norm_preclip_max"] is None  # non-finite
    assert row["phase_ssim"] is None and row["parameters"] == 123456
    assert row["fno_blocks"] == 4 and row["clip"] == "norm"
    assert row["workload"]["name"] == "gridlines"  # the record's metric declarations
    assert [m["name"] for m in row["workload"]["metrics"]][:2] == ["amp_ssim", "phase_ssim"]
    assert row["amp_ssim_floor"] == 0.277 and row["phase_vacuous"] is True  # metrics.json as is


def test_columns_come_from_the_declarations_of_the_rows(make_run):
    image, darcy = metrics_row(make_run("a")), metrics_row(make_run("d", workload="darcy"))
    old = metrics_row(make_run("o", workload=None))
    columns = stage_columns([image, darcy, old])
    assert [c.key for c in columns] == [
        "best_val_loss",
        "amp_ssim",
        "phase_ssim",
        "amp_mae",
        "phase_mae",
        "rel_l2",
        "mse",
        "grad_norm_preclip_median",
        "grad_norm_preclip_p99",
        "grad_norm_preclip_max",
        "grad_norm_postclip_median",
        "grad_norm_postclip_max",
    ]
    rel_l2 = columns[5]
    assert (rel_l2.title, rel_l2.floor, rel_l2.direction) == ("rel L2 ↓", "rel_l2_floor", "lower")
    assert old["workload"] is None and old["amp_ssim"] == 0.925  # kept, but declared by none
    assert "amp_ssim" in other_keys([old]) and "amp_ssim" not in other_keys([image])
    assert "pred_amp_std" in other_keys([image])  # a diagnostic: shown, not a column
    assert stage_columns([old]) == stage_columns([])  # the engine's columns only


def test_half_written_run_is_an_interrupted_row_with_what_it_logged(make_run):
    rec = make_run(
        "control", finish=False, steps=[{"step": 0, "epoch": 1, "lr": 1e-3, "loss": 0.3}]
    )
    row = metrics_row(rec)
    assert row["verdict"] == "interrupted" and row["complete"] is False
    assert "stats.json" in row["verdict_reason"]
    assert row["best_val_loss"] == pytest.approx(0.05 / 3)  # from history.json
    assert row["amp_ssim"] is None and row["grad_norm_preclip_max"] is None  # declared, not run
    assert row["parameters"] == 123456  # from config.json


def test_row_of_a_run_with_an_almost_empty_config(tmp_path):
    from stabilitykit.record.run_record import RunWriter, new_run_dir, read_record

    writer = RunWriter(new_run_dir(tmp_path, "bare"))
    writer.write_config({})
    row = metrics_row(read_record(writer.path))
    assert row["arm_name"] == writer.path.name and row["verdict"] == "interrupted"
    assert all(row[k] is None for k in METRIC_COLUMNS)


def test_family_hash_from_config_or_recomputed_as_the_arm_does():
    from stabilitykit.arm import Arm

    arm = Arm(name="control", fno_blocks=4, seed=3)
    config = {"arm": arm.to_dict(), "family_hash": arm.family_hash}
    assert family_hash(config) == arm.family_hash
    assert family_hash({"arm": arm.to_dict()}) == arm.family_hash  # older record: recomputed
    other_seed = arm.replace(seed=4, name="other")
    assert family_hash({"arm": other_seed.to_dict()}) == arm.family_hash
    deeper = arm.replace(fno_blocks=8)
    assert family_hash({"arm": deeper.to_dict()}) != arm.family_hash
    assert family_hash({}) is None


def test_arm_summary_over_seeds(make_run):
    records = [
        make_run("control", seed=s, stats={"best_val_loss": v}, metrics={"amp_ssim": None})
        for s, v in ((1, 0.1), (2, 0.2), (3, 0.4))
    ]
    records.append(make_run("control", seed=4, verdict="diverged", stats={"best_val_loss": 9.0}))
    records.append(make_run("control", seed=5, finish=False))
    (arm,) = summarise_arms([metrics_row(r) for r in records])
    assert arm.arm_name == "control" and arm.seeds == (1, 2, 3, 4, 5)
    assert arm.n == 4 and arm.failures == 1 and arm.failure_rate == 0.25  # interrupted not judged
    assert arm.failure_ci == pytest.approx(wilson_interval(1, 4))
    assert arm.verdicts == {"stable": 3, "diverged": 1, "interrupted": 1}
    assert arm.median["best_val_loss"] == pytest.approx(0.2)  # stable seeds only, 9.0 left out
    assert arm.iqr["best_val_loss"] == pytest.approx(0.3 - 0.15)
    assert arm.median["amp_ssim"] is None and arm.iqr["amp_ssim"] is None
    assert arm.to_dict()["failure_ci"] == list(arm.failure_ci)


def test_arms_group_by_name_and_family_in_order_of_appearance(make_run):
    rows = [
        metrics_row(make_run("deep", seed=1, arm={"fno_blocks": 8})),
        metrics_row(make_run("control", seed=2)),
        metrics_row(make_run("control", seed=1)),
        metrics_row(make_run("control", seed=1, arm={"lr": 1e-4})),
    ]
    arms = summarise_arms(rows)
    assert [(a.arm_name, a.seeds) for a in arms] == [
        ("deep", (1,)),
        ("control", (1, 2)),
        ("control", (1,)),
    ]


def test_representative_falls_back_to_failed_runs(make_run):
    rows = [metrics_row(make_run("deep", verdict="spiking", stats={"grad_norm_preclip_max": 4e5}))]
    (arm,) = summarise_arms(rows)
    assert arm.median["grad_norm_preclip_max"] is None  # no stable seed
    assert representative(arm, rows)["grad_norm_preclip_max"] == 4e5


def test_differing_fields_leave_out_what_every_arm_shares(make_run):
    from stabilitykit.report.collate import common_fields, differing_fields, recipe_summary

    rows = [
        metrics_row(make_run("control")),
        metrics_row(make_run("agc", arm={"clip": "agc", "clip_value": 0.01})),
        metrics_row(make_run("small", arm={"data": {"N": 32, "seed": 7}, "width": 16})),
    ]
    assert differing_fields(rows) == ["width", "clip", "clip_value", "data.N"]
    assert differing_fields(rows[:1]) == [] and differing_fields([]) == []
    # clip_value alone differs: clip is shown beside it
    norm = metrics_row(make_run("norm2", arm={"clip_value": 2.0}))
    assert differing_fields([rows[0], norm]) == ["clip", "clip_value"]
    assert (
        recipe_summary(rows[1], differing_fields(rows)) == "width default, clip agc 0.01, data.N 64"
    )
    common = common_fields(rows)
    assert common["optimizer"] == "adam" and common["loss"] == "mae"
    assert "clip" not in common and "width" not in common and "seed" not in common
    # the seed, the name and the scale never tell arms apart
    seeds = [metrics_row(make_run("a", seed=1)), metrics_row(make_run("b", seed=2, scale="smoke"))]
    assert differing_fields(seeds) == []


def test_rows_carry_the_arm_the_scale_changes_and_the_loss_basis(make_run):
    from stabilitykit.report.collate import loss_basis, loss_groups, scale_changes_of

    changes = {"epochs": [50, 25], "data.N": [64, 32]}
    row = metrics_row(make_run("control", scale_changes=changes))
    assert row["arm"]["name"] == "control" and row["arm"]["loss"] == "mae"
    assert scale_changes_of(row) == changes
    old = metrics_row(make_run("old", workload=None))
    assert scale_changes_of(old) is None  # not recorded, not "nothing changed"
    assert loss_basis(row) == ("gridlines", "mae")
    assert loss_basis(metrics_row(make_run("d", workload="darcy"))) == ("darcy", "rel_l2")
    poisson = metrics_row(make_run("p", arm={"loss": "poisson"}))
    assert len(loss_groups([row, poisson])) == 2 and len(loss_groups([row, row])) == 1
    assert "arm" not in metric_keys_of([row]) and "scale_changes" not in metric_keys_of([row])


def metric_keys_of(rows):
    from stabilitykit.report.collate import metric_keys

    return metric_keys(rows)
