import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stabilitykit.models.blocks import PtychoBlock, StablePtychoBlock
from stabilitykit.models.spectral import SpectralConv2d


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("block_type", [PtychoBlock, StablePtychoBlock])
def test_shape_and_parts(block_type, x):
    block = block_type(4, 3, 5)
    assert isinstance(block.spectral, SpectralConv2d)
    assert (block.spectral.modes_x, block.spectral.modes_y) == (3, 5)
    assert isinstance(block.conv, nn.Conv2d) and block.conv.kernel_size == (3, 3)
    assert block(x).shape == x.shape


def test_ptycho_block_formula(x):
    block = PtychoBlock(4, 4)
    expected = x + F.gelu(block.spectral(x) + block.conv(x))
    torch.testing.assert_close(block(x), expected)


def test_ptycho_block_with_zeroed_parameters_is_identity(x):
    block = PtychoBlock(4, 4)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    assert torch.equal(block(x), x)


def test_stable_block_defaults():
    block = StablePtychoBlock(6, 2)
    assert isinstance(block.norm, nn.InstanceNorm2d)
    assert block.norm.affine and block.norm.eps == 1e-5
    assert torch.equal(block.norm.weight, torch.ones(6))
    assert torch.equal(block.norm.bias, torch.zeros(6))
    assert isinstance(block.layerscale, nn.Parameter) and block.layerscale.shape == (6,)
    assert torch.allclose(block.layerscale, torch.full((6,), 1e-3))
    assert "layerscale" in dict(block.named_parameters())
    assert not isinstance(block, PtychoBlock)


def test_stable_block_formula(x):
    block = StablePtychoBlock(4, 4, layerscale_init=0.5)
    with torch.no_grad():
        block.layerscale.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    update = F.instance_norm(F.gelu(block.spectral(x) + block.conv(x)), eps=1e-5)
    expected = x + block.layerscale.view(1, -1, 1, 1) * update
    torch.testing.assert_close(block(x), expected)


def test_stable_block_with_layerscale_zero_is_identity(x):
    block = StablePtychoBlock(4, 4, layerscale_init=0.0)
    assert torch.equal(block(x), x)


def test_stable_block_leaves_identity_and_trains_its_gate(x):
    block = StablePtychoBlock(4, 4)
    y = block(x)
    assert not torch.equal(y, x)
    (y * torch.randn_like(y)).sum().backward()
    assert block.layerscale.grad.abs().min() > 0
    assert block.spectral.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("value", [-1e-3, float("nan"), float("inf")])
def test_stable_block_rejects_bad_layerscale(value):
    with pytest.raises(ValueError, match="layerscale_init must be finite and >= 0"):
        StablePtychoBlock(4, 4, layerscale_init=value)


def test_block_refuses_modes_too_large_for_grid():
    with pytest.raises(ValueError, match="modes_x <= 4"):
        PtychoBlock(2, 5)(torch.randn(1, 2, 8, 8))
