import hashlib
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from stabilitykit.workloads.gridlines import cache
from stabilitykit.workloads.gridlines.cache import (
    SIMULATOR_VERSION,
    dataset_hash,
    default_cache_dir,
    load_or_build,
)
from stabilitykit.workloads.gridlines.spec import GridLinesSpec

SPEC = GridLinesSpec(N=16, object_size=48, nimgs_train=1, nimgs_test=1, n_lines=10, test_stride=8)
ARRAYS = ("diffraction", "coords", "image_index", "objects")


def _assert_same(a, b):
    for split_a, split_b in ((a.train, b.train), (a.test, b.test)):
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(split_a, name), getattr(split_b, name))
        assert split_a.stride == split_b.stride
    np.testing.assert_array_equal(a.probe, b.probe)
    assert (a.norm, a.intensity_scale, a.data_hash) == (b.norm, b.intensity_scale, b.data_hash)


@pytest.fixture
def builds(monkeypatch):
    """Counts the calls of build_dataset made by the cache."""
    calls = []
    real = cache.build_dataset

    def counting(spec):
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(cache, "build_dataset", counting)
    return calls


def test_second_call_loads_instead_of_building(tmp_path, builds):
    first = load_or_build(SPEC, tmp_path)
    second = load_or_build(SPEC, tmp_path)
    assert len(builds) == 1
    _assert_same(first, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{first.data_hash}.lock",
        f"{first.data_hash}.npz",
    ]  # no temp files left behind


def test_loaded_data_equals_a_fresh_build(tmp_path):
    load_or_build(SPEC, tmp_path)
    _assert_same(load_or_build(SPEC, tmp_path), cache.build_dataset(SPEC))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_bytes(path):
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 8] = bytes(b ^ 0xFF for b in raw[middle : middle + 8])
    path.write_bytes(bytes(raw))


def _empty(path):
    path.write_bytes(b"")


def _old_format(path):
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["format_version"] = np.asarray(cache.FORMAT_VERSION - 1)
    np.savez(path, **arrays)


def _missing_array(path):
    with np.load(path) as npz:
        arrays = dict(npz)
    del arrays["test_objects"]
    np.savez(path, **arrays)


def _wrong_shape(path):
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["train_diffraction"] = arrays["train_diffraction"][:-1]
    arrays["train_coords"] = arrays["train_coords"][:-1]
    arrays["train_image_index"] = arrays["train_image_index"][:-1]
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "damage", [_truncate, _flip_bytes, _empty, _old_format, _missing_array, _wrong_shape]
)
def test_damaged_file_is_discarded_and_rebuilt(tmp_path, builds, caplog, damage):
    reference = load_or_build(SPEC, tmp_path)
    path = tmp_path / f"{reference.data_hash}.npz"
    damage(path)
    with caplog.at_level(logging.WARNING, logger="stabilitykit.cache"):
        rebuilt = load_or_build(SPEC, tmp_path)
    assert len(builds) == 2
    assert any("discarding cached data set" in r.message for r in caplog.records)
    _assert_same(rebuilt, reference)
    _assert_same(load_or_build(SPEC, tmp_path), reference)  # the rewritten file is sound
    assert len(builds) == 2


def test_file_of_another_spec_under_this_key_is_not_trusted(tmp_path, builds, caplog):
    other = SPEC.replace(seed=1)
    load_or_build(other, tmp_path)
    (tmp_path / f"{dataset_hash(other)}.npz").rename(tmp_path / f"{dataset_hash(SPEC)}.npz")
    with caplog.at_level(logging.WARNING, logger="stabilitykit.cache"):
        data = load_or_build(SPEC, tmp_path)
    assert len(builds) == 2
    assert "data hash" in caplog.text
    _assert_same(data, cache.build_dataset(SPEC))


# Runs in a fresh interpreter (no import of this test module, so it works under any import mode):
# waits for the go file, builds slowly through the cache, records each build in the marker.
_BUILDER = """
import hashlib, json, sys, time
from pathlib import Path
from stabilitykit.workloads.gridlines import cache
from stabilitykit.workloads.gridlines.spec import GridLinesSpec

spec = GridLinesSpec.from_dict(json.loads(sys.argv[1]))
cache_dir, marker, go = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
real = cache.build_dataset

def slow_counting(spec):
    with open(marker, "a") as f:
        f.write("built\\n")
    time.sleep(0.5)
    return real(spec)

cache.build_dataset = slow_counting
while not go.exists():
    time.sleep(0.01)
data = cache.load_or_build(spec, cache_dir)
print(hashlib.sha256(data.train.diffraction.tobytes()).hexdigest())
"""


def test_concurrent_builders_build_once(tmp_path):
    marker, go = tmp_path / "builds.txt", tmp_path / "go"
    args = [json.dumps(SPEC.to_dict()), str(tmp_path / "cache"), str(marker), str(go)]
    workers = [
        subprocess.Popen([sys.executable, "-c", _BUILDER, *args], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    go.touch()
    digests = []
    for w in workers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0
        digests.append(out.strip())
    assert marker.read_text() == "built\n"
    assert digests[0] == digests[1]
    data = cache.build_dataset(SPEC)
    assert digests[0] == hashlib.sha256(data.train.diffraction.tobytes()).hexdigest()
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == [f"{data.data_hash}.lock", f"{data.data_hash}.npz"]


def test_a_killed_writer_leaves_no_orphan_and_files_respect_the_umask(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    key = dataset_hash(SPEC)
    orphan = cache_dir / f".{key}.abc123.tmp"  # what a writer killed mid-write leaves
    orphan.write_bytes(b"half")
    old = os.umask(0o022)
    try:
        load_or_build(SPEC, cache_dir)
    finally:
        os.umask(old)
    assert not orphan.exists()
    assert (cache_dir / f"{key}.npz").stat().st_mode & 0o777 == 0o644


def test_hash_is_stable():
    assert SIMULATOR_VERSION == "1"  # bump it, and this pin, when the simulated arrays change
    assert dataset_hash(GridLinesSpec()) == "1c35c96338d85679"
    assert dataset_hash(GridLinesSpec()) == dataset_hash(
        GridLinesSpec.from_dict(GridLinesSpec().to_dict())
    )


CHANGES = {
    "N": 32,
    "gridsize": 2,
    "object_size": 256,
    "nimgs_train": 1,
    "nimgs_test": 3,
    "nphotons": 1e6,
    "train_stride": 5,
    "test_stride": 11,
    "n_lines": 399,
    "phase": False,
    "seed": 0,
}


def test_every_field_changes_the_hash():
    fields = set(GridLinesSpec().to_dict())
    assert set(CHANGES) == fields - {"probe"}
    base = dataset_hash(GridLinesSpec())
    hashes = {dataset_hash(GridLinesSpec().replace(**{k: v})) for k, v in CHANGES.items()}
    assert base not in hashes and len(hashes) == len(CHANGES)


def test_user_probe_enters_the_hash_by_content(tmp_path):
    probe = np.ones((64, 64), np.complex64)
    for name in ("a.npz", "b.npz"):
        np.savez(tmp_path / name, probe=probe)
    np.savez(tmp_path / "c.npz", probe=2 * probe)
    a, b, c = (
        dataset_hash(GridLinesSpec(probe=str(tmp_path / n))) for n in ("a.npz", "b.npz", "c.npz")
    )
    assert a == b != c
    assert a != dataset_hash(GridLinesSpec())


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("STABILITYKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("STABILITYKIT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "stabilitykit"
