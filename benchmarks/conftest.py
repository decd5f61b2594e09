"""Stability benchmarks of the built-in workloads. Run: ``pytest benchmarks -m stage_b``.

Stage markers beyond ``stage_a`` ... ``stage_e`` are registered here, the way a user registers
their own (a ``pytest.ini`` of their own would replace the project's pytest settings).
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "stage_darcy: Darcy flow stage (FNO paper's benchmark)")
    config.addinivalue_line(
        "markers", "stage_frontier_gridlines: lr frontiers of the grid-lines study's arms"
    )
    config.addinivalue_line("markers", "stage_frontier_darcy: lr frontiers of the Darcy arms")
