from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stabilitykit.workloads.gridlines.probe import make_probe
from stabilitykit.workloads.gridlines.simulate import (
    Split,
    build_dataset,
    line_object_amplitude,
    object_phase,
    scan_coords,
    simulate_amplitude,
)
from stabilitykit.workloads.gridlines.spec import GridLinesSpec

SMALL = GridLinesSpec(
    N=16, object_size=64, nimgs_train=2, nimgs_test=1, train_stride=4, test_stride=8, n_lines=20
)


@pytest.fixture(scope="module")
def small():
    return build_dataset(SMALL)


@pytest.fixture(scope="module")
def small_grid2():
    return build_dataset(SMALL.replace(gridsize=2))


def _mean_counts(split, intensity_scale):
    """Mean over patterns of sum_px of the Poisson counts S² X²."""
    energy = np.square(split.diffraction).sum(axis=(1, 2), dtype=np.float64)
    return energy.mean() * intensity_scale**2


def test_full_scale_patch_counts_and_photon_budget():
    spec = GridLinesSpec()
    data = build_dataset(spec)
    assert data.train.diffraction.shape == (13_778, 64, 64, 1)
    assert data.test.diffraction.shape == (2_178, 64, 64, 1)
    assert _mean_counts(data.train, data.intensity_scale) == pytest.approx(1e9, rel=0.01)


def test_shapes_and_dtypes(small):
    n_train, n_test = 2 * 13**2, 1 * 7**2
    train, test = small.train, small.test
    assert train.diffraction.shape == (n_train, 16, 16, 1) and train.diffraction.dtype == np.float32
    assert test.diffraction.shape == (n_test, 16, 16, 1)
    assert train.coords.shape == (n_train, 1, 2) and train.coords.dtype == np.int64
    assert train.image_index.shape == (n_train,) and train.image_index.dtype == np.int64
    assert train.objects.shape == (2, 64, 64) and train.objects.dtype == np.complex64
    assert small.probe.shape == (16, 16) and small.probe.dtype == np.complex64
    assert (train.stride, test.stride) == (4, 8)
    assert train.amplitude.shape == train.phase.shape == (n_train, 16, 16, 1)
    assert train.amplitude.dtype == train.phase.dtype == np.float32
    assert np.all(np.isfinite(train.diffraction)) and np.all(train.diffraction >= 0)


def test_gridsize_2_channels_are_the_four_neighbours_at_offset_4(small_grid2):
    train = small_grid2.train
    anchors_per_axis = (64 - 16 - 4) // 4 + 1
    assert train.diffraction.shape == (2 * anchors_per_axis**2, 16, 16, 4)
    offsets = train.coords - train.coords[:, :1, :]
    np.testing.assert_array_equal(
        offsets, np.broadcast_to([[0, 0], [0, 4], [4, 0], [4, 4]], offsets.shape)
    )
    Y = train.object_patches()
    r, c = train.coords[5, 3]
    np.testing.assert_array_equal(
        Y[5, :, :, 3], train.objects[train.image_index[5], r : r + 16, c : c + 16]
    )


def test_scan_order_and_patches_of_image(small):
    train = small.train
    first = train.patches_of_image(0)
    second = train.patches_of_image(1)
    np.testing.assert_array_equal(
        np.concatenate([first, second]), np.arange(len(train.image_index))
    )
    coords = train.coords[first, 0]
    assert (
        coords[0].tolist() == [0, 0]
        and coords[1].tolist() == [0, 4]
        and coords[13].tolist() == [4, 0]
    )
    with pytest.raises(ValueError, match=r"0 <= i < 2"):
        train.patches_of_image(2)


def test_object_patches_are_the_object_windows(small):
    train = small.train
    Y = train.object_patches()
    for k in (0, 17, len(Y) - 1):
        r, c = train.coords[k, 0]
        expected = train.objects[train.image_index[k], r : r + 16, c : c + 16]
        np.testing.assert_array_equal(Y[k, :, :, 0], expected)
    np.testing.assert_array_equal(train.amplitude, np.abs(Y))


def test_norm_makes_the_mean_train_patch_maximum_one(small):
    amp = small.train.amplitude
    assert amp.max(axis=(1, 2)).mean() == pytest.approx(1.0, rel=1e-5)


def test_phase_follows_the_domain_formula_per_split(small):
    for split in (small.train, small.test):
        amplitude = np.abs(split.objects)
        np.testing.assert_allclose(np.angle(split.objects), object_phase(amplitude), atol=1e-5)
        assert np.ptp(split.phase) > 1.0  # not vacuous
    no_phase = build_dataset(SMALL.replace(phase=False))
    assert np.all(np.angle(no_phase.train.objects) == 0)
    np.testing.assert_allclose(
        np.abs(no_phase.train.objects), np.abs(small.train.objects), rtol=1e-6
    )


def test_same_spec_gives_bit_identical_arrays(small):
    again = build_dataset(SMALL)
    for a, b in ((small.train, again.train), (small.test, again.test)):
        for name in ("diffraction", "coords", "image_index", "objects"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (again.norm, again.intensity_scale, again.data_hash) == (
        small.norm,
        small.intensity_scale,
        small.data_hash,
    )


def test_train_and_test_objects_differ_and_depend_on_the_seed(small):
    assert not np.allclose(small.train.objects[0], small.test.objects[0])
    assert not np.allclose(small.train.objects[0], small.train.objects[1])
    other = build_dataset(SMALL.replace(seed=SMALL.seed + 1))
    assert not np.allclose(small.train.objects[0], other.train.objects[0])


def test_noise_free_amplitude_obeys_parseval_with_illuminated_amplitude(small):
    train = small.train
    clean = simulate_amplitude(train.object_patches(), small.probe, small.intensity_scale)
    illuminated = train.illuminated_amplitude(small.probe, small.intensity_scale)
    np.testing.assert_allclose(
        (clean.astype(np.float64) ** 2).sum(axis=(1, 2)),
        (illuminated.astype(np.float64) ** 2).sum(axis=(1, 2)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        illuminated, np.abs(train.object_patches() * small.probe[..., None]), rtol=1e-6
    )


def test_measured_amplitude_is_square_root_of_integer_counts(small):
    counts = (small.train.diffraction.astype(np.float64) * small.intensity_scale) ** 2
    exact = counts < 1e4  # float32 X resolves single counts only below ~1e5
    assert exact.mean() > 0.05
    np.testing.assert_allclose(counts[exact], np.round(counts[exact]), atol=1e-2)


def test_noise_shrinks_with_more_photons():
    errors = []
    for nphotons in (1e4, 1e8):
        data = build_dataset(SMALL.replace(nphotons=nphotons))
        clean = simulate_amplitude(data.train.object_patches(), data.probe, data.intensity_scale)
        errors.append(np.abs(data.train.diffraction - clean).mean() / clean.mean())
        assert _mean_counts(data.train, data.intensity_scale) == pytest.approx(nphotons, rel=0.01)
    assert errors[0] > 10 * errors[1]


def test_simulate_amplitude_noise_is_reproducible(small):
    Y = small.test.object_patches()
    a = simulate_amplitude(Y, small.probe, 50.0, np.random.default_rng(1))
    b = simulate_amplitude(Y, small.probe, 50.0, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="simulate_amplitude"):
        simulate_amplitude(Y[..., 0], small.probe, 50.0)


def test_line_object_statistics_match_the_study():
    amplitude = line_object_amplitude(392, 400, np.random.default_rng(0))
    assert amplitude.shape == (392, 392)
    assert 2.0 < amplitude.mean() < 4.0  # study's test image: mean 2.89, std 0.64
    assert 0.3 < amplitude.std() < 1.2


def test_scan_coords_count_formula():
    spec = GridLinesSpec()
    for stride, per_axis in ((4, 83), (10, 33)):
        coords, index = scan_coords(spec, stride, 2)
        assert coords.shape == (2 * per_axis**2, 1, 2) and index.shape == (2 * per_axis**2,)
        assert coords.max() == (per_axis - 1) * stride <= 392 - 64


@given(
    half_N=st.integers(1, 16),
    margin=st.integers(0, 40),
    gridsize=st.sampled_from([1, 2]),
    stride=st.integers(1, 12),
)
def test_scan_covers_the_object_and_stays_inside(half_N, margin, gridsize, stride):
    N = 2 * half_N
    reach = N + (4 if gridsize == 2 else 0)
    # scan_coords reads only N, gridsize and object_size: also specs too small to evaluate
    spec = SimpleNamespace(N=N, gridsize=gridsize, object_size=reach + margin)
    coords, index = scan_coords(spec, stride, 2)
    per_axis = margin // stride + 1
    assert coords.shape == (2 * per_axis**2, gridsize**2, 2)
    assert coords.min() == 0 and coords.max() <= spec.object_size - N
    assert spec.object_size - reach - coords[:, 0].max() < stride  # no stride-wide strip missed
    np.testing.assert_array_equal(np.bincount(index), [per_axis**2] * 2)


def test_split_rejects_inconsistent_arrays(small):
    t = small.test
    with pytest.raises(ValueError, match=r"Split.diffraction: expected .* float32, got .* float64"):
        Split(t.diffraction.astype(np.float64), t.coords, t.image_index, t.objects, t.stride)
    with pytest.raises(ValueError, match=r"Split\.coords"):
        Split(t.diffraction, t.coords[:-1], t.image_index, t.objects, t.stride)
    with pytest.raises(ValueError, match=r"Split\.coords: expected 16 px patches inside 64 px"):
        Split(t.diffraction, t.coords + 60, t.image_index, t.objects, t.stride)
    with pytest.raises(ValueError, match=r"Split\.image_index"):
        Split(t.diffraction, t.coords, t.image_index + 1, t.objects, t.stride)


def test_probe_is_the_scaled_probe_of_the_spec(small):
    np.testing.assert_array_equal(small.probe, make_probe(SMALL))
