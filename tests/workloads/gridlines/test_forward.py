import numpy as np
import pytest
import torch

from stabilitykit.workloads.gridlines.forward import far_field_amplitude
from stabilitykit.workloads.gridlines.simulate import build_dataset, simulate_amplitude
from stabilitykit.workloads.gridlines.spec import GridLinesSpec


@pytest.mark.parametrize("gridsize", [1, 2])
def test_matches_the_noise_free_simulator(gridsize):
    spec = GridLinesSpec(
        N=32, object_size=96, gridsize=gridsize, nimgs_train=1, nimgs_test=1, n_lines=40
    )
    data = build_dataset(spec)
    Y = data.test.object_patches()  # (n, N, N, C)
    expected = simulate_amplitude(Y, data.probe, data.intensity_scale)
    obj = torch.from_numpy(np.ascontiguousarray(np.moveaxis(Y, -1, 1)))  # (B, C, N, N)
    got = far_field_amplitude(obj, torch.from_numpy(data.probe))
    assert got.dtype == torch.float32
    got = np.moveaxis(got.numpy(), 1, -1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_is_unitary_up_to_the_probe():
    gen = torch.Generator().manual_seed(0)
    obj = torch.randn(2, 3, 16, 16, dtype=torch.complex64, generator=gen)
    probe = torch.randn(16, 16, dtype=torch.complex64, generator=gen)
    amp = far_field_amplitude(obj, probe)
    assert amp.shape == (2, 3, 16, 16)
    torch.testing.assert_close(
        amp.square().sum((-2, -1)), (obj * probe).abs().square().sum((-2, -1))
    )


def test_zero_frequency_sits_at_the_centre():
    obj = torch.ones(1, 1, 8, 8, dtype=torch.complex64)
    amp = far_field_amplitude(obj, torch.ones(8, 8, dtype=torch.complex64))
    assert amp[0, 0, 4, 4] == pytest.approx(8.0)  # |sum| / N = 64 / 8
    assert amp.sum() == pytest.approx(8.0)


def test_gradients_flow_to_the_object():
    obj = torch.randn(1, 1, 8, 8, dtype=torch.complex64, requires_grad=True)
    far_field_amplitude(obj, torch.ones(8, 8, dtype=torch.complex64)).sum().backward()
    assert obj.grad is not None and torch.isfinite(torch.view_as_real(obj.grad)).all()


@pytest.mark.parametrize(
    ("obj", "probe", "problem"),
    [
        (
            torch.ones(1, 8, 8, dtype=torch.complex64),
            torch.ones(8, 8, dtype=torch.complex64),
            "B, C, N, N",
        ),
        (
            torch.ones(1, 1, 8, 8, dtype=torch.complex64),
            torch.ones(4, 4, dtype=torch.complex64),
            r"\(4, 4\)",
        ),
        (torch.ones(1, 1, 8, 8), torch.ones(8, 8, dtype=torch.complex64), "complex"),
    ],
)
def test_rejects_bad_shapes_and_dtypes(obj, probe, problem):
    with pytest.raises(ValueError, match=problem):
        far_field_amplitude(obj, probe)
