"""The block and AGC property checks, applied to our blocks and to ``agc_unit``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

from stabilitykit.testing.blocks import (
    AgcCase,
    BlockCase,
    agc_cases,
    block_cases,
    check_agc_keeps_small_units,
    check_agc_preserves_direction,
    check_agc_within_limit,
    check_layerscale_update_bound,
    check_zero_layerscale_identity,
    check_zero_params_identity,
    instance_norm_bound,
)


def _ptycho(case: BlockCase):
    from stabilitykit.models.blocks import PtychoBlock

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        return PtychoBlock(case.channels, case.modes_x, case.modes_y)


def _stable(case: BlockCase):
    from stabilitykit.models.blocks import StablePtychoBlock

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        return StablePtychoBlock(
            case.channels, case.modes_x, case.modes_y, layerscale_init=case.layerscale_init
        )


def _agc(grad, param, clipping, eps, unit_dim):
    from stabilitykit.train.clipping import agc_unit

    return agc_unit(grad, param, clipping=clipping, eps=eps, unit_dim=unit_dim)


@given(block_cases())
def test_ptycho_block_with_zero_params_is_identity(case: BlockCase) -> None:
    check_zero_params_identity(_ptycho(case), case.input())


@given(block_cases())
def test_stable_block_with_zero_layerscale_is_identity(case: BlockCase) -> None:
    check_zero_layerscale_identity(_stable(case), case.input())


@given(block_cases())
def test_stable_block_update_within_layerscale_bound(case: BlockCase) -> None:
    check_layerscale_update_bound(_stable(case), case.input())


def test_instance_norm_bound_is_reached_by_a_spike() -> None:
    x = torch.zeros(1, 1, 8, 12, dtype=torch.float64)
    x[0, 0, 3, 5] = 1.0
    z = torch.nn.functional.instance_norm(x, eps=0.0)
    assert float(z.abs().max()) == pytest.approx(instance_norm_bound(8, 12), rel=1e-12)


def test_update_bound_catches_a_missing_layerscale() -> None:
    from stabilitykit.models.blocks import StablePtychoBlock

    class Ungated(StablePtychoBlock):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.norm(self.update(x))

    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(AssertionError, match="layerscale_update_bound"):
        check_layerscale_update_bound(Ungated(2, 2), x)


def test_identity_check_catches_an_activation_not_zero_at_zero() -> None:
    from stabilitykit.models.blocks import PtychoBlock

    class SigmoidBlock(PtychoBlock):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.sigmoid(self.spectral(x) + self.conv(x))

    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(AssertionError, match="zero_params_identity"):
        check_zero_params_identity(SigmoidBlock(2, 2), x)


@given(agc_cases())
def test_agc_unit_obeys_each_limit(case: AgcCase) -> None:
    check_agc_within_limit(_agc, case)


@given(agc_cases())
def test_agc_unit_keeps_units_under_the_limit(case: AgcCase) -> None:
    check_agc_keeps_small_units(_agc, case)


@given(agc_cases())
def test_agc_unit_preserves_directions(case: AgcCase) -> None:
    check_agc_preserves_direction(_agc, case)


def _agc_per_tensor(grad, param, clipping, eps, unit_dim):
    """Per-tensor AGC (the original study): breaks the unit-wise limit."""
    from stabilitykit.train.clipping import agc_tensor

    return agc_tensor(grad, param, clipping=clipping, eps=eps)


def _agc_then_value_clip(grad, param, clipping, eps, unit_dim):
    """Unit-wise AGC followed by an element clamp at half the largest element: turns units."""
    clipped = _agc(grad, param, clipping, eps, unit_dim)
    bound = 0.5 * clipped.abs().amax(dim=1, keepdim=True)
    return torch.maximum(torch.minimum(clipped, bound), -bound)


def test_agc_checks_catch_wrong_clipping() -> None:
    rng = torch.Generator().manual_seed(0)
    case = AgcCase(
        grad=torch.randn(4, 3, dtype=torch.float64, generator=rng)
        * torch.tensor([[1e-6], [1e-6], [1.0], [1.0]]),
        param=torch.randn(4, 3, dtype=torch.float64, generator=rng),
        clipping=0.01,
        eps=1e-3,
        unit_dim=0,
    )
    check_agc_within_limit(_agc, case)
    with pytest.raises(AssertionError, match="agc_within_limit"):
        check_agc_within_limit(_agc_per_tensor, case)
    with pytest.raises(AssertionError, match="agc_keeps_small_units"):
        check_agc_keeps_small_units(_agc_per_tensor, case)
    with pytest.raises(AssertionError, match="agc_preserves_direction"):
        check_agc_preserves_direction(_agc_then_value_clip, case)
