"""2-D Darcy flow, the FNO paper's benchmark (docs/darcy.md): ``DarcySpec`` data generated and
solved locally (``simulate``), the ``DarcyWorkload`` and the stage's arms (``study``)."""

from stabilitykit.workloads.darcy.spec import DarcySpec
from stabilitykit.workloads.darcy.workload import DarcyWorkload

__all__ = ["DarcySpec", "DarcyWorkload"]
