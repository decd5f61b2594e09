"""Models: the spectral layer, the residual blocks, the generators and their registry."""

from stabilitykit.models.blocks import PtychoBlock, StablePtychoBlock
from stabilitykit.models.generators import (
    CNNGenerator,
    FNOGenerator,
    HybridGenerator,
    StableHybridGenerator,
)
from stabilitykit.models.layout import Layout
from stabilitykit.models.registry import (
    ARCHITECTURES,
    architecture_defaults,
    build_model,
    count_parameters,
    validate_architecture,
)
from stabilitykit.models.spectral import SpectralConv2d

__all__ = [
    "ARCHITECTURES",
    "CNNGenerator",
    "FNOGenerator",
    "HybridGenerator",
    "Layout",
    "PtychoBlock",
    "SpectralConv2d",
    "StableHybridGenerator",
    "StablePtychoBlock",
    "architecture_defaults",
    "build_model",
    "count_parameters",
    "validate_architecture",
]
