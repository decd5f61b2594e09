"""Reusable property packs (hypothesis) for users' own tests.

- :mod:`stabilitykit.testing.spectral`: is a 2-D Fourier layer a correct Fourier multiplier?
- :mod:`stabilitykit.testing.blocks`: residual spectral blocks and unit-wise AGC.

With ``stabilitykit.plugin``, the only library modules that import test tooling (hypothesis);
import them explicitly, nothing is imported here.
"""
