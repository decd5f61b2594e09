import numpy as np
import pytest

from stabilitykit.workloads.gridlines.probe import (
    ideal_disk_probe,
    load_probe,
    make_probe,
    probe_mask,
    scale_probe,
)
from stabilitykit.workloads.gridlines.spec import GridLinesSpec


def test_ideal_disk_at_64_has_the_documented_radius_and_floor():
    probe = ideal_disk_probe(64)
    assert probe.shape == (64, 64) and probe.dtype == np.complex64
    assert np.all(probe.imag == 0)
    amp = probe.real
    radius = 64 / (0.7 * np.pi**2) * np.sqrt(2 * np.log(2))  # ≈ 10.9 px
    assert np.count_nonzero(amp > 0.5) == pytest.approx(np.pi * radius**2, rel=0.05)
    assert amp.max() == pytest.approx(1.0, abs=1e-3)  # sigma-1 blur keeps the plateau
    assert amp.min() >= 1e-9 * (1 - 1e-6)
    np.testing.assert_array_equal(amp, amp[::-1, ::-1])  # centred at (N-1)/2
    np.testing.assert_array_equal(amp, amp.T)


def test_scale_probe_sets_masked_mean_over_all_pixels_to_one_tenth():
    for N in (16, 64):
        scaled = scale_probe(ideal_disk_probe(N))
        assert scaled.dtype == np.complex64
        assert np.mean(np.abs(scaled) * probe_mask(N)) == pytest.approx(0.1, rel=1e-6)


def test_scale_probe_ignores_the_input_scale_and_keeps_the_phase():
    rng = np.random.default_rng(0)
    raw = (rng.random((16, 16)) * np.exp(1j * rng.random((16, 16)))).astype(np.complex64)
    np.testing.assert_allclose(scale_probe(7.5 * raw), scale_probe(raw), rtol=1e-6)
    np.testing.assert_allclose(np.angle(scale_probe(raw)), np.angle(raw), atol=1e-6)


def test_scale_probe_rejects_a_probe_dark_inside_the_mask():
    probe = np.zeros((16, 16), np.complex64)
    probe[0, 0] = 1.0  # outside r < N/4
    with pytest.raises(ValueError, match="inside r < N/4"):
        scale_probe(probe)


def test_load_probe_returns_the_stored_array(tmp_path):
    probe = ideal_disk_probe(16) * np.exp(0.3j)
    np.savez(tmp_path / "p.npz", p=probe)
    np.testing.assert_allclose(load_probe(tmp_path / "p.npz", 16), probe)


def _save(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"a": np.ones((16, 16), np.complex64), "b": np.ones(3)}, "exactly one array"),
        ({}, "exactly one array, got 0"),
        ({"a": np.ones((16, 16))}, "complex array, got dtype float64"),
        ({"a": np.ones((16, 8), np.complex64)}, r"shape \(16, 16\), got \(16, 8\)"),
        ({"a": np.full((16, 16), np.nan, np.complex64)}, "non-finite"),
        ({"a": np.zeros((16, 16), np.complex64)}, "zero everywhere"),
    ],
)
def test_load_probe_names_file_and_problem(tmp_path, arrays, problem):
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=problem) as err:
        load_probe(path, 16)
    assert "bad.npz" in str(err.value)


def test_load_probe_rejects_unreadable_and_non_npz_files(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"broken\.npz.*cannot read"):
        load_probe(path, 16)
    with pytest.raises(ValueError, match=r"probe\.npy.*expected an \.npz"):
        load_probe(tmp_path / "probe.npy", 16)


def test_make_probe_scales_ideal_disk_and_user_probe_alike(tmp_path):
    spec = GridLinesSpec(N=16, object_size=64)
    np.testing.assert_array_equal(make_probe(spec), scale_probe(ideal_disk_probe(16)))
    raw = 3 * ideal_disk_probe(16) * np.exp(1j)
    np.savez(tmp_path / "user.npz", raw)
    user = make_probe(spec.replace(probe=str(tmp_path / "user.npz")))
    np.testing.assert_allclose(user, scale_probe(raw), rtol=1e-6)
