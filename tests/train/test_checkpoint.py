"""Checkpoint files: a checksum over the payload, verified before torch reads it."""

import pytest
import torch

from stabilitykit.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

KEYS = ("arm_hash", "code_fingerprint", "epoch", "step", "model", "optimizer", "scheduler")
STATE = {k: 0 for k in KEYS} | {
    "model": {"w": torch.arange(4096.0)},
    "generator": torch.Generator().get_state(),
    "rng": {},
    "history": [],
    "telemetry": {},
}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "epoch-0001.pt"
    assert save_checkpoint(path, STATE) == path.stat().st_size
    return path


def test_a_checkpoint_reads_back_what_was_saved(saved):
    state = load_checkpoint(saved)
    assert torch.equal(state["model"]["w"], STATE["model"]["w"]) and state["epoch"] == 0


def test_flipped_bytes_fail_the_checksum_by_name(saved):
    data = bytearray(saved.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{saved.name}: .*checksum mismatch"):
        load_checkpoint(saved)


def test_a_cut_or_foreign_file_is_refused_by_name(saved, tmp_path):
    saved.write_bytes(saved.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"{saved.name}: .*checksum mismatch"):
        load_checkpoint(saved)
    older = tmp_path / "epoch-0002.pt"  # version 1: torch.save's bytes, no header
    torch.save({"format": "stabilitykit.checkpoint", "version": 1, **STATE}, older)
    with pytest.raises(CheckpointError, match=rf"{older.name}: not a readable checkpoint"):
        load_checkpoint(older)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "epoch-0003.pt")
