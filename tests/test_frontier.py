import itertools
import math

import pytest

from stabilitykit.frontier import (
    build_frontier,
    capped_loss,
    capped_metric,
    compare_edges,
    frontiers,
    locate_boundary,
    log_weights,
    lr_sensitivity,
    refine,
    refine_values,
    wilson,
)
from stabilitykit.report.collate import metrics_row
from stabilitykit.stage import StudyOptions, run_in_stage
from stabilitykit.sweep import log_grid, sweep
from stabilitykit.testing.linear import CRITERIA, GD, critical_lr

WORKLOAD = {
    "name": "w",
    "primary_metric": "ssim",
    "metrics": [{"name": "ssim", "direction": "higher", "floor": "ssim_floor"}],
}


def row(value, seed=0, verdict="stable", ssim=0.6, family="control", final=0.2, initial=1.0):
    """A stage row of a sweep point, as ``metrics_row`` writes one."""
    return {
        "run": f"{family}-{value}-{seed}",
        "seed": seed,
        "verdict": verdict,
        "arm": {"lr": value, "sweep": [family, "lr"], "seed": seed},
        "workload": WORKLOAD,
        "ssim": ssim,
        "ssim_floor": 0.27,
        "final_val_loss": final,
        "initial_val_loss": initial,
    }


def rows_with_rates(failures, values=(1, 2, 4, 8, 16), seeds=3, family="control"):
    """Rows where value i fails in ``failures[i]`` of ``seeds`` seeds."""
    return [
        row(v, s, "diverged" if s < k else "stable", family=family)
        for v, k in zip(values, failures, strict=True)
        for s in range(seeds)
    ]


def test_lr_sensitivity_on_a_hand_computed_example():
    # final losses at lr 1e-3, 1e-2, 1e-1: 0.5, 0.2 and a diverged run capped at the initial 1.0
    # -> deviations from the best (0.2): 0.3, 0, 0.8 -> mean 1.1 / 3
    rows = [
        row(1e-3, final=0.5, ssim=0.5),
        row(1e-2, final=0.2, ssim=0.8),
        row(1e-1, verdict="diverged", final=float("nan"), ssim=None),
    ]
    losses = [capped_loss(r) for r in rows]
    assert losses == [0.5, 0.2, 1.0]
    assert lr_sensitivity([1e-3, 1e-2, 1e-1], losses) == pytest.approx(1.1 / 3)
    # amp SSIM, higher is better: the diverged run counts at the floor 0.27
    # -> deviations from 0.8: 0.3, 0, 0.53 -> mean 0.83 / 3
    ssims = [capped_metric(r, "ssim", "higher", "ssim_floor") for r in rows]
    assert ssims == [0.5, 0.8, 0.27]
    assert lr_sensitivity([1e-3, 1e-2, 1e-1], ssims, "higher") == pytest.approx(0.83 / 3)
    item = build_frontier(rows, "control", "lr")
    assert item.sensitivity == pytest.approx(0.83 / 3)
    assert item.sensitivity_loss == pytest.approx(1.1 / 3)
    # a run worse than the floor counts at the floor; a loss above the initial at the initial
    assert capped_metric(row(1, ssim=0.1), "ssim", "higher", "ssim_floor") == 0.27
    assert capped_loss(row(1, final=3.0)) == 1.0


def test_a_refined_grid_is_weighted_by_its_share_of_the_log_range():
    assert log_weights([1e-3, 1e-2, 1e-1]) == pytest.approx([1 / 3] * 3)
    # gaps of 1 and 2 decades: cells 1, 1.5 and 2 decades
    assert log_weights([1, 10, 1000]) == pytest.approx([2 / 9, 3 / 9, 4 / 9])


def test_the_boundary_and_its_interval_account_for_the_seeds():
    item = build_frontier(rows_with_rates([0, 0, 1, 3, 3]), "control", "lr")
    b = item.boundary
    assert b.bracketed and b.bracket == (4, 8)
    # the rate goes 1/3 -> 1 between 4 and 8: 1/2 is a quarter of the way, in log space
    assert b.estimate == pytest.approx(4 * 2**0.25)
    # 1/3 at 4 may be 1/2 (80 % Wilson [0.10, 0.68]); 0/3 at 2 is below, 3/3 at 8 above
    assert wilson(1, 3)[0] < 0.5 < wilson(1, 3)[1] and wilson(0, 3)[1] < 0.5
    assert b.interval == (2, 8)
    assert item.stable_range == (1, 4)
    # 95 %: 0/3 no longer excludes 1/2, so the interval is open below
    wide = build_frontier(rows_with_rates([0, 0, 1, 3, 3]), "control", "lr", confidence=0.95)
    assert wide.boundary.interval == (None, None)


def test_a_range_that_does_not_bracket_the_edge_says_so_and_is_extended():
    stable = build_frontier(rows_with_rates([0, 0, 0, 0, 0]), "control", "lr")
    assert not stable.boundary.bracketed
    assert "stable up to the largest lr swept, 16" in stable.boundary.reason
    assert refine_values(stable) == [32, 64, 128]
    failing = build_frontier(rows_with_rates([3, 3, 3, 3, 3]), "control", "lr")
    assert "no lr swept had a failure rate below 1/2" in failing.boundary.reason
    assert failing.stable_range is None and refine_values(failing) == [0.5, 0.25, 0.125][::-1]


def test_refinement_brackets_the_edge_within_the_factor():
    rows = rows_with_rates([0, 0, 3], values=(0.01, 0.1, 0.215))
    coarse = build_frontier(rows, "control", "lr")
    values = refine_values(coarse)
    assert values == [0.121, 0.147, 0.178]
    grid = [0.1, *values, 0.215]
    assert max(b / a for a, b in itertools.pairwise(grid)) <= 1.25
    assert refine_values(coarse, per_pass=1) == [0.147]  # bisection: one value per pass
    assert locate_boundary([]).bracketed is False


def test_families_are_compared_by_their_intervals():
    control = rows_with_rates([0, 0, 3, 3, 3])
    agc = rows_with_rates([0, 0, 0, 0, 3], family="agc")
    near = rows_with_rates([0, 0, 1, 3, 3], family="near")
    items = {f.family: f for f in frontiers(control + agc + near)}
    assert compare_edges(items["control"], items["agc"]) == (
        "`agc` moves the edge up from lr 2.83 [2, 4] (`control`) to 11.3 [8, 16]."
    )
    line = compare_edges(items["control"], items["near"])
    assert line.startswith("`near` and `control` are not told apart")
    stable = frontiers(rows_with_rates([0, 0, 0, 0, 0], family="stable"))[0]
    assert "not bracketed" in compare_edges(items["control"], stable)


def test_the_known_edge_of_gradient_descent_is_found_within_the_factor(tmp_path):
    """Linear least squares: gradient descent diverges above lr = 2/L (L from the data)."""
    truth = critical_lr()
    options = StudyOptions(scale="none", out=tmp_path / "reports", cache_dir=tmp_path / "cache")
    stage_dir = options.stage_dir("stage_f")

    def run(points):
        return [run_in_stage(p, "stage_f", options, criteria=CRITERIA) for p in points]

    coarse = sweep(GD, "lr", log_grid(0.01, 1.0, per_decade=2))  # 5 values, 1 seed
    run(coarse)
    second = refine(coarse, stage_dir, scale="none")  # reads the first pass
    results = run(second)
    item = frontiers([metrics_row(r.record) for r in results])[0]
    low, high = item.boundary.bracket
    assert low < truth < high and item.boundary.resolved(1.25)
    assert 1 / 1.25 < item.boundary.estimate / truth < 1.25
    fine_grid = math.floor(math.log(100) / math.log(1.25)) + 1  # the same range at 1.25
    assert len(second) == len(list((stage_dir / "runs").iterdir())) == 10 < fine_grid == 21


def test_a_family_failing_at_every_value_is_extended_once_then_left_unbracketed(tmp_path):
    """Gradient descent above 2/L diverges at every lr swept: one extension below (three values
    at the sweep's ratio, all still above 2/L), then nothing more, and the report says why."""
    options = StudyOptions(scale="none", out=tmp_path / "reports", cache_dir=tmp_path / "cache")
    stage_dir = options.stage_dir("stage_f")
    coarse = sweep(GD, "lr", [2.0, 4.0])
    assert critical_lr() < 0.25  # the extension's lowest value still diverges

    def run(points):
        return [run_in_stage(p, "stage_f", options, criteria=CRITERIA) for p in points]

    run(coarse)
    extended = refine(coarse, stage_dir, scale="none")
    assert sorted(p.lr for p in extended) == [0.25, 0.5, 1.0, 2.0, 4.0]
    results = run(extended)
    assert refine(coarse, stage_dir, scale="none") == extended  # nothing more to train
    item = frontiers([metrics_row(r.record) for r in results])[0]
    assert not item.boundary.bracketed
    assert "no lr swept had a failure rate below 1/2" in item.boundary.reason
