import numpy as np
import pytest

from stabilitykit.workloads.gridlines.stitch import stitch_patches, stitched_region, trim


def _scan(obj: np.ndarray, N: int, stride: int, origin: tuple[int, int] = (0, 0)):
    """All N x N patches of ``obj`` on a regular grid, shuffled, with their top-left coords."""
    rows = np.arange(origin[0], obj.shape[0] - N + 1, stride)
    cols = np.arange(origin[1], obj.shape[1] - N + 1, stride)
    coords = np.array([(r, c) for r in rows for c in cols])
    coords = coords[np.random.default_rng(0).permutation(len(coords))]
    patches = np.stack([obj[r : r + N, c : c + N] for r, c in coords])
    return patches, coords


@pytest.mark.parametrize(
    ("N", "stride", "origin"), [(16, 4, (0, 0)), (15, 4, (3, 1)), (8, 8, (0, 2))]
)
def test_stitch_reproduces_the_object_region_exactly(N, stride, origin):
    rng = np.random.default_rng(1)
    obj = rng.normal(size=(53, 47)) + 1j * rng.normal(size=(53, 47))
    patches, coords = _scan(obj, N, stride, origin)
    stitched = stitch_patches(patches, coords, stride)
    region = stitched_region(coords, N, stride)
    assert stitched.shape == obj[region].shape
    assert np.array_equal(stitched, obj[region])
    assert np.iscomplexobj(stitched)


def test_study_geometry_gives_330_then_326_pixels():
    N, stride, size = 64, 10, 392
    side = (size - N) // stride + 1  # 33 patches per row
    coords = np.array([(r, c) for r in range(side) for c in range(side)]) * stride
    patches = np.zeros((side * side, N, N), dtype=np.float32)
    stitched = stitch_patches(patches, coords, stride)
    assert stitched.shape == (330, 330)
    assert trim(stitched).shape == (326, 326)
    assert stitched_region(coords, N, stride) == (slice(27, 357), slice(27, 357))


def test_trim_removes_the_border():
    image = np.arange(36).reshape(6, 6)
    assert np.array_equal(trim(image, 2), image[2:4, 2:4])
    assert np.array_equal(trim(image, 0), image)
    with pytest.raises(ValueError, match=r"border must be in \[0, 2\] for a 6 x 6 image, got 3"):
        trim(image, 3)


def test_irregular_coords_raise():
    patches = np.zeros((4, 8, 8))
    grid = np.array([(0, 0), (0, 4), (4, 0), (4, 4)])
    off_grid = grid + np.array([(0, 0), (0, 0), (0, 1), (0, 0)])
    with pytest.raises(ValueError, match="coords must lie on a grid of stride 4"):
        stitch_patches(patches, off_grid, 4)
    with pytest.raises(
        ValueError, match=r"full 2 x 2 grid once each \(4 patches\), got 4 patches at 3"
    ):
        stitch_patches(patches, np.array([(0, 0), (0, 4), (4, 0), (0, 0)]), 4)
    with pytest.raises(ValueError, match=r"full 2 x 3 grid"):  # a hole in the grid
        stitch_patches(patches, np.array([(0, 0), (0, 4), (4, 0), (4, 8)]), 4)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"patches must have shape \(n, N, N\), got \(4, 8, 7\)"):
        stitch_patches(np.zeros((4, 8, 7)), np.zeros((4, 2)), 4)
    with pytest.raises(ValueError, match="one coordinate per patch: 4 patches, 3 coords"):
        stitch_patches(np.zeros((4, 8, 8)), np.zeros((3, 2)), 4)
    with pytest.raises(ValueError, match=r"stride must be an int in \[1, 8\]"):
        stitch_patches(np.zeros((1, 8, 8)), np.zeros((1, 2)), 9)
