"""Failure rates over seeds: how many runs of an arm failed, and what that rules out."""

from __future__ import annotations

import math


def wilson_interval(failures: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``failures / n`` (Wilson 1927).

    ``z = 1.96`` gives 95 %. With ``n = 0`` nothing is known: ``(0.0, 1.0)``.
    """
    if n < 0 or not 0 <= failures <= n:
        raise ValueError(f"wilson_interval: expected 0 <= failures <= n, got {failures} and {n}")
    if n == 0:
        return 0.0, 1.0
    p = failures / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    low = 0.0 if failures == 0 else max(0.0, centre - half)
    high = 1.0 if failures == n else min(1.0, centre + half)
    return low, high
