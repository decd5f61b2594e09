"""Portable numerics, proved on whatever machine runs the suite: short arms of both built-in
workloads and a user-style workload must give the committed bits (losses, metrics, a hash of
the final weights). Regenerate the file only for a change meant to move numbers:
``python -m stabilitykit.testing.reproduction tests/test_reproduction.json``."""

import json
from pathlib import Path

import pytest
import torch

from stabilitykit.testing.reproduction import arms, measure

EXPECTED = json.loads(Path(__file__).with_suffix(".json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED["arms"]))
def test_the_arm_gives_the_committed_bits_on_this_machine(name, tmp_path):
    if torch.__version__ != EXPECTED["torch"]:
        pytest.skip(
            f"the values are committed for torch {EXPECTED['torch']}, not {torch.__version__}"
        )
    got = measure(arms()[name], tmp_path / "out", cache_dir=tmp_path / "cache")
    numerics = got.pop("numerics")
    if numerics["mode"] != "portable":
        pytest.skip("this session runs native numerics: there is nothing portable to prove")
    assert numerics["fingerprint"] == EXPECTED["numerics_fingerprint"], numerics
    assert got == EXPECTED["arms"][name], f"{name} on {numerics['cpu_model']}"


def test_the_committed_values_cover_every_reproduction_arm():
    assert sorted(EXPECTED["arms"]) == sorted(arms())
