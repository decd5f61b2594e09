"""Layers that raise inside a property fail that property, quoting their error; the rest run."""

from __future__ import annotations

import pytest
import torch
from hypothesis import Phase, settings
from torch import nn

from stabilitykit.models.spectral import SpectralConv2d
from stabilitykit.testing.blocks import (
    AgcCase,
    check_agc_within_limit,
    check_zero_layerscale_identity,
    check_zero_params_identity,
)
from stabilitykit.testing.spectral import SpectralLayerSpec, check_all, run_property

FAST = settings(database=None, max_examples=5, phases=[Phase.explicit, Phase.generate])


class OneColumnShort(SpectralConv2d):
    """A correct multiplier whose output lacks its last column."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., :-1]


class DetachedWeights(SpectralConv2d):
    """A correct multiplier whose weights never get a gradient (the graph is cut)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().forward(x)


def _spec(layer: type[nn.Module]) -> SpectralLayerSpec:
    # even grids: one column short then always mismatches the rfft2 half spectrum's width
    factory = lambda cin, cout, mx, my: layer(cin, cout, mx, my)  # noqa: E731
    return SpectralLayerSpec(factory=factory, grid_step=2)


def test_an_output_one_column_short_fails_the_properties_it_breaks_and_the_rest_run():
    names = ["output_band_limited", "real_finite_shape", "linearity"]
    with pytest.raises(AssertionError) as info:
        check_all(_spec(OneColumnShort), names=names, settings=FAST)
    message = str(info.value)
    assert message.startswith("2 spectral properties fail")
    assert "output_band_limited: the layer raised IndexError" in message
    assert "real_finite_shape: shape" in message  # ran after the one that raised
    assert "linearity" not in message  # one column short is still linear


def test_weights_without_gradient_fail_finite_gradients_quoting_the_error():
    with pytest.raises(AssertionError) as info:
        run_property(_spec(DetachedWeights), "finite_gradients", settings=FAST)
    assert "finite_gradients: the layer raised RuntimeError" in str(info.value)
    assert "does not require grad" in str(info.value)
    with pytest.raises(AssertionError, match="1 spectral properties fail"):
        check_all(_spec(DetachedWeights), names=["finite_gradients", "linearity"], settings=FAST)


def test_check_all_refuses_unknown_property_names():
    with pytest.raises(ValueError, match="unknown properties"):
        check_all(_spec(SpectralConv2d), names=["linearity", "linearty"])


class NoLayerScale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Reshaping(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight  # the wrong inner dimension raises


def test_block_checks_report_a_raising_block_as_their_failure():
    x = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    with pytest.raises(AssertionError, match="zero_layerscale_identity: the block raised Attrib"):
        check_zero_layerscale_identity(NoLayerScale(), x)
    with pytest.raises(AssertionError, match="zero_params_identity: the block raised Runtime"):
        check_zero_params_identity(Reshaping(), x)


def test_agc_checks_report_a_raising_agc_function_as_their_failure():
    def crashing(grad, param, clipping, eps, unit_dim):
        raise RuntimeError("norm of an empty unit")

    case = AgcCase(torch.ones(4, 3), torch.ones(4, 3), clipping=0.1, eps=1e-3, unit_dim=0)
    with pytest.raises(AssertionError, match="agc_within_limit: the AGC function raised Runtime"):
        check_agc_within_limit(crashing, case)
