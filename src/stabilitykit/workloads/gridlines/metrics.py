"""Named image metrics for a reconstructed object against its ground truth (docs/gridlines.md §5).

Amplitude is compared after a global rescale (the physics does not fix the object's scale), phase
after removing a least-squares plane from each image; FRC gives a resolution. A phase that carries
no information (turned off, or constant) yields ``None`` metrics, never good-looking numbers
(docs/gridlines.md §7, lesson 3).
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

from stabilitykit.phase import remove_plane

PHASE_METRICS = ("phase_mae", "phase_mse", "phase_psnr", "phase_ssim", "phase_frc50")

_EMPTY_RING = 1e-20  # relative ring energy below which frc_curve treats a ring as empty


def rescale_amplitude(pred_amp: np.ndarray, gt_amp: np.ndarray) -> np.ndarray:
    """``pred_amp * mean(gt_amp) / mean(pred_amp)``; unchanged when ``mean(pred_amp)`` is 0."""
    pred_mean = float(np.mean(pred_amp))
    return pred_amp * (float(np.mean(gt_amp)) / pred_mean) if pred_mean else pred_amp


def psnr(mse: float, data_range: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / mse)`` in dB; ``inf`` when mse is 0."""
    return 10.0 * math.log10(data_range**2 / mse) if mse > 0 else math.inf


def amplitude_metrics(pred_amp: np.ndarray, gt_amp: np.ndarray) -> dict[str, float]:
    """MAE, MSE, PSNR and SSIM of the rescaled prediction (:func:`rescale_amplitude`).

    PSNR and SSIM (``skimage.metrics.structural_similarity``, Wang et al. 2004) use
    ``data_range = gt.max() - gt.min()``. Keys ``amp_mae, amp_mse, amp_psnr, amp_ssim``.
    """
    pred_amp, gt_amp = _pair("amplitude_metrics", pred_amp, gt_amp, real=True)
    data_range = _data_range(gt_amp)
    pred_amp = rescale_amplitude(pred_amp, gt_amp)
    mse = float(np.mean((pred_amp - gt_amp) ** 2))
    return {
        "amp_mae": float(np.mean(np.abs(pred_amp - gt_amp))),
        "amp_mse": mse,
        "amp_psnr": psnr(mse, data_range),
        "amp_ssim": float(structural_similarity(gt_amp, pred_amp, data_range=data_range)),
    }


def phase_metrics(pred_phase: np.ndarray, gt_phase: np.ndarray) -> dict[str, float]:
    """MAE, MSE, PSNR and SSIM of the phases after :func:`remove_plane` on each.

    MAE, MSE and PSNR are of ``(phi + pi) / (2 pi)``, i.e. in units of a full turn, and PSNR
    uses ``data_range = 1`` (a turn). SSIM compares the plane-removed phases in radians with
    ``data_range`` = the plane-removed truth's own ``max - min``, as the amplitude SSIM does.
    A fixed range of a full turn would not discriminate: the object phase spans about
    ±0.3 rad after plane removal, a tenth of a turn, so SSIM's constants ``C1 = (0.01 L)^2`` and
    ``C2 = (0.03 L)^2`` swamp its variances. Measured with the range of a turn: visibly wrong
    ci-scale phases scored 0.96-0.99, and a flat phase 0.73 against a ±0.3 rad line pattern
    (0.003 with the truth's range; tests/workloads/gridlines/test_metrics.py). Raises
    ``ValueError`` for a flat truth phase (``evaluate_object`` reports that one as vacuous).
    Keys ``phase_mae, phase_mse, phase_psnr, phase_ssim``.
    """
    pred_phase, gt_phase = _pair("phase_metrics", pred_phase, gt_phase, real=True)
    pred_rad, gt_rad = remove_plane(pred_phase), remove_plane(gt_phase)
    data_range = _data_range(gt_rad)
    pred = (pred_rad + np.pi) / (2 * np.pi)
    gt = (gt_rad + np.pi) / (2 * np.pi)
    mse = float(np.mean((pred - gt) ** 2))
    return {
        "phase_mae": float(np.mean(np.abs(pred - gt))),
        "phase_mse": mse,
        "phase_psnr": psnr(mse, 1.0),
        "phase_ssim": float(structural_similarity(gt_rad, pred_rad, data_range=data_range)),
    }


def frc_curve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fourier ring correlation of two images, one value per integer ring.

    ``FRC(r) = Re sum_ring F_a conj(F_b) / sqrt(sum_ring |F_a|^2 sum_ring |F_b|^2)`` (Saxton &
    Baumeister 1982; van Heel 1987). Ring ``r`` holds the frequencies whose radius, in cycles per
    the shorter side, rounds to ``r``; rings ``0 .. min(H, W) // 2 - 1`` (fully sampled) are
    returned. Real or complex images, no window.

    A ring is empty in an image when its energy is at most ``1e-20`` of that image's total
    (round-off, e.g. the DC ring after plane removal): empty in one image only scores 0, empty
    in both scores 1 (they agree: nothing there).
    """
    a, b = _pair("frc_curve", a, b, real=False)
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    height, width = a.shape
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    rings = np.rint(np.hypot(fy, fx) * min(height, width)).astype(np.int64).ravel()
    n_rings = min(height, width) // 2
    keep = rings < n_rings
    rings = rings[keep]

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(rings, weights=values.ravel()[keep], minlength=n_rings)

    energy_a, energy_b = ring_sum(np.abs(fa) ** 2), ring_sum(np.abs(fb) ** 2)
    empty_a = energy_a <= _EMPTY_RING * np.sum(np.abs(fa) ** 2)
    empty_b = energy_b <= _EMPTY_RING * np.sum(np.abs(fb) ** 2)
    curve = ring_sum(np.real(fa * np.conj(fb))) / np.sqrt(
        np.where(empty_a | empty_b, 1.0, energy_a * energy_b)
    )
    curve[empty_a != empty_b] = 0.0
    curve[empty_a & empty_b] = 1.0
    return curve


def frc50(curve: np.ndarray) -> int | None:
    """First ring where ``curve < 0.5`` (a NaN counts as a drop); None if it never drops."""
    drops = np.flatnonzero(~(np.asarray(curve) >= 0.5))
    return int(drops[0]) if drops.size else None


def constant_image_ssim(gt_amp: np.ndarray) -> float:
    """SSIM of the constant image ``mean(gt_amp)`` against ``gt_amp``: the collapse floor.

    A collapsed model predicts a constant amplitude; after :func:`rescale_amplitude` that is
    exactly this image, so its ``amp_ssim`` sits here (0.277 on the study's test image, §6).
    """
    gt_amp = np.asarray(gt_amp, dtype=float)
    constant = np.full_like(gt_amp, gt_amp.mean())
    return float(structural_similarity(gt_amp, constant, data_range=_data_range(gt_amp)))


def evaluate_object(
    pred: np.ndarray, gt: np.ndarray, *, phase_enabled: bool = True, vacuous_tol: float = 1e-3
) -> dict[str, float | int | bool | None]:
    """All named metrics of a complex object against its ground truth over the same region.

    Args:
        pred, gt: 2-D complex images, already stitched, cut and trimmed alike.
        phase_enabled: False when the data set had no phase: the phase metrics are vacuous.
        vacuous_tol: the phase is also vacuous when the plane-removed ``angle(gt)`` has a std at
            or below this (radians); SSIM on such a phase only measures its constants C1, C2.

    Returns:
        ``amp_mae, amp_mse, amp_psnr, amp_ssim, amp_frc50, amp_ssim_floor``
        (:func:`constant_image_ssim`), ``pred_amp_std`` (std of the rescaled predicted amplitude,
        ~0 on collapse), the ``phase_*`` metrics of :data:`PHASE_METRICS` and
        ``phase_vacuous``; when vacuous, every ``phase_*`` metric is None.
    """
    pred, gt = _pair("evaluate_object", pred, gt, real=False)
    pred_amp, gt_amp = np.abs(pred), np.abs(gt)
    out: dict[str, float | int | bool | None] = dict(amplitude_metrics(pred_amp, gt_amp))
    out["amp_frc50"] = frc50(frc_curve(pred_amp, gt_amp))
    out["amp_ssim_floor"] = constant_image_ssim(gt_amp)
    out["pred_amp_std"] = float(np.std(rescale_amplitude(pred_amp, gt_amp)))
    gt_phase = remove_plane(np.angle(gt))
    vacuous = not phase_enabled or float(np.std(gt_phase)) <= vacuous_tol
    if vacuous:
        out.update(dict.fromkeys(PHASE_METRICS))
    else:
        out.update(phase_metrics(np.angle(pred), np.angle(gt)))
        out["phase_frc50"] = frc50(frc_curve(remove_plane(np.angle(pred)), gt_phase))
    out["phase_vacuous"] = vacuous
    return out


def _pair(where: str, a: np.ndarray, b: np.ndarray, *, real: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both as arrays of one 2-D shape (float when ``real``), or a ValueError naming the shapes."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{where}: expected two 2-D images of one shape, got {a.shape} and {b.shape}"
        )
    if real:
        if np.iscomplexobj(a) or np.iscomplexobj(b):
            raise ValueError(f"{where}: expected real images, got {a.dtype} and {b.dtype}")
        return a.astype(float), b.astype(float)
    return a, b


def _data_range(gt: np.ndarray) -> float:
    data_range = float(np.max(gt) - np.min(gt))
    if not data_range > 0:
        raise ValueError(f"expected a ground truth that varies (data_range > 0), got {data_range}")
    return data_range
