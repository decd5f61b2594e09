import dataclasses
import json

import numpy as np
import pytest

from stabilitykit.workloads.gridlines.spec import GridLinesSpec


def test_defaults_are_the_study_configuration():
    spec = GridLinesSpec()
    assert (spec.N, spec.gridsize, spec.object_size) == (64, 1, 392)
    assert (spec.nimgs_train, spec.nimgs_test, spec.nphotons) == (2, 2, 1e9)
    assert (spec.train_stride, spec.test_stride, spec.n_lines) == (4, 10, 400)
    assert spec.phase is True and spec.probe == "ideal_disk" and spec.seed == 20260128
    assert spec.channels == 1
    assert GridLinesSpec(gridsize=2).channels == 4


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("N", 0, ">= 2"),
        ("N", 63, "even"),
        ("N", 64.0, "int"),
        ("N", True, "int"),
        ("N", 400, ">= 400"),  # larger than object_size: reported on object_size
        ("gridsize", 3, "1 or 2"),
        ("object_size", -1, ">= 1"),
        ("nimgs_train", 0, ">= 1"),
        ("nimgs_test", 0, ">= 1"),
        ("nphotons", 0.0, "> 0"),
        ("nphotons", -5, "> 0"),
        ("nphotons", float("inf"), "finite"),
        ("nphotons", float("nan"), "finite"),
        ("nphotons", "1e9", "finite number"),
        ("train_stride", 0, ">= 1"),
        ("test_stride", 0, ">= 1"),
        ("n_lines", 0, ">= 1"),
        ("phase", 1, "True or False"),
        ("probe", "gaussian", "ideal_disk"),
        ("probe", "/no/such/probe.npz", "existing .npz"),
        ("seed", -1, ">= 0"),
        ("seed", 1.5, "int"),
    ],
)
def test_bad_value_names_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ValueError) as err:
        GridLinesSpec(**{field: value})
    message = str(err.value)
    reported = "object_size" if (field, value) == ("N", 400) else field
    assert f"GridLinesSpec.{reported}" in message
    assert allowed in message
    if reported == field:
        assert repr(value) in message or str(value) in message


def test_gridsize_2_needs_room_for_the_group():
    GridLinesSpec(N=16, object_size=20, gridsize=2, test_stride=12)
    with pytest.raises(ValueError, match=r"object_size: expected >= 20"):
        GridLinesSpec(N=16, object_size=19, gridsize=2, test_stride=12)


def _scores(N: int, gridsize: int, object_size: int, test_stride: int) -> bool:
    """Whether evaluation's own steps (scan, stitch, 2-px trim, SSIM) work on such a test image,
    run on a stand-in for the spec (a spec cannot be made for the cases it refuses)."""
    from types import SimpleNamespace

    from skimage.metrics import structural_similarity

    from stabilitykit.workloads.gridlines.simulate import scan_coords
    from stabilitykit.workloads.gridlines.stitch import stitch_patches, trim

    geometry = SimpleNamespace(N=N, gridsize=gridsize, object_size=object_size)
    coords = scan_coords(geometry, test_stride, 1)[0][:, 0]
    patches = np.random.default_rng(0).normal(size=(len(coords), N, N))
    try:
        image = trim(stitch_patches(patches, coords, test_stride))
        structural_similarity(image, image + 1.0, data_range=1.0)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("N", "gridsize"), [(2, 1), (8, 1), (16, 1), (16, 2), (64, 1)])
def test_spec_is_valid_exactly_when_its_test_image_can_be_scored(N, gridsize):
    reach = N + (4 if gridsize == 2 else 0)
    for test_stride in range(1, N + 3):
        for object_size in range(reach, reach + 24):
            fine = test_stride <= N and _scores(N, gridsize, object_size, test_stride)
            kwargs = dict(N=N, gridsize=gridsize, object_size=object_size, test_stride=test_stride)
            if fine:
                GridLinesSpec(**kwargs)
                continue
            with pytest.raises(ValueError) as err:
                GridLinesSpec(**kwargs)
            field = "test_stride" if test_stride > N else "object_size"
            assert f"GridLinesSpec.{field}: expected" in str(err.value), kwargs


def test_patch_as_large_as_the_object_is_refused_naming_object_size():
    with pytest.raises(ValueError, match=r"GridLinesSpec\.object_size: expected >= 74 .*SSIM"):
        GridLinesSpec(N=64, object_size=64)
    GridLinesSpec(N=64, object_size=74)  # two scan positions: 20 px stitched, 16 px trimmed


def test_nphotons_beyond_the_poisson_sampler_is_refused_and_the_bound_runs():
    from stabilitykit.workloads.gridlines.simulate import build_dataset
    from stabilitykit.workloads.gridlines.spec import NPHOTONS_MAX

    for value in (1e30, 10 * NPHOTONS_MAX):
        with pytest.raises(ValueError, match=r"GridLinesSpec\.nphotons: expected a number in"):
            GridLinesSpec(nphotons=value)
    # at the bound, with few lines (the largest peak-to-mean ratio measured), it simulates
    spec = GridLinesSpec(N=16, object_size=32, nimgs_train=1, nimgs_test=1, n_lines=2)
    data = build_dataset(spec.replace(nphotons=NPHOTONS_MAX))
    assert np.isfinite(data.test.diffraction).all()


def test_existing_npz_probe_path_is_accepted(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, probe=np.ones((16, 16), np.complex64))
    spec = GridLinesSpec(N=16, object_size=64, probe=path)
    assert spec.probe == str(path)  # PathLike is stored as str: JSON-safe


def test_nphotons_is_stored_as_float_so_equal_values_compare_equal():
    spec = GridLinesSpec(nphotons=10**6)
    assert isinstance(spec.nphotons, float)
    assert spec == GridLinesSpec(nphotons=1e6)
    assert hash(spec) == hash(GridLinesSpec(nphotons=1e6))


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GridLinesSpec().N = 32


def test_dict_round_trip_through_json():
    spec = GridLinesSpec(N=32, gridsize=2, nphotons=1e5, phase=False, seed=3)
    d = json.loads(json.dumps(spec.to_dict()))
    assert GridLinesSpec.from_dict(d) == spec


def test_from_dict_rejects_unknown_keys_by_name():
    d = GridLinesSpec().to_dict() | {"nphoton": 1.0, "zeta": 2}
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['nphoton', 'zeta'\]"):
        GridLinesSpec.from_dict(d)


def test_replace_validates_and_rejects_unknown_fields():
    spec = GridLinesSpec()
    assert spec.replace(nimgs_train=1).nimgs_train == 1
    assert spec.nimgs_train == 2
    with pytest.raises(ValueError, match=r"GridLinesSpec\.N"):
        spec.replace(N=63)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['blocks'\]"):
        spec.replace(blocks=8)
