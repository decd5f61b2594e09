"""stabilitykit: training-stability studies of neural operators as pytest benchmarks."""

__version__ = "0.1.0"
