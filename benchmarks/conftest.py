"""Stability benchmarks of the grid-lines FNO study. Run: ``pytest benchmarks -m stage_b``."""
