"""2-D Darcy flow on the workload interface (docs/darcy.md): the FNO paper's benchmark.

Supervised ``a -> u``, trained on the relative L2 error with inputs and targets standardised per
grid point by training statistics; the primary metric is the test relative L2 error, the floor
the error of predicting the mean training solution for every input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from torch import nn

from stabilitykit.models.fno2d import FNO2d
from stabilitykit.workload import MetricSpec, Scale
from stabilitykit.workloads.darcy.simulate import dataset_hash, generate
from stabilitykit.workloads.darcy.spec import DarcySpec
from stabilitykit.workloads.supervised import SupervisedData, SupervisedWorkload


class DarcyWorkload(SupervisedWorkload):
    """Darcy flow, ``DarcySpec`` data, the ``fno`` architecture, ``rel_l2``/``mse`` losses."""

    name = "darcy"
    spec_type = DarcySpec
    architectures: Mapping[str, Mapping[str, Any]] = {
        "fno": {"width": 32, "modes": 12, "fno_blocks": 4}
    }
    metrics = (
        # Seed-to-seed spread of a learning ci control is a few per cent of the error.
        MetricSpec(
            "rel_l2", "lower", rel_tol=0.15, floor="rel_l2_floor", label="rel L2", ideal=0.0
        ),
        MetricSpec("mse", "lower", label="MSE"),
    )
    normalize = True
    code = ("stabilitykit.models",)
    mitigations = ()  # its FNO has no LayerScale: the engine's AGC and a lower lr are its levers
    scales: ClassVar[Mapping[str, Scale]] = {
        # The paper's setup (docs/darcy.md §4) is the study's arms as written.
        "full": Scale("full"),
        # About a minute and a half per arm on one CPU thread: s = 32, 1000 pairs.
        "ci": Scale("ci", data={"resolution": 32, "n_train": 1000, "n_test": 100}, epochs=10),
        "smoke": Scale(
            "smoke",
            data={"resolution": 16, "n_train": 40, "n_test": 10},
            model={"width": 8, "fno_blocks": 2},
            modes_cap=4,
            epochs=2,
        ),
    }

    def arrays(self, spec: DarcySpec) -> dict[str, np.ndarray]:
        g = generate(spec)
        return {
            "x_train": g["a_train"][:, None],
            "y_train": g["u_train"][:, None],
            "x_test": g["a_test"][:, None],
            "y_test": g["u_test"][:, None],
        }

    def data_hash(self, spec: DarcySpec) -> str:
        return dataset_hash(spec)  # the simulator's version, not this file, makes the arrays

    def validate_model(self, spec: DarcySpec, architecture: str, kwargs: Mapping[str, Any]) -> None:
        FNO2d.check_grid(spec.resolution, kwargs["modes"])

    def build_model(self, data: SupervisedData, architecture: str, **kwargs: Any) -> nn.Module:
        return FNO2d(data.x_train.shape[1], data.y_train.shape[1], **kwargs)
