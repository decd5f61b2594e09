import pytest

from stabilitykit.judge.criteria import (
    DEFAULT_CRITERIA,
    GradNormBounded,
    Learns,
    LossBounded,
    NoCollapse,
    NoWorseThan,
    Observation,
    judge,
    with_criteria,
)
from stabilitykit.judge.verdict import Evidence, Verdict, VerdictKind

HEALTHY_STATS = {
    "nonfinite": False,
    "first_loss": 0.5,
    "max_loss": 0.6,
    "max_loss_step": 2,
    "grad_norm_preclip_max": 40.0,
    "grad_norm_preclip_max_step": 7,
    "initial_val_loss": 0.4,
    "best_val_loss": 0.1,
    "best_val_epoch": 9,
    "final_val_loss": 0.11,
}
HEALTHY_METRICS = {"amp_ssim": 0.6, "amp_ssim_floor": 0.25, "pred_amp_std": 0.5, "gt_amp_std": 0.6}
IMAGE_WORKLOAD = {
    "name": "images",
    "primary_metric": "amp_ssim",
    "metrics": [
        {
            "name": "amp_ssim",
            "label": "amp SSIM",
            "direction": "higher",
            "abs_tol": 0.035,
            "rel_tol": None,
            "floor": "amp_ssim_floor",
        },
    ],
    "collapse_std": ["pred_amp_std", "gt_amp_std"],
}
REGRESSION_WORKLOAD = {
    "name": "regression",
    "primary_metric": "rel_l2",
    "metrics": [
        {
            "name": "rel_l2",
            "label": "rel L2",
            "direction": "lower",
            "abs_tol": 0.01,
            "rel_tol": None,
            "floor": "rel_l2_floor",
        },
    ],
    "collapse_std": None,
}


def obs(stats=None, metrics=None, workload=IMAGE_WORKLOAD):
    return Observation(
        {**HEALTHY_STATS, **(stats or {})}, {**HEALTHY_METRICS, **(metrics or {})}, (), workload
    )


def regression(stats=None, rel_l2=0.05, floor=0.3):
    metrics = {"rel_l2": rel_l2, "rel_l2_floor": floor}
    return Observation({**HEALTHY_STATS, **(stats or {})}, metrics, (), REGRESSION_WORKLOAD)


def test_healthy_run_is_stable():
    verdict = judge(obs())
    assert verdict.kind is VerdictKind.STABLE and verdict.ok and verdict.evidence == ()


def test_nonfinite_is_diverged_with_step():
    verdict = judge(obs({"nonfinite": True, "nonfinite_step": 17}))
    assert verdict.kind is VerdictKind.DIVERGED
    assert verdict.evidence[0].criterion == "finite" and verdict.evidence[0].step == 17


def test_exploding_loss_is_diverged():
    kind, evidence = LossBounded(factor=10).check(obs({"max_loss": 6.0, "max_loss_step": 40}))
    assert kind is VerdictKind.DIVERGED and evidence.step == 40 and evidence.limit == 5.0
    assert LossBounded(factor=10).check(obs({"max_loss": 4.9})) is None


def test_grad_norm_bound():
    failure = GradNormBounded(limit=100).check(obs({"grad_norm_preclip_max": 39927.0}))
    assert failure[0] is VerdictKind.SPIKING and failure[1].value == 39927.0
    assert failure[1].step == 7
    assert GradNormBounded(limit=1e5).check(obs({"grad_norm_preclip_max": 39927.0})) is None


def test_constant_output_is_collapsed():
    verdict = judge(obs(metrics={"pred_amp_std": 1e-4}))
    assert verdict.kind is VerdictKind.COLLAPSED
    assert "constant" in verdict.evidence[0].message


def test_relapse_to_the_floor_is_collapsed():
    failure = NoCollapse().check(
        obs({"best_val_loss": 0.0237, "final_val_loss": 0.179}, {"amp_ssim": 0.255})
    )
    assert failure is not None and failure[0] is VerdictKind.COLLAPSED
    # at the floor but never learned: not a collapse (Learns reports it)
    assert NoCollapse().check(obs(metrics={"amp_ssim": 0.255})) is None


def test_no_learning_is_stagnated():
    failure = Learns(min_drop=0.1).check(obs({"best_val_loss": 0.39}))
    assert failure[0] is VerdictKind.STAGNATED and "did not drop" in failure[1].message
    failure = Learns().check(obs(metrics={"amp_ssim": 0.2}))
    assert failure[0] is VerdictKind.STAGNATED and "floor" in failure[1].message


def test_no_worse_than_reference():
    reference = {"best_val_loss": 0.1, "amp_ssim": 0.6}
    crit = NoWorseThan(reference, "stage_a/control", val_loss_rtol=0.5, metric_atol=0.035)
    assert crit.check(obs({"best_val_loss": 0.149}, {"amp_ssim": 0.566})) is None
    kind, evidence = crit.check(obs({"best_val_loss": 0.16}, {"amp_ssim": 0.5}))
    assert kind is VerdictKind.STAGNATED
    assert "stage_a/control" in evidence.message and "0.16" in evidence.message
    assert "0.500" in evidence.message


def test_most_severe_kind_wins_and_all_evidence_is_kept():
    verdict = judge(
        obs({"nonfinite": True, "nonfinite_step": 3, "grad_norm_preclip_max": 1e9}),
        DEFAULT_CRITERIA,
    )
    assert verdict.kind is VerdictKind.DIVERGED
    assert {e.criterion for e in verdict.evidence} >= {"finite", "grad_norm_bounded"}


def test_custom_criterion_can_be_added():
    class AlwaysFails:
        name = "always"

        def check(self, o):
            return VerdictKind.STAGNATED, Evidence(self.name, "no")

    assert judge(obs(), (*DEFAULT_CRITERIA, AlwaysFails())).kind is VerdictKind.STAGNATED


def test_verdict_round_trip_and_explain():
    verdict = Verdict(VerdictKind.SPIKING, (Evidence("g", "big", 5.0, 1.0, step=3, epoch=1),))
    assert Verdict.from_dict(verdict.to_dict()) == verdict
    assert "step 3" in verdict.explain() and "spiking" in verdict.explain()
    with pytest.raises(ValueError):
        Verdict.from_dict({"kind": "wobbly", "evidence": []})


def test_with_criteria_replaces_by_name_or_appends():
    tight = GradNormBounded(limit=1.0)
    criteria = with_criteria(DEFAULT_CRITERIA, tight)
    assert len(criteria) == len(DEFAULT_CRITERIA) and tight in criteria
    assert GradNormBounded() not in criteria
    ref = NoWorseThan({"best_val_loss": 1.0})
    assert with_criteria(DEFAULT_CRITERIA, ref)[-1] is ref
    assert judge(obs(), criteria).kind is VerdictKind.SPIKING


def test_lower_is_better_primary_metric_is_judged_against_its_floor():
    assert judge(regression(), DEFAULT_CRITERIA).kind is VerdictKind.STABLE
    kind, evidence = Learns().check(regression(rel_l2=0.31))
    assert kind is VerdictKind.STAGNATED and "rel L2 0.310" in evidence.message
    relapsed = regression({"best_val_loss": 0.02, "final_val_loss": 0.2}, rel_l2=0.295)
    assert NoCollapse().check(relapsed)[0] is VerdictKind.COLLAPSED
    assert NoCollapse().check(regression({"best_val_loss": 0.02, "final_val_loss": 0.2})) is None


def test_no_worse_than_uses_the_metric_direction_and_declared_tolerance():
    crit = NoWorseThan({"best_val_loss": 0.1, "rel_l2": 0.05}, "control")
    assert crit.check(regression(rel_l2=0.059)) is None  # within the declared abs_tol 0.01
    kind, evidence = crit.check(regression(rel_l2=0.07))
    assert kind is VerdictKind.STAGNATED and "rel L2 0.070 > 0.060" in evidence.message


def test_a_workload_without_floor_or_stds_is_judged_on_losses_only():
    bare = Observation(HEALTHY_STATS, {"x": 1.0}, (), {})
    assert judge(bare).kind is VerdictKind.STABLE


def _with_ideal(workload, ideal):
    spec = {**workload["metrics"][0], "ideal": ideal}
    return {**workload, "metrics": [spec]}


@pytest.mark.parametrize(
    ("ssim", "collapsed"),
    [(0.2741, True), (0.2707, True), (0.30, True), (0.348, False), (0.495, False)],
)
def test_an_arm_that_learned_little_of_the_gain_above_its_floor_collapsed(ssim, collapsed):
    # the grid-lines ci tier: floor 0.2707; the LayerScale arm ends at 0.2741 (0.5 % of the gain)
    workload = _with_ideal(IMAGE_WORKLOAD, 1.0)
    o = obs(metrics={"amp_ssim": ssim, "amp_ssim_floor": 0.2707}, workload=workload)
    failure = NoCollapse().check(o)
    assert (failure is not None) is collapsed
    if collapsed:
        assert failure[0] is VerdictKind.COLLAPSED and "of the possible gain" in failure[1].message
        assert judge(o).kind is VerdictKind.COLLAPSED


def test_learned_gain_of_a_lower_is_better_metric():
    workload = _with_ideal(REGRESSION_WORKLOAD, 0.0)
    near = Observation(HEALTHY_STATS, {"rel_l2": 0.29, "rel_l2_floor": 0.3}, (), workload)
    kind, evidence = NoCollapse().check(near)
    assert kind is VerdictKind.COLLAPSED and evidence.value == pytest.approx(1 / 30)
    far = Observation(HEALTHY_STATS, {"rel_l2": 0.03, "rel_l2_floor": 0.3}, (), workload)
    assert NoCollapse().check(far) is None


class _Raises:
    name = "users_criterion"

    def check(self, obs):
        return obs.metrics["missing"] > 1


class _NamelessBadReturn:
    def check(self, obs):
        return "fine"


def test_a_criterion_that_raises_is_an_error_naming_it_and_the_others_still_run():
    o = obs(stats={"grad_norm_preclip_max": 1e9})
    verdict = judge(o, (_Raises(), GradNormBounded(), _NamelessBadReturn()))
    assert verdict.kind is VerdictKind.ERROR
    by_name = {e.criterion: e.message for e in verdict.evidence}
    assert set(by_name) == {"users_criterion", "grad_norm_bounded", "_NamelessBadReturn"}
    assert by_name["users_criterion"].startswith("the criterion raised KeyError: 'missing'")
    assert "'fine'" in by_name["_NamelessBadReturn"]


# --- divergence: over the bound at the end or for a sustained stretch, not one step -----------


def _rows(n=1000, over=(), level=200.0):
    """A decaying noisy loss from 1.0 (seeded), with the steps in ``over`` set to ``level``."""
    import numpy as np

    rng = np.random.default_rng(3)
    loss = (0.1 + 0.9 * np.exp(-np.arange(n) / 100)) * rng.lognormal(0.0, 0.1, n)
    loss[0] = 1.0
    rows = [{"step": i + 1, "epoch": i // 40 + 1, "loss": float(v)} for i, v in enumerate(loss)]
    for step in over:
        rows[step - 1]["loss"] = level
    return rows


def _judged(rows):
    from stabilitykit.train.telemetry import summarise_steps

    stats = {**HEALTHY_STATS, **summarise_steps(rows)}
    return stats, LossBounded().check(Observation(stats))


def test_a_one_step_excursion_that_recovers_is_a_spike_not_a_divergence():
    from stabilitykit.judge.spikes import DEFAULT_RULES, find_spikes

    rows = _rows(over=[18])
    stats, failure = _judged(rows)
    assert stats["max_loss"] == 200.0 and stats["max_loss_step"] == 18  # over 100 x 1.0
    assert failure is None
    assert judge(Observation(stats, HEALTHY_METRICS, (), IMAGE_WORKLOAD)).kind is VerdictKind.STABLE
    assert [s["step"] for s in find_spikes(rows, DEFAULT_RULES)] == [18]
    # a stretch one step shorter than sustained recovers too
    short = stats["loss_sustained_steps"] - 1
    assert stats["loss_sustained_steps"] == 20  # max(5, 2 % of 1000)
    assert _judged(_rows(over=range(300, 300 + short)))[1] is None


def test_a_loss_over_its_bound_for_a_sustained_stretch_diverged():
    _, failure = _judged(_rows(over=range(300, 320)))  # 20 steps, then back
    assert failure is not None and failure[0] is VerdictKind.DIVERGED
    evidence = failure[1]
    assert evidence.step == 300 and evidence.value == 200.0 and evidence.limit == 100.0
    assert "20 consecutive logged steps" in evidence.message


def test_a_loss_over_its_bound_at_the_end_diverged():
    _, failure = _judged(_rows(over=[999, 1000]))  # two steps: no time left to recover
    assert failure is not None and failure[0] is VerdictKind.DIVERGED
    assert failure[1].step == 1000 and "loss ended at 200" in failure[1].message
    assert _judged(_rows(over=[998]))[1] is None  # ended back under it


def test_a_record_without_the_sustained_statistic_is_judged_by_its_peak():
    old = {"first_loss": 1.0, "max_loss": 150.0, "max_loss_step": 18, "final_loss": 0.1}
    kind, evidence = LossBounded().check(Observation(old))
    assert kind is VerdictKind.DIVERGED and evidence.step == 18
    assert "judged by its peak" in evidence.message
    assert LossBounded().check(Observation({**old, "max_loss": 90.0})) is None
    assert LossBounded().check(Observation({"max_loss": 1e9})) is None  # no first loss


def test_the_default_spike_criteria_run_the_default_rules():
    from stabilitykit.judge.criteria import Spikes
    from stabilitykit.judge.spikes import DEFAULT_RULES

    rules = tuple(c.rule for c in DEFAULT_CRITERIA if isinstance(c, Spikes))
    assert rules == DEFAULT_RULES
    assert Spikes.from_rule(DEFAULT_RULES[1], max_spikes=3).max_spikes == 3
