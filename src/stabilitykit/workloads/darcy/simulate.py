"""2-D Darcy flow data (Li et al. 2021, "Fourier Neural Operator for Parametric PDEs", §5.2).

Each sample: a Gaussian random field ``g`` on the unit square, the two-valued coefficient
``a = a_high where g >= 0 else a_low``, and the solution ``u`` of ``-div(a grad u) = 1`` with
``u = 0`` on the boundary. Arrays are ``(s, s)`` on the nodes ``x = i h``, ``y = j h``
(``h = 1 / (s - 1)``, boundary included); axis 0 is x, axis 1 is y.

Choices where the FNO data code (MATLAB ``GRF.m`` / ``solve_gwf.m``) leaves room or differs:

- Field: the Karhunen-Loeve sum over the zero-Neumann cosine eigenbasis, modes ``0 <= k1, k2 < s``
  with the mean mode dropped, evaluated exactly at the nodes. FNO evaluated it at cell centres (an
  inverse DCT-II), spline-interpolated the thresholded ``a`` onto the solver's nodes and the
  solution back to the cell centres; here everything lives on the nodes, so the stored ``a`` takes
  exactly two values and ``u`` is exactly 0 on the boundary.
- Resolution: FNO solved at 421 and subsampled (every 5th point gives 85); here each resolution is
  solved directly, so ``u`` at ``s = 85`` carries the coarser grid's discretisation error.
- Discretisation: 5-point flux-form finite differences; the coefficient at a cell face is the
  arithmetic mean of its two nodes, as in ``solve_gwf.m`` (``face="harmonic"`` is available).
- Solve: float64, ``scipy.sparse.linalg.splu`` on the SPD matrix with one fill-reducing ordering
  (SuperLU's minimum degree on ``A + A^T``) computed per resolution and reused, diagonal pivots
  (the matrix is an SPD M-matrix), so each sample pays only the numeric factorisation. Measured
  at s = 85: ~10 ms a solve, against ~25 ms for ``spsolve``/``splu`` ordering every call.
- Random streams: ``default_rng([spec.seed, k])``, ``k`` 0 train, 1 test; each split draws its
  normals sample after sample, so train does not depend on ``n_test`` and the first ``n``
  samples of a split do not depend on its length.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Literal

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from stabilitykit.workloads.darcy.spec import DarcySpec

SIMULATOR_VERSION = 1  # bump whenever a change alters the arrays a spec produces
FORMAT = "darcy"
_STREAMS = {"train": 0, "test": 1}
_CHUNK = 64  # samples of the random field drawn at a time (bounds the float64 temporaries)
_SPLU_OPTIONS = {"SymmetricMode": True}
_PANEL_SIZE = 2  # SuperLU panel width: ~1.5x faster than the default 12 at s = 85 (and s = 211)


def dataset_hash(spec: DarcySpec) -> str:
    """Content address of the data set of ``spec``: 16 hex chars of a sha256.

    Covers the canonical JSON of ``spec.to_dict()``, ``SIMULATOR_VERSION`` and the format tag.
    """
    payload = json.dumps(
        {"format": FORMAT, "simulator_version": SIMULATOR_VERSION, "spec": spec.to_dict()},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _cosine_basis(s: int) -> np.ndarray:
    """``(s, s)``: row ``k`` is the L2(0, 1)-orthonormal Neumann mode ``c_k cos(pi k x)`` at the
    nodes ``x = j / (s - 1)``; ``c_0 = 1``, else ``sqrt(2)``."""
    k = np.arange(s, dtype=np.float64)[:, None]
    x = np.arange(s, dtype=np.float64)[None, :] / (s - 1)
    basis = np.sqrt(2.0) * np.cos(np.pi * k * x)
    basis[0] = 1.0
    return basis


def grf_sqrt_eigenvalues(s: int, tau: float, alpha: float) -> np.ndarray:
    """``(s, s)``: ``tau**(alpha-1) * (pi**2 (k1**2 + k2**2) + tau**2) ** (-alpha/2)``, the standard
    deviation of mode ``(k1, k2)``, with the mean mode ``(0, 0)`` set to 0."""
    k = np.arange(s, dtype=np.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sqrt_eig = tau ** (alpha - 1.0) * (np.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    return sqrt_eig


def sample_grf(n: int, s: int, rng: np.random.Generator, tau: float, alpha: float) -> np.ndarray:
    """``n`` samples of the zero-mean Gaussian random field with covariance
    ``tau**(2 alpha - 2) (-Laplace + tau**2)**(-alpha)`` (zero-Neumann BCs) on the ``s x s`` nodes.

    Returns ``(n, s, s)`` float64. Draws ``n * s * s`` standard normals from ``rng``, one sample
    after another (mode ``(k1, k2)`` of sample ``i`` is normal ``i s**2 + k1 s + k2``).
    """
    if n < 0 or s < 2:
        raise ValueError(f"sample_grf: need n >= 0 and s >= 2, got n={n}, s={s}")
    basis = _cosine_basis(s)
    coeffs = rng.standard_normal((n, s, s)) * grf_sqrt_eigenvalues(s, tau, alpha)
    return basis.T @ coeffs @ basis


def coefficient(field: np.ndarray, a_high: float = 12.0, a_low: float = 3.0) -> np.ndarray:
    """The two-valued coefficient: ``a_high`` where ``field >= 0``, else ``a_low`` (float64)."""
    return np.where(np.asarray(field) >= 0, float(a_high), float(a_low))


@functools.lru_cache(maxsize=8)
def _pattern(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sparsity pattern of the ``(s-2)**2`` interior unknowns, reordered once for the solve.

    Returns ``(indptr, indices, take, order)``: the CSC structure of the reordered matrix ``B``;
    ``take`` maps the entries in :func:`_stencil_values` order to ``B.data``; interior node ``p``
    (row-major over the interior) is unknown ``order[p]`` of ``B``.
    """
    m = s - 2
    node = np.arange(m * m).reshape(m, m)
    lo0, hi0 = node[:-1, :].ravel(), node[1:, :].ravel()  # x-neighbours
    lo1, hi1 = node[:, :-1].ravel(), node[:, 1:].ravel()  # y-neighbours
    rows = np.concatenate([node.ravel(), lo0, hi0, lo1, hi1])
    cols = np.concatenate([node.ravel(), hi0, lo0, hi1, lo1])

    # Fill-reducing ordering, a function of the pattern only: from the Laplacian (a = 1).
    values = _stencil_values(np.ones((s, s)), "arithmetic")
    lap = scipy.sparse.csc_matrix((values, (rows, cols)), shape=(m * m, m * m))
    order = scipy.sparse.linalg.splu(
        lap, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=_SPLU_OPTIONS
    ).perm_c  # lap[:, argsort(order)] is the column order SuperLU factorises

    # Entry e of the stencil goes to (order[rows[e]], order[cols[e]]); record where in CSC.
    marker = np.arange(1, rows.size + 1, dtype=np.float64)
    reordered = scipy.sparse.csc_matrix((marker, (order[rows], order[cols])), shape=(m * m, m * m))
    reordered.sort_indices()
    take = reordered.data.astype(np.int64) - 1
    out = (reordered.indptr.astype(np.int32), reordered.indices.astype(np.int32), take, order)
    for arr in out:
        arr.flags.writeable = False
    return out


def _stencil_values(a: np.ndarray, face: str) -> np.ndarray:
    """The matrix entries ``h**2 A`` of the 5-point flux stencil of ``-div(a grad .)`` in the
    order of :func:`_pattern`: diagonal, x-couplings (both triangles), y-couplings (both)."""
    if face == "arithmetic":
        fx = 0.5 * (a[:-1, :] + a[1:, :])  # (s-1, s): face between nodes (i, j), (i+1, j)
        fy = 0.5 * (a[:, :-1] + a[:, 1:])  # (s, s-1): face between nodes (i, j), (i, j+1)
    else:
        fx = 2.0 * a[:-1, :] * a[1:, :] / (a[:-1, :] + a[1:, :])
        fy = 2.0 * a[:, :-1] * a[:, 1:] / (a[:, :-1] + a[:, 1:])
    diag = fx[:-1, 1:-1] + fx[1:, 1:-1] + fy[1:-1, :-1] + fy[1:-1, 1:]
    off_x = -fx[1:-1, 1:-1].ravel()  # interior-interior x-faces
    off_y = -fy[1:-1, 1:-1].ravel()
    return np.concatenate([diag.ravel(), off_x, off_x, off_y, off_y])


def solve_darcy(
    a: np.ndarray,
    f: float | np.ndarray = 1.0,
    *,
    face: Literal["arithmetic", "harmonic"] = "arithmetic",
) -> np.ndarray:
    """Solve ``-div(a grad u) = f`` on the unit square, ``u = 0`` on the boundary.

    Args:
        a: ``(s, s)`` coefficient at the nodes (finite, > 0), ``s >= 3``.
        f: source, a number or an ``(s, s)`` array at the nodes (boundary values unused).
        face: coefficient at a cell face: ``"arithmetic"`` or ``"harmonic"`` mean of its nodes.

    Returns:
        ``(s, s)`` float64 ``u`` at the nodes; the boundary rows and columns are exactly 0.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 3:
        raise ValueError(f"solve_darcy: a must be (s, s) with s >= 3, got shape {a.shape}")
    if not (np.isfinite(a).all() and (a > 0).all()):
        raise ValueError("solve_darcy: a must be finite and > 0 everywhere")
    if face not in ("arithmetic", "harmonic"):
        raise ValueError(f"solve_darcy: face must be 'arithmetic' or 'harmonic', got {face!r}")
    s = a.shape[0]
    f = np.broadcast_to(np.asarray(f, dtype=np.float64), (s, s))
    h = 1.0 / (s - 1)

    indptr, indices, take, order = _pattern(s)
    n = (s - 2) ** 2
    data = _stencil_values(a, face)[take]
    matrix = scipy.sparse.csc_matrix((data, indices, indptr), shape=(n, n))
    rhs = np.empty(n)
    rhs[order] = h * h * f[1:-1, 1:-1].ravel()
    lu = scipy.sparse.linalg.splu(
        matrix,
        permc_spec="NATURAL",  # already in fill-reducing order
        diag_pivot_thresh=0.0,
        panel_size=_PANEL_SIZE,
        options=_SPLU_OPTIONS,
    )
    u = np.zeros((s, s))
    u[1:-1, 1:-1] = lu.solve(rhs)[order].reshape(s - 2, s - 2)
    return u


def _generate_split(spec: DarcySpec, n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    s = spec.resolution
    rng = np.random.default_rng([spec.seed, stream])
    a_out = np.empty((n, s, s), dtype=np.float32)
    u_out = np.empty((n, s, s), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        fields = sample_grf(min(_CHUNK, n - start), s, rng, spec.tau, spec.alpha)
        for offset, field in enumerate(fields):
            a = coefficient(field, spec.a_high, spec.a_low)
            a_out[start + offset] = a
            u_out[start + offset] = solve_darcy(a)
    return a_out, u_out


def generate(spec: DarcySpec) -> dict[str, np.ndarray]:
    """The data set of ``spec``: ``a_train``, ``u_train`` ``(n_train, s, s)``, ``a_test``,
    ``u_test`` ``(n_test, s, s)``, all float32 (solved in float64)."""
    a_train, u_train = _generate_split(spec, spec.n_train, _STREAMS["train"])
    a_test, u_test = _generate_split(spec, spec.n_test, _STREAMS["test"])
    return {"a_train": a_train, "u_train": u_train, "a_test": a_test, "u_test": u_test}
