"""Grid-lines data sets (DOMAIN.md §1): spec, probe, simulation and the content-addressed cache."""

from stabilitykit.data.cache import (
    SIMULATOR_VERSION,
    dataset_hash,
    default_cache_dir,
    load_or_build,
)
from stabilitykit.data.probe import ideal_disk_probe, load_probe, make_probe, scale_probe
from stabilitykit.data.simulate import GridLinesData, Split, build_dataset, simulate_amplitude
from stabilitykit.data.spec import GridLinesSpec

__all__ = [
    "SIMULATOR_VERSION",
    "GridLinesData",
    "GridLinesSpec",
    "Split",
    "build_dataset",
    "dataset_hash",
    "default_cache_dir",
    "ideal_disk_probe",
    "load_or_build",
    "load_probe",
    "make_probe",
    "scale_probe",
    "simulate_amplitude",
]
