"""Darcy generator: the solver (manufactured solutions, an independent stencil, invariants), the
random field (spectrum, mean, smoothness), the data set (determinism, streams) and its hash."""

import re

import numpy as np
import pytest

from stabilitykit.workloads.darcy import simulate
from stabilitykit.workloads.darcy.simulate import (
    coefficient,
    dataset_hash,
    generate,
    sample_grf,
    solve_darcy,
)
from stabilitykit.workloads.darcy.spec import DarcySpec

SMALL = DarcySpec(resolution=17, n_train=3, n_test=2, seed=11)


def _grid(s):
    x = np.linspace(0.0, 1.0, s)
    return np.meshgrid(x, x, indexing="ij")  # axis 0 is x, axis 1 is y


def _two_phase(s, seed, symmetric=False):
    field = sample_grf(1, s, np.random.default_rng(seed), 3.0, 2.0)[0]
    if symmetric:
        field = field + field.T
    return coefficient(field, 12.0, 3.0)


# --- solver -------------------------------------------------------------------------------------


def _max_errors(exact, coef, source, face="arithmetic", sizes=(17, 33, 65)):
    errors = []
    for s in sizes:
        X, Y = _grid(s)
        u = solve_darcy(coef(X, Y), source(X, Y), face=face)
        errors.append(np.abs(u - exact(X, Y)).max())
    return np.array(errors)


def test_constant_coefficient_manufactured_solution_converges_at_second_order():
    def exact(x, y):
        return np.sin(np.pi * x) * np.sin(np.pi * y)

    errors = _max_errors(
        exact, lambda x, y: np.ones_like(x), lambda x, y: 2 * np.pi**2 * exact(x, y)
    )
    ratios = errors[:-1] / errors[1:]
    assert np.all((ratios > 3.7) & (ratios < 4.3)), (errors, ratios)
    assert errors[-1] < 3e-4


@pytest.mark.parametrize("face", ["arithmetic", "harmonic"])
def test_variable_coefficient_manufactured_solution_converges_at_second_order(face):
    # a and u differ in x and y, so a swapped axis or a misplaced face value shows up.
    def exact(x, y):
        return np.sin(np.pi * x) * np.sin(2 * np.pi * y)

    def coef(x, y):
        return 1.0 + x + 2.0 * y**2

    def source(x, y):  # -div(a grad u) with a_x = 1, a_y = 4 y, lap u = -5 pi^2 u
        u_x = np.pi * np.cos(np.pi * x) * np.sin(2 * np.pi * y)
        u_y = 2 * np.pi * np.sin(np.pi * x) * np.cos(2 * np.pi * y)
        return -(u_x + 4.0 * y * u_y) + 5 * np.pi**2 * coef(x, y) * exact(x, y)

    errors = _max_errors(exact, coef, source, face=face)
    ratios = errors[:-1] / errors[1:]
    assert np.all((ratios > 3.6) & (ratios < 4.4)), (errors, ratios)


@pytest.mark.parametrize("face", ["arithmetic", "harmonic"])
def test_solution_satisfies_an_independently_written_flux_stencil(face):
    s = 21
    a = _two_phase(s, seed=3)
    f = np.random.default_rng(4).uniform(0.5, 2.0, (s, s))
    u = solve_darcy(a, f, face=face)

    def mean(p, q):
        return (p + q) / 2 if face == "arithmetic" else 2 * p * q / (p + q)

    h = 1.0 / (s - 1)
    residual = np.zeros((s - 2, s - 2))
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        centre = (slice(1, s - 1), slice(1, s - 1))
        nb = (slice(1 + di, s - 1 + di), slice(1 + dj, s - 1 + dj))
        residual += mean(a[centre], a[nb]) * (u[centre] - u[nb]) / h**2
    residual -= f[1:-1, 1:-1]
    assert np.abs(residual).max() < 1e-9 * np.abs(f).max()


def test_arithmetic_and_harmonic_faces_differ_on_a_two_phase_coefficient():
    a = _two_phase(17, seed=5)
    assert not np.allclose(solve_darcy(a), solve_darcy(a, face="harmonic"))


def test_boundary_is_exactly_zero_and_interior_positive_for_unit_source():
    s = 25
    u = solve_darcy(_two_phase(s, seed=1))
    assert u.shape == (s, s) and u.dtype == np.float64
    for edge in (u[0], u[-1], u[:, 0], u[:, -1]):
        assert np.all(edge == 0.0)
    assert np.all(u[1:-1, 1:-1] > 0)


def test_symmetric_coefficient_gives_symmetric_solution():
    a = _two_phase(25, seed=2, symmetric=True)
    assert np.array_equal(a, a.T)
    u = solve_darcy(a)
    np.testing.assert_allclose(u, u.T, rtol=0, atol=1e-13 * u.max())


def test_solution_is_linear_in_f_and_inversely_proportional_to_a():
    s = 17
    a = _two_phase(s, seed=6)
    f = np.random.default_rng(7).standard_normal((s, s))
    u = solve_darcy(a, f)
    np.testing.assert_allclose(solve_darcy(4.0 * a, f), u / 4.0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(solve_darcy(a, -3.0 * f), -3.0 * u, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(solve_darcy(a, 2.5), 2.5 * solve_darcy(a), rtol=1e-12)


@pytest.mark.parametrize(
    ("a", "kwargs", "match"),
    [
        (np.ones((5, 6)), {}, "shape"),
        (np.ones((2, 2)), {}, "shape"),
        (np.ones(9), {}, "shape"),
        (-np.ones((5, 5)), {}, "> 0"),
        (np.full((5, 5), np.nan), {}, "finite"),
        (np.ones((5, 5)), {"face": "geometric"}, "face"),
    ],
)
def test_solve_rejects_bad_input(a, kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_darcy(a, **kwargs)


# --- random field and coefficient ---------------------------------------------------------------


def _basis(s):  # L2-orthonormal Neumann modes at the nodes, row k = mode k
    k = np.arange(s)[:, None]
    x = np.linspace(0.0, 1.0, s)[None, :]
    return np.where(k == 0, 1.0, np.sqrt(2.0) * np.cos(np.pi * k * x))


def _modes(fields):
    """KL coefficients L of fields = B^T L B, by inverting the basis."""
    basis_t = _basis(fields.shape[-1]).T
    left = np.linalg.solve(basis_t, fields)  # B^-T U
    return np.linalg.solve(basis_t, np.swapaxes(left, -1, -2)).swapaxes(-1, -2)  # ... B^-1


@pytest.mark.parametrize(("tau", "alpha"), [(3.0, 2.0), (5.0, 3.0), (1.5, 1.2)])
def test_grf_modes_have_the_fno_standard_deviations(tau, alpha):
    s, n = 16, 200
    fields = sample_grf(n, s, np.random.default_rng(0), tau, alpha)
    assert fields.shape == (n, s, s) and fields.dtype == np.float64
    coeffs = _modes(fields)
    assert np.abs(coeffs[:, 0, 0]).max() < 1e-10  # mean mode dropped
    k1, k2 = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    std = tau ** (alpha - 1) * (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2)
    z2 = (coeffs / np.where(std > 0, std, 1.0)) ** 2  # ~ chi^2_1 for every mode but (0, 0)
    for band in (k1 + k2 <= 3, (k1 + k2 > 3) & (k1 + k2 <= 10), k1 + k2 > 10):
        band = band & ~((k1 == 0) & (k2 == 0))
        assert abs(z2[:, band].mean() - 1.0) < 0.12, band.sum()


def test_grf_has_zero_mean_and_is_smooth_compared_with_white_noise():
    s, n = 33, 64
    fields = sample_grf(n, s, np.random.default_rng(2), 3.0, 2.0)
    # Trapezoid-rule mean of every sample is 0: cos(pi k x), 1 <= k < 2 (s - 1), integrates to 0.
    w = np.full(s, 1.0 / (s - 1))
    w[[0, -1]] /= 2
    means = np.einsum("i,nij,j->n", w, fields, w)
    assert np.abs(means).max() < 1e-12 * fields.std()
    assert 0.4 < (fields >= 0).mean() < 0.6  # symmetric field: a is 12 on about half the domain

    # Neighbour differences: for white noise E|du|^2 / var = 2; a smooth field is far below.
    noise = np.random.default_rng(3).standard_normal(fields.shape)
    for u, expect_smooth in ((fields, True), (noise, False)):
        u = u - u.mean()
        ratio = (np.diff(u, axis=1) ** 2).mean() / (u**2).mean()
        assert (ratio < 0.1) if expect_smooth else (ratio > 1.8)

    # Spectrum decays: the upper half of the modes holds a tiny share of the energy.
    high = np.maximum(*np.meshgrid(np.arange(s), np.arange(s), indexing="ij")) >= s // 2
    for u, bound in ((fields, 0.01), (noise, None)):
        energy = _modes(u) ** 2
        fraction = energy[:, high].sum() / energy.sum()
        if bound is None:
            assert fraction > 0.6  # white noise: about 3/4 of the modes
        else:
            assert fraction < bound


def test_grf_draws_are_sequential_per_sample():
    first = sample_grf(5, 12, np.random.default_rng(9), 3.0, 2.0)
    rng = np.random.default_rng(9)
    parts = [sample_grf(2, 12, rng, 3.0, 2.0), sample_grf(3, 12, rng, 3.0, 2.0)]
    np.testing.assert_array_equal(first, np.concatenate(parts))


def test_coefficient_takes_only_the_two_values():
    field = np.array([[-1.0, 0.0], [1e-300, -1e-300]])
    np.testing.assert_array_equal(coefficient(field, 12.0, 3.0), [[3.0, 12.0], [12.0, 3.0]])
    a = coefficient(sample_grf(4, 17, np.random.default_rng(0), 3.0, 2.0), 12.0, 3.0)
    assert set(np.unique(a)) == {3.0, 12.0}


# --- data set -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_data():
    return generate(SMALL)


def test_generate_shapes_dtypes_and_values(small_data):
    s = SMALL.resolution
    assert set(small_data) == {"a_train", "u_train", "a_test", "u_test"}
    for split, n in (("train", SMALL.n_train), ("test", SMALL.n_test)):
        a, u = small_data[f"a_{split}"], small_data[f"u_{split}"]
        assert a.shape == u.shape == (n, s, s)
        assert a.dtype == u.dtype == np.float32
        assert set(np.unique(a)) <= {np.float32(3.0), np.float32(12.0)}
        assert np.all(u[:, [0, -1], :] == 0) and np.all(u[:, :, [0, -1]] == 0)
        assert np.all(u[:, 1:-1, 1:-1] > 0)
        for ai, ui in zip(a, u, strict=True):
            expected = solve_darcy(ai.astype(np.float64)).astype(np.float32)
            np.testing.assert_array_equal(ui, expected)


def test_generate_is_deterministic(small_data):
    again = generate(SMALL)
    for key, value in small_data.items():
        assert value.tobytes() == again[key].tobytes(), key


def test_train_and_test_come_from_different_streams(small_data):
    assert not np.array_equal(small_data["a_train"][:2], small_data["a_test"][:2])


def test_different_seed_gives_different_data(small_data):
    other = generate(SMALL.replace(seed=SMALL.seed + 1))
    assert not np.array_equal(other["a_train"], small_data["a_train"])
    assert not np.array_equal(other["a_test"], small_data["a_test"])


def test_changing_n_test_keeps_train_and_test_prefix(small_data):
    other = generate(SMALL.replace(n_test=SMALL.n_test + 1))
    for key in ("a_train", "u_train"):
        assert other[key].tobytes() == small_data[key].tobytes()
    for key in ("a_test", "u_test"):
        assert other[key][: SMALL.n_test].tobytes() == small_data[key].tobytes()


def test_changing_n_train_keeps_train_prefix_and_test(small_data):
    other = generate(SMALL.replace(n_train=1))
    assert other["a_train"].tobytes() == small_data["a_train"][:1].tobytes()
    assert other["u_test"].tobytes() == small_data["u_test"].tobytes()


def test_field_parameters_change_the_coefficient(small_data):
    other = generate(SMALL.replace(tau=6.0, n_train=1, n_test=1))
    assert not np.array_equal(other["a_train"], small_data["a_train"][:1])
    scaled = generate(SMALL.replace(a_high=24.0, a_low=6.0, n_train=1, n_test=1))
    np.testing.assert_allclose(scaled["u_train"], small_data["u_train"][:1] / 2, rtol=1e-6)


# --- hash ---------------------------------------------------------------------------------------


def test_dataset_hash_is_16_hex_and_stable():
    h = dataset_hash(SMALL)
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert dataset_hash(DarcySpec.from_dict(SMALL.to_dict())) == h


CHANGES = {
    "resolution": 18,
    "n_train": 4,
    "n_test": 3,
    "seed": 12,
    "tau": 3.5,
    "alpha": 2.5,
    "a_high": 11.0,
    "a_low": 4.0,
}


def test_changes_cover_every_field():
    assert set(CHANGES) == set(SMALL.to_dict())


@pytest.mark.parametrize(("field", "value"), CHANGES.items())
def test_dataset_hash_changes_with_every_field(field, value):
    assert dataset_hash(SMALL.replace(**{field: value})) != dataset_hash(SMALL)


def test_dataset_hash_changes_with_simulator_version(monkeypatch):
    before = dataset_hash(SMALL)
    monkeypatch.setattr(simulate, "SIMULATOR_VERSION", simulate.SIMULATOR_VERSION + 1)
    assert dataset_hash(SMALL) != before
