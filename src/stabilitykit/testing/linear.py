"""A workload whose stability boundary is known, to check a frontier against the truth.

Linear least squares ``y = x w`` (``x`` ``(n, 4)``, ``y`` ``(n, 1)``, no bias) trained by full-batch
gradient descent on the MSE loss ``(1/n) sum_i (x_i . w - y_i)^2``. Its Hessian is
``H = (2/n) X^T X``, constant, so gradient descent converges for ``lr < 2/L`` and diverges for
``lr > 2/L``, ``L`` the largest eigenvalue of ``H`` (from any start with a component along its
eigenvector): :func:`critical_lr` computes ``2/L = 1 / lambda_max(X^T X / n)`` from the data.
Near the edge the growth is slow (``|1 - lr L|`` per step), so :data:`CRITERIA` call a run
diverged when its loss ends over 10 times its first: with :data:`GD`'s 20 steps that decides
every lr more than about 4 % from ``2/L``.

Example::

    points = sweep(GD, "lr", log_grid(0.01, 1.0, per_decade=3))
    results = [run_arm(p, criteria=CRITERIA) for p in points]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from torch import nn

from stabilitykit.arm import Arm
from stabilitykit.judge.criteria import Finite, LossBounded
from stabilitykit.workloads.supervised import SupervisedWorkload

N_TRAIN, N_TEST = 48, 16
#: Per-feature scales: the top eigenvalue stands well apart from the next.
FEATURE_SCALES = (3.0, 1.0, 0.5, 0.2)


def arrays() -> dict[str, np.ndarray]:
    """``x_train (48, 4)``, ``y_train (48, 1)``, ``x_test (16, 4)``, ``y_test (16, 1)``, float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TRAIN + N_TEST, len(FEATURE_SCALES))) * np.array(FEATURE_SCALES)
    y = x @ rng.normal(size=(len(FEATURE_SCALES), 1))
    x, y = x.astype(np.float32), y.astype(np.float32)
    return {
        "x_train": x[:N_TRAIN],
        "y_train": y[:N_TRAIN],
        "x_test": x[N_TRAIN:],
        "y_test": y[N_TRAIN:],
    }


def critical_lr() -> float:
    """``2 / L``: the lr above which full-batch gradient descent diverges on the training set."""
    x = arrays()["x_train"].astype(np.float64)
    return float(1.0 / np.linalg.eigvalsh(x.T @ x / len(x)).max())


class LinearRegression(SupervisedWorkload):
    """Linear least squares on fixed data (:func:`arrays`); the MSE loss first."""

    name = "linear_regression"
    architectures: ClassVar[Mapping[str, Mapping[str, Any]]] = {"linear": {}}
    losses = ("mse", "rel_l2")

    def arrays(self, spec: Any) -> dict[str, np.ndarray]:
        return arrays()

    def build_model(self, data: Any, architecture: str) -> nn.Module:
        return nn.Linear(len(FEATURE_SCALES), 1, bias=False)


#: Full-batch gradient descent: SGD without momentum, one batch of the whole training set, no
#: clipping, 20 steps.
GD = Arm(
    name="gd",
    workload=LinearRegression,
    optimizer="sgd",
    betas=(0.0, 0.999),
    lr=0.1,
    epochs=20,
    batch_size=N_TRAIN,
    loss="mse",
    clip="none",
    clip_value=None,
    layer_norm_every=0,
)
#: Divergence only: non-finite, or a loss that ends over 10 times its first.
CRITERIA = (Finite(), LossBounded(factor=10.0))
