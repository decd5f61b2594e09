"""Built-in workloads, one folder each, registered through the ``stabilitykit.workloads`` entry
point group like any third-party workload (see pyproject.toml)."""
