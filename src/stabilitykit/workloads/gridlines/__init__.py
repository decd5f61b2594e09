"""Grid-lines ptychography, the FNO stability study's workload (docs/gridlines.md).

``GridLinesWorkload`` fills the workload interface; ``study`` holds the study's arms. The data
(``spec``, ``probe``, ``simulate``, ``cache``), the physics (``forward``, ``losses``) and the
evaluation (``stitch``, ``metrics``) are modules of this folder.
"""

from stabilitykit.workloads.gridlines.spec import GridLinesSpec
from stabilitykit.workloads.gridlines.workload import GridLinesWorkload

__all__ = ["GridLinesSpec", "GridLinesWorkload"]
