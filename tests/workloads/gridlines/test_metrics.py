import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from stabilitykit.workloads.gridlines.metrics import (
    PHASE_METRICS,
    amplitude_metrics,
    constant_image_ssim,
    evaluate_object,
    frc50,
    frc_curve,
    phase_metrics,
    remove_plane,
)

SIZE = 48


def _amplitude(seed: int = 0) -> np.ndarray:
    """A smooth positive test amplitude with structure at several scales."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE] / SIZE
    return 2.0 + np.sin(6 * x) * np.cos(4 * y) + 0.3 * rng.normal(size=(SIZE, SIZE))


def _phase(seed: int = 0) -> np.ndarray:
    return np.pi / 2 * np.tanh(_amplitude(seed) - 2.0)


def _plane(a: float, b: float, c: float) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE].astype(float)
    return a * x + b * y + c


def test_identical_amplitudes_are_perfect():
    gt = _amplitude()
    metrics = amplitude_metrics(gt, gt)
    assert metrics["amp_mae"] == 0.0 and metrics["amp_mse"] == 0.0
    assert metrics["amp_ssim"] == pytest.approx(1.0)
    assert metrics["amp_psnr"] == math.inf


def test_scaled_prediction_is_rescaled_to_perfect():
    gt = _amplitude()
    metrics = amplitude_metrics(7.5 * gt, gt)
    assert metrics["amp_mae"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["amp_ssim"] == pytest.approx(1.0)


def test_amplitude_metrics_by_hand():
    gt = _amplitude()
    pred = gt + 0.1 * np.sign(np.random.default_rng(2).normal(size=gt.shape))
    pred = pred - pred.mean() + gt.mean()  # same mean: the rescale is the identity
    metrics = amplitude_metrics(pred, gt)
    data_range = gt.max() - gt.min()
    assert metrics["amp_mae"] == pytest.approx(np.mean(np.abs(pred - gt)))
    assert metrics["amp_mse"] == pytest.approx(np.mean((pred - gt) ** 2))
    assert metrics["amp_psnr"] == pytest.approx(10 * np.log10(data_range**2 / metrics["amp_mse"]))
    assert metrics["amp_ssim"] == pytest.approx(
        structural_similarity(gt, pred, data_range=data_range)
    )
    assert metrics["amp_ssim"] < 0.99


def test_remove_plane_kills_a_pure_plane_and_keeps_the_rest():
    assert np.abs(remove_plane(_plane(0.03, -0.07, 1.5))).max() < 1e-12
    phi = _phase()
    flat = remove_plane(phi)
    np.testing.assert_allclose(remove_plane(phi + _plane(0.02, 0.05, -1.0)), flat, atol=1e-12)
    y, x = np.mgrid[:SIZE, :SIZE]
    design = np.stack([x.ravel(), y.ravel(), np.ones(x.size)], axis=1)
    coef, *_ = np.linalg.lstsq(design, phi.ravel(), rcond=None)
    np.testing.assert_allclose(flat, phi - (design @ coef).reshape(phi.shape), atol=1e-12)


def test_phase_metrics_ignore_planes_and_offsets():
    gt = _phase()
    metrics = phase_metrics(gt + _plane(0.01, -0.02, 0.4), gt)
    assert metrics["phase_mae"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["phase_ssim"] == pytest.approx(1.0)
    worse = phase_metrics(_phase(seed=5), gt)
    assert worse["phase_ssim"] < 0.9 and worse["phase_mae"] > 0.01


def test_constant_image_ssim_equals_ssim_of_the_mean_filled_image():
    gt = _amplitude()
    floor = constant_image_ssim(gt)
    mean_filled = np.full_like(gt, gt.mean())
    assert floor == pytest.approx(
        structural_similarity(gt, mean_filled, data_range=gt.max() - gt.min())
    )
    # a collapsed prediction (any constant) sits exactly at the floor after the rescale
    assert amplitude_metrics(np.full_like(gt, 0.3), gt)["amp_ssim"] == pytest.approx(floor)
    assert floor < 0.5


def test_frc_of_an_image_with_itself_is_one():
    for image in (_amplitude(), _amplitude() * np.exp(1j * _phase())):
        curve = frc_curve(image, image)
        assert curve.shape == (SIZE // 2,)
        np.testing.assert_allclose(curve, 1.0)
        assert frc50(curve) is None


def test_frc_of_independent_noise_is_low():
    rng = np.random.default_rng(3)
    curve = frc_curve(rng.normal(size=(64, 64)), rng.normal(size=(64, 64)))
    assert np.abs(curve[4:]).mean() < 0.2
    assert frc50(curve) is not None


def test_frc_rings_empty_in_one_image_score_zero_and_in_both_score_one():
    gt = _amplitude()
    curve = frc_curve(np.full_like(gt, 2.0), gt)  # a constant has energy at DC only
    assert curve[0] == pytest.approx(1.0)
    assert np.all(curve[1:] == 0.0)
    # zero mean after plane removal: the DC ring is empty in both
    assert frc_curve(remove_plane(_phase(seed=1)), remove_plane(_phase()))[0] == 1.0


def test_frc50_on_a_synthetic_curve():
    assert frc50(np.array([1.0, 0.9, 0.7, 0.5, 0.49, 0.8])) == 4
    assert frc50(np.array([0.3, 0.9])) == 0
    assert frc50(np.array([1.0, 0.6])) is None
    assert frc50(np.array([1.0, np.nan, 0.9])) == 1


def test_evaluate_object_reports_every_metric_by_name():
    gt = _amplitude() * np.exp(1j * _phase())
    pred = 3.0 * _amplitude() * np.exp(1j * (_phase() + 0.7))  # scale and phase offset only
    metrics = evaluate_object(pred, gt)
    assert metrics["phase_vacuous"] is False
    assert metrics["amp_ssim"] == pytest.approx(1.0)
    assert metrics["phase_ssim"] == pytest.approx(1.0)
    assert metrics["amp_frc50"] is None and metrics["phase_frc50"] is None
    assert metrics["amp_ssim_floor"] == pytest.approx(constant_image_ssim(np.abs(gt)))
    assert metrics["pred_amp_std"] == pytest.approx(np.abs(gt).std())
    expected = {f"amp_{m}" for m in ("mae", "mse", "psnr", "ssim", "frc50", "ssim_floor")}
    assert set(metrics) == expected | set(PHASE_METRICS) | {"pred_amp_std", "phase_vacuous"}


def test_collapsed_prediction_has_zero_std_and_sits_at_the_floor():
    gt = _amplitude() * np.exp(1j * _phase())
    metrics = evaluate_object(np.full(gt.shape, 0.2 + 0j), gt)
    assert metrics["pred_amp_std"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["amp_ssim"] == pytest.approx(metrics["amp_ssim_floor"])
    assert metrics["amp_frc50"] == 1  # nothing beyond the DC ring


@pytest.mark.parametrize(
    ("gt_phase", "phase_enabled"),
    [(np.zeros((SIZE, SIZE)), True), (_plane(0.01, 0.02, 0.3), True), (_phase(), False)],
)
def test_vacuous_phase_gives_none_not_good_numbers(gt_phase, phase_enabled):
    gt = _amplitude() * np.exp(1j * gt_phase)
    metrics = evaluate_object(gt, gt, phase_enabled=phase_enabled)
    assert metrics["phase_vacuous"] is True
    assert all(metrics[key] is None for key in PHASE_METRICS)
    assert metrics["amp_ssim"] == pytest.approx(1.0)


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match=r"two 2-D images of one shape, got \(4, 4\) and \(4, 5\)"):
        amplitude_metrics(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="expected real images, got complex128"):
        phase_metrics(np.ones((8, 8), dtype=complex), np.ones((8, 8)))
    with pytest.raises(ValueError, match="expected a ground truth that varies"):
        amplitude_metrics(np.ones((8, 8)), np.ones((8, 8)))


def _line_phase() -> np.ndarray:
    """A line-pattern truth phase spanning exactly ±0.3 rad (the ci-scale phase's span)."""
    from scipy.ndimage import gaussian_filter

    lines = np.zeros((64, 64))
    lines[:, ::8] = 1.0
    lines[::11, :] = 1.0
    lines = gaussian_filter(lines, 1.0)
    return 0.6 * (lines - lines.min()) / (lines.max() - lines.min()) - 0.3


def test_phase_ssim_separates_a_flat_phase_from_a_close_one():
    truth = _line_phase()
    flat = np.zeros_like(truth)
    close = truth + 0.02 * np.random.default_rng(4).normal(size=truth.shape)
    flat_ssim = phase_metrics(flat, truth)["phase_ssim"]
    close_ssim = phase_metrics(close, truth)["phase_ssim"]
    assert flat_ssim < 0.1 and close_ssim > 0.9
    gt = remove_plane(truth)
    expected = structural_similarity(gt, remove_plane(close), data_range=gt.max() - gt.min())
    assert close_ssim == pytest.approx(expected)

    def range_one(pred):  # the former score: a data range of one turn
        turn = lambda phi: (remove_plane(phi) + np.pi) / (2 * np.pi)  # noqa: E731
        return structural_similarity(turn(truth), turn(pred), data_range=1.0)

    assert range_one(flat) > 0.7  # the flat phase looked fine
    assert close_ssim - flat_ssim > 3 * (range_one(close) - range_one(flat))


def test_phase_metrics_need_a_truth_phase_that_varies():
    with pytest.raises(ValueError, match="expected a ground truth that varies"):
        phase_metrics(_line_phase(), np.zeros((64, 64)))
