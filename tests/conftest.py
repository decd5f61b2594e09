"""Unit tests run torch on one CPU thread: small tensors gain nothing from more, and two
processes (pytest-xdist) would otherwise oversubscribe the cores."""

import importlib
import os
import pkgutil

import pytest
import torch

torch.set_num_threads(1)

#: Workers for the suite when pytest-xdist is installed and no ``-n`` was given: the README's
#: ``pytest`` then uses both cores of a 2-core machine. ``-n 0`` or ``-p no:xdist`` run serially.
WORKERS = 2


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    worker = hasattr(config, "workerinput") or "PYTEST_XDIST_WORKER" in os.environ
    given = getattr(config.option, "numprocesses", None) is not None  # -n, also from addopts
    collect_only = config.getoption("collectonly", False)
    if config.pluginmanager.hasplugin("xdist") and not (worker or given or collect_only):
        config.option.numprocesses = WORKERS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slurm`` first: they wait on jobs (a requeue, a time limit) more than
    they compute, so their waits overlap with the rest of the suite on the other worker."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)  # stable: order kept


@pytest.fixture(scope="session")
def _libraries_loaded():
    """Everything a stabilitykit session imports, imported once per process. pytester's
    in-process runs forget the modules a run imported (its ``sys.modules`` snapshot); what was
    loaded before stays, so each run does not pay for torch's compiler, plotting, rich and
    hypothesis again."""
    import hypothesis  # noqa: F401  (its pytest plugin imports it at the terminal summary)
    import PIL.Image
    import rich.console  # noqa: F401
    import torch._dynamo
    import torch.utils.serialization  # noqa: F401

    import stabilitykit

    for module in pkgutil.walk_packages(stabilitykit.__path__, "stabilitykit."):
        importlib.import_module(module.name)
    PIL.Image.init()


@pytest.fixture
def sk_pytest(pytester, tmp_path_factory, monkeypatch, _libraries_loaded):
    """``sk_pytest(*args, subprocess=False, plots=False) -> RunResult``: a pytest session in
    ``pytester.path`` at smoke scale, with a data cache shared by this process's tests, and
    without the stage reports' plots unless ``plots`` (``--sk-no-plots``).

    In this process by default (pytester's ``runpytest_inprocess``: seconds faster, torch is
    already loaded). ``subprocess=True`` for a session that needs a process of its own: xdist
    workers (``-n``), a worker that dies, a test file that patches the library at import or
    registers a workload class. Either way the session is not an xdist worker when this suite
    runs under ``-n``."""
    cache = tmp_path_factory.getbasetemp() / "smoke-data-cache"
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str, subprocess: bool = False, plots: bool = False) -> pytest.RunResult:
        argv = ["--sk-scale", "smoke", "--sk-cache", str(cache), "-p", "no:cacheprovider"]
        argv += ["-p", "no:hypothesispytest", *args]
        if not plots:  # a second of matplotlib per session; the tests that read plots ask
            argv.append("--sk-no-plots")
        if subprocess:
            return pytester.runpytest_subprocess(*argv)
        return pytester.runpytest_inprocess(*argv)

    return run
