import pytest
import torch
from torch import nn

from stabilitykit.models.blocks import PtychoBlock, StablePtychoBlock
from stabilitykit.models.generators import (
    CNNGenerator,
    FNOGenerator,
    HybridGenerator,
    StableHybridGenerator,
)
from stabilitykit.models.registry import count_parameters
from stabilitykit.models.spectral import SpectralConv2d

SMALL = {
    HybridGenerator: {"width": 4, "modes": 4, "fno_blocks": 3},
    StableHybridGenerator: {"width": 4, "modes": 4, "fno_blocks": 3},
    FNOGenerator: {"width": 4, "modes": 4, "fno_blocks": 2},
    CNNGenerator: {"width": 4, "levels": 3},
}


def meta_hybrid(**kwargs) -> HybridGenerator:
    """A default-width N = 64 hybrid without allocating its weights."""
    with torch.device("meta"):
        return HybridGenerator(1, 64, **kwargs)


@pytest.mark.parametrize("generator", list(SMALL))
@pytest.mark.parametrize("channels", [1, 4])  # gridsize 1 and 2
def test_amplitudes_to_complex_object(generator, channels):
    model = generator(channels, 16, **SMALL[generator])
    y = model(torch.rand(2, channels, 16, 16))
    assert y.shape == (2, channels, 16, 16)
    assert y.dtype == torch.complex64
    assert y.imag.abs().sum() > 0


@pytest.mark.parametrize("generator", list(SMALL))
def test_deterministic_under_manual_seed(generator):
    x = torch.rand(1, 1, 16, 16)
    outputs, states = [], []
    for _ in range(2):
        torch.manual_seed(123)
        model = generator(1, 16, **SMALL[generator])
        outputs.append(model(x))
        states.append(model.state_dict())
    assert torch.equal(outputs[0], outputs[1])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(124)
    assert not torch.equal(generator(1, 16, **SMALL[generator])(x), outputs[0])


@pytest.mark.parametrize("generator", list(SMALL))
def test_rejects_input_of_the_wrong_shape(generator):
    model = generator(1, 16, **SMALL[generator])
    with pytest.raises(ValueError, match=r"expected input \(B, 1, 16, 16\), got \(2, 1, 32, 32\)"):
        model(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize(
    ("blocks", "extra", "parameters"),
    [(4, 0, 20_462_818), (6, 2, 32_128_738), (8, 4, 43_794_658)],
)
def test_hybrid_depth_rule_at_n64(blocks, extra, parameters):
    description = meta_hybrid(fno_blocks=blocks).describe()
    assert description["architecture"] == "hybrid"
    assert description["levels"] == 4
    assert description["resolutions"] == [64, 32, 16, 8]
    assert description["channels"] == [32, 64, 128, 256]
    assert description["modes"] == [[12, 12], [12, 12], [8, 9], [4, 5]]
    assert description["bottleneck_modes"] == [4, 5]
    assert description["extra_blocks"] == extra
    assert description["blocks_per_level"] == [1, 1, 1, 1 + extra]
    assert description["parameters"] == parameters  # pinned: a change here is a new architecture
    assert description["spectral_implementation"] == SpectralConv2d.implementation


def test_eight_blocks_at_n64_is_a_trainable_size():
    model = meta_hybrid(fno_blocks=8)
    assert count_parameters(model) < 100_000_000
    spectral_blocks = [m for m in model.modules() if isinstance(m, PtychoBlock)]
    assert len(spectral_blocks) == 8 + 1  # one bottleneck


@pytest.mark.parametrize(
    ("grid", "kwargs", "resolutions", "channels", "modes", "bottleneck"),
    [
        (64, {"max_channels": 64}, [64, 32, 16, 8], [32, 64, 64, 64], None, None),
        (64, {"min_resolution": 16}, [64, 32, 16], [32, 64, 128], None, None),
        (48, {"fno_blocks": 8}, [48, 24, 12], [32, 64, 128], [[12, 12], [12, 12], [6, 7]], [6, 6]),
        (32, {"fno_blocks": 2, "modes": 6}, [32, 16], [32, 64], [[6, 6], [6, 6]], [3, 3]),
        (16, {"fno_blocks": 1, "modes": 1}, [16], [32], [[1, 1]], [1, 1]),
        (16, {"min_resolution": 2, "modes": 8}, [16, 8, 4, 2], None,
         [[8, 8], [4, 5], [2, 3], [1, 2]], [1, 2]),
    ],
)  # fmt: skip
def test_hybrid_layout(grid, kwargs, resolutions, channels, modes, bottleneck):
    layout = HybridGenerator.plan(grid, **{**_hybrid_defaults(), **kwargs})
    assert list(layout.resolutions) == resolutions
    if channels is not None:
        assert list(layout.channels) == channels
    if modes is not None:
        assert [list(m) for m in layout.modes] == modes
    if bottleneck is not None:
        assert list(layout.bottleneck_modes) == bottleneck


def _hybrid_defaults() -> dict:
    return {"width": 32, "modes": 12, "fno_blocks": 4, "min_resolution": 8, "max_channels": None}


def test_describe_matches_the_built_modules():
    model = HybridGenerator(1, 32, width=4, modes=6, fno_blocks=5, min_resolution=8)
    d = model.describe()
    assert d["resolutions"] == [32, 16, 8] and d["channels"] == [4, 8, 16]
    assert d["extra_blocks"] == 2 and len(model.coarse) == 2
    assert d["parameters"] == count_parameters(model)
    assert [[b.spectral.modes_x, b.spectral.modes_y] for b in model.encoder] == d["modes"]
    assert [model.bottleneck.spectral.modes_x, model.bottleneck.spectral.modes_y] == [3, 3]
    assert d["hyperparameters"]["fno_blocks"] == 5


@pytest.mark.parametrize(
    ("generator", "blocks"),
    [(HybridGenerator, 4), (HybridGenerator, 6), (HybridGenerator, 8), (StableHybridGenerator, 8)],
)
def test_depths_train_with_finite_gradients(generator, blocks):
    torch.manual_seed(0)
    model = generator(1, 64, width=8, fno_blocks=blocks)
    assert model.describe()["resolutions"] == [64, 32, 16, 8]
    y = model(torch.rand(2, 1, 64, 64))
    (y.abs() ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_stable_hybrid_uses_only_stable_blocks():
    model = StableHybridGenerator(1, 16, width=4, modes=4, fno_blocks=3, layerscale_init=0.25)
    assert not any(isinstance(m, PtychoBlock) for m in model.modules())
    stable = [m for m in model.modules() if isinstance(m, StablePtychoBlock)]
    assert len(stable) == 3 + 1
    assert all(torch.all(b.layerscale == 0.25) for b in stable)
    assert isinstance(model, HybridGenerator)
    assert model.describe()["architecture"] == "stable_hybrid"
    assert model.describe()["hyperparameters"]["layerscale_init"] == 0.25


def test_fno_keeps_full_resolution():
    model = FNOGenerator(2, 16, width=4, modes=5, fno_blocks=3)
    blocks = [m for m in model.modules() if isinstance(m, PtychoBlock)]
    assert len(blocks) == 3
    assert all((b.spectral.modes_x, b.spectral.modes_y) == (5, 5) for b in blocks)
    d = model.describe()
    assert d["levels"] == 1 and d["resolutions"] == [16] and d["channels"] == [4]
    assert d["blocks_per_level"] == [3] and d["extra_blocks"] == 2


def test_cnn_has_no_spectral_layer():
    model = CNNGenerator(1, 16, width=4, levels=3)
    assert model.spectral_implementation is None
    assert not any(isinstance(m, SpectralConv2d) for m in model.modules())
    assert all(isinstance(m, nn.Module) for m in model.modules())
    d = model.describe()
    assert d["resolutions"] == [16, 8, 4] and d["channels"] == [4, 8, 16] and d["modes"] == []
