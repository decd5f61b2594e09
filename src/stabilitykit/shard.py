"""Deterministic sharding of a list of benchmarks over several machines (``--sk-shard I/N``)."""

from __future__ import annotations

from collections.abc import Sequence


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``; shards count from 1."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--sk-shard: got {text!r}; allowed: I/N with 1 <= I <= N") from None
    if not 1 <= index <= count:
        raise ValueError(f"--sk-shard: got {text!r}; allowed: I/N with 1 <= I <= N")
    return index, count


def select_shard(ids: Sequence[str], index: int, count: int) -> list[str]:
    """The ids of shard ``index`` of ``count``: round robin over the sorted ids, so every shard
    of one collection gets a disjoint share and together they cover all."""
    return [i for k, i in enumerate(sorted(ids)) if k % count == index - 1]
