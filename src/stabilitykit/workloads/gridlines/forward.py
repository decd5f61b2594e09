"""Differentiable far-field forward model (docs/gridlines.md §2)."""

from __future__ import annotations

import torch


def far_field_amplitude(obj: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """``A_hat = |fftshift(FFT2(O * P))| / N``, the amplitude in the units of the measured X.

    Shapes: ``obj`` ``(B, C, N, N)`` complex, ``probe`` ``(N, N)`` complex; returns
    ``(B, C, N, N)`` real. Matches ``simulate.simulate_amplitude`` without noise.
    """
    if obj.ndim != 4 or probe.ndim != 2 or obj.shape[-2:] != probe.shape:
        raise ValueError(
            f"far_field_amplitude: expected obj (B, C, N, N) and probe (N, N), got "
            f"{tuple(obj.shape)} and {tuple(probe.shape)}"
        )
    if not (obj.is_complex() and probe.is_complex()):
        raise ValueError(
            "far_field_amplitude: expected complex obj and probe, got "
            f"{obj.dtype} and {probe.dtype}"
        )
    spectrum = torch.fft.fft2(obj * probe, norm="ortho")
    return torch.fft.fftshift(spectrum, dim=(-2, -1)).abs()
