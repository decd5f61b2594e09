import math

import pytest
import torch

from stabilitykit.workloads.gridlines.losses import LOSSES, get_loss, mae_loss, poisson_loss

PRED = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
MEASURED = torch.tensor([[1.0, 1.0], [2.0, 2.0]])  # mean 1.5


def test_mae_hand_computed():
    # |diff| = 0, 1, 1, 2 -> mean 1.0; / 1.5
    assert mae_loss(PRED, MEASURED).item() == pytest.approx(1.0 / 1.5)


def test_poisson_hand_computed():
    # per element rate - k log rate with rate = pred², k = measured²
    rate, k = PRED**2, MEASURED**2
    per_sample = [
        sum(rate[b, j] - k[b, j] * math.log(rate[b, j]) for j in range(2)) for b in range(2)
    ]
    expected = (per_sample[0] + per_sample[1]) / 2 / 1.5
    # sample 0: (1 - 0) + (4 - ln 4); sample 1: (9 - 4 ln 9) + (16 - 4 ln 16)
    assert expected == pytest.approx((5 - math.log(4) + 25 - 4 * math.log(144)) / 2 / 1.5)
    assert poisson_loss(PRED, MEASURED).item() == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("loss", [mae_loss, poisson_loss])
def test_denominator_is_detached(loss):
    measured = MEASURED.clone().requires_grad_(True)
    pred = PRED.clone()
    loss(pred, measured).backward()
    const = measured.detach().mean() + 1e-8
    expected_measured = measured.detach().clone().requires_grad_(True)
    numerator = {"mae_loss": lambda a, x: (a - x).abs().mean(), "poisson_loss": _poisson_numerator}
    (numerator[loss.__name__](pred, expected_measured) / const).backward()
    torch.testing.assert_close(measured.grad, expected_measured.grad)


def _poisson_numerator(a, x):
    return (a**2 - x**2 * torch.log(a**2 + 1e-12)).flatten(1).sum(1).mean()


def test_poisson_is_minimal_at_the_measurement():
    gen = torch.Generator().manual_seed(0)
    measured = torch.rand(4, 1, 8, 8, generator=gen) + 0.1
    pred = measured.clone().requires_grad_(True)
    at_truth = poisson_loss(pred, measured)
    at_truth.backward()
    assert pred.grad.abs().max() < 1e-5
    for factor in (0.9, 0.99, 1.01, 1.1):
        assert poisson_loss(measured * factor, measured) > at_truth


@pytest.mark.parametrize("loss", [mae_loss, poisson_loss])
def test_losses_are_finite_at_zero_prediction(loss):
    value = loss(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
    assert torch.isfinite(value)


def test_mae_is_invariant_to_the_amplitude_scale():
    torch.testing.assert_close(mae_loss(3 * PRED, 3 * MEASURED), mae_loss(PRED, MEASURED))


@pytest.mark.parametrize("loss", [mae_loss, poisson_loss])
def test_shape_mismatch_is_refused_not_broadcast(loss):
    with pytest.raises(ValueError, match=r"equal shape, got \(2, 2\) and \(2, 1\)"):
        loss(PRED, MEASURED[:, :1])


def test_registry():
    assert set(LOSSES) == {"mae", "poisson"}
    assert get_loss("mae") is mae_loss and get_loss("poisson") is poisson_loss
    with pytest.raises(ValueError, match=r"unknown loss 'l2'; allowed: \['mae', 'poisson'\]"):
        get_loss("l2")
    with pytest.raises(TypeError):
        LOSSES["l2"] = mae_loss  # read-only registry
