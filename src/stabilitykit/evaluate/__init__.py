"""Evaluation: stitch the test patches into one object, then named metrics (DOMAIN.md §5)."""
