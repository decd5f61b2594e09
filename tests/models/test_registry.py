import re

import pytest
import torch

from stabilitykit.models import generators
from stabilitykit.models.registry import (
    ARCHITECTURES,
    architecture_defaults,
    build_model,
    count_parameters,
    validate_architecture,
)

SMALL = {
    "hybrid": {"width": 4, "modes": 4, "fno_blocks": 2},
    "stable_hybrid": {"width": 4, "modes": 4, "fno_blocks": 2},
    "fno": {"width": 4, "modes": 4, "fno_blocks": 2},
    "cnn": {"width": 4, "levels": 2},
}


def test_architecture_names():
    assert ARCHITECTURES == ("hybrid", "stable_hybrid", "fno", "cnn")


def test_defaults():
    hybrid = {"width": 32, "modes": 12, "fno_blocks": 4, "min_resolution": 8, "max_channels": None}
    assert architecture_defaults("hybrid") == hybrid
    assert architecture_defaults("stable_hybrid") == {**hybrid, "layerscale_init": 1e-3}
    assert architecture_defaults("fno") == {"width": 32, "modes": 12, "fno_blocks": 4}
    assert architecture_defaults("cnn") == {"width": 32, "levels": 4}
    architecture_defaults("fno")["width"] = 1
    assert architecture_defaults("fno")["width"] == 32


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("hybrid", generators.HybridGenerator),
        ("stable_hybrid", generators.StableHybridGenerator),
        ("fno", generators.FNOGenerator),
        ("cnn", generators.CNNGenerator),
    ],
)
def test_build_model(name, cls):
    model = build_model(name, in_channels=4, grid=16, **SMALL[name])
    assert type(model) is cls
    y = model(torch.rand(1, 4, 16, 16))
    assert y.shape == (1, 4, 16, 16) and y.dtype == torch.complex64
    description = model.describe()
    assert description["architecture"] == name
    assert description["parameters"] == count_parameters(model)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert {k: description["hyperparameters"][k] for k in SMALL[name]} == SMALL[name]


def test_spectral_implementation_is_recorded():
    for name in ARCHITECTURES:
        model = build_model(name, in_channels=1, grid=16, **SMALL[name])
        expected = None if name == "cnn" else "stabilitykit.SpectralConv2d"
        assert model.spectral_implementation == expected


def test_unknown_architecture_lists_the_known_ones():
    message = "unknown architecture 'unet'; expected one of " + re.escape(str(ARCHITECTURES))
    with pytest.raises(ValueError, match=message):
        build_model("unet", in_channels=1, grid=64)
    with pytest.raises(ValueError, match=message):
        validate_architecture("unet", 64)
    with pytest.raises(ValueError, match=message):
        architecture_defaults("unet")


def test_unknown_keyword_lists_the_allowed_ones():
    with pytest.raises(ValueError) as info:
        build_model("fno", in_channels=1, grid=64, widht=8, levels=2)
    assert str(info.value) == (
        "fno: unknown keyword argument(s) ['levels', 'widht']; "
        "allowed: ['fno_blocks', 'modes', 'width']"
    )


BAD = [
    ("hybrid", 64, {"width": 0}, "hybrid: width must be a positive int, got 0"),
    ("hybrid", 64, {"modes": -3}, "hybrid: modes must be a positive int, got -3"),
    ("stable_hybrid", 64, {"fno_blocks": 0}, "stable_hybrid: fno_blocks must be a positive int"),
    ("fno", 0, {}, "fno: grid must be a positive int, got 0"),
    ("cnn", 64, {"levels": 0}, "cnn: levels must be a positive int, got 0"),
    ("cnn", 64, {"width": 2.5}, "cnn: width must be a positive int, got 2.5"),
    ("fno", 16, {"modes": 9}, "fno: modes=9 does not fit grid=16; allowed: modes <= 8"),
    ("hybrid", 16, {"modes": 12}, "hybrid: modes=12 does not fit grid=16; allowed: modes <= 8"),
    ("hybrid", 50, {}, "hybrid: grid=50 cannot be halved 2 times"),
    ("cnn", 20, {"levels": 4}, "cnn: grid=20 cannot be halved 3 times"),
    ("hybrid", 64, {"min_resolution": 1}, "hybrid: min_resolution must be an int >= 2, got 1"),
    ("hybrid", 16, {"min_resolution": 32, "modes": 4},
     "hybrid: min_resolution=32 exceeds grid=16; allowed: 2 <= min_resolution <= grid"),
    ("hybrid", 64, {"max_channels": 16},
     "hybrid: max_channels must be None or an int >= width=32, got 16"),
    ("stable_hybrid", 64, {"layerscale_init": -1.0},
     "stable_hybrid: layerscale_init must be a finite number >= 0, got -1.0"),
    ("stable_hybrid", 64, {"layerscale_init": float("nan")}, "layerscale_init must be a finite"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "grid", "kwargs", "message"), BAD)
def test_build_and_validate_reject_bad_settings_alike(name, grid, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as from_validate:
        validate_architecture(name, grid, **kwargs)
    with pytest.raises(ValueError) as from_build:
        build_model(name, in_channels=1, grid=grid, **kwargs)
    assert str(from_build.value) == str(from_validate.value)


def test_grid_divisibility_message_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"3 levels from fno_blocks=4.*allowed: a multiple of 4"):
        validate_architecture("hybrid", 50)


@pytest.mark.parametrize("in_channels", [0, -1, 1.0])
def test_rejects_bad_in_channels(in_channels):
    message = f"hybrid: in_channels must be a positive int, got {in_channels!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model("hybrid", in_channels=in_channels, grid=64)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_architecture("hybrid", 64, in_channels=in_channels)


def test_validate_allocates_nothing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validate_architecture built a layer")

    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)
    for name in ARCHITECTURES:
        validate_architecture(name, 64, in_channels=4)
    validate_architecture("hybrid", 64, width=4096, fno_blocks=8)
