import math

import pytest

from stabilitykit.gate.metrics import MetricRule
from stabilitykit.gate.spread import (
    BETTER,
    NOT_DECIDED,
    OK,
    WORSE,
    judge_value,
    prediction_interval,
    regression_threshold,
)

SSIM = MetricRule("ssim", "higher", abs_tol=0.5)
LOSS = MetricRule("loss", "lower", abs_tol=0.5)


def test_prediction_interval_of_known_numbers():
    # mean 2, std 1, t(0.975, 2) = 4.3027: 2 -+ 4.3027 * sqrt(4/3)
    low, high = prediction_interval([1.0, 2.0, 3.0])
    half = 4.302653 * math.sqrt(4 / 3)
    assert (low, high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert prediction_interval([1.0, 2.0]) is None  # too few seeds to estimate a spread


@pytest.mark.parametrize(
    ("now", "status"),
    [(1.6, OK), (1.4, NOT_DECIDED), (-2.9, NOT_DECIDED), (-3.0, WORSE), (7.1, BETTER), (6.0, OK)],
)
def test_judge_value_higher_is_better(now, status):
    # median 2, limit 1.5; the interval is 2 -+ 4.968
    assert judge_value(now, [1.0, 2.0, 3.0], SSIM).status == status


def test_judge_value_lower_is_better_and_too_few_seeds():
    judged = judge_value(7.0, [1.0, 2.0, 3.0], LOSS)
    assert judged.status == WORSE and judged.limit == 2.5 and judged.bound > 6.9
    assert "is above the median of 3 seeds 2" in judged.why
    few = judge_value(9.0, [1.0, 2.0], LOSS)
    assert few.status == NOT_DECIDED and few.bound is None and "too few" in few.why
    assert judge_value(1.9, [1.0, 2.0], LOSS).status == OK


def test_regression_threshold_is_the_larger_of_tolerance_and_interval():
    assert regression_threshold([1.0, 2.0, 3.0], SSIM) == pytest.approx(4.302653 * 1.1547, 1e-4)
    tight = MetricRule("ssim", "higher", abs_tol=0.5)
    assert regression_threshold([2.0, 2.0, 2.0], tight) == 0.5  # no spread: the tolerance
    assert regression_threshold([1.0, 2.0], SSIM) is None
