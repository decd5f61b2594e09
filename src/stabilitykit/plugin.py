"""pytest plugin: options, markers, fixtures and the end-of-session stage reports.

Thin by design: the work lives in :mod:`stabilitykit.stage`, :mod:`stabilitykit.run`,
:mod:`stabilitykit.report` and :mod:`stabilitykit.gate`, imported lazily so that a pytest session
that runs no stability benchmark pays nothing.
"""

from __future__ import annotations

import json
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from stabilitykit.stage import StudyOptions

STAGE_MARKERS = ("stage_a", "stage_b", "stage_c", "stage_d", "stage_e")
PROPERTY = "stabilitykit"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stabilitykit", "stability benchmarks (stabilitykit)")
    group.addoption(
        "--sk-scale",
        default="ci",
        choices=("smoke", "proxy", "ci", "full", "none"),
        help="size of every arm: smoke (seconds), proxy (ci's data and model at fewer epochs, "
        "for sweeps), ci (minutes on a CPU), full (the study's exact configuration), none (every "
        "arm as written). What a scale changed is recorded. Default: ci.",
    )
    group.addoption("--sk-out", default="reports", help="output folder (default: reports/)")
    group.addoption(
        "--sk-device", default=None, help="device for every arm: cpu, cuda, cuda:N (default: cpu)"
    )
    group.addoption(
        "--sk-seeds", type=int, default=1, help="replicate each arm over K seeds (default 1)"
    )
    group.addoption(
        "--sk-threads",
        type=int,
        default=1,
        help="torch CPU threads per arm (default 1: the same numbers serial or under -n; "
        "parallelism comes from -n)",
    )
    group.addoption(
        "--sk-rerun",
        action="store_true",
        help="ignore cached arm results (references from other stages, and sweep points "
        "already run in --sk-out, are trained again)",
    )
    group.addoption(
        "--sk-fast",
        default=None,
        metavar="OPTIONS",
        help="speed options that leave each arm's meaning alone, comma-separated: fused "
        "(fused optimiser kernel), tf32 (TF32 matmuls on CUDA); recorded in each run",
    )
    group.addoption(
        "--sk-resume",
        action="store_true",
        help="continue each arm's killed or interrupted run in --sk-out from its last epoch "
        "checkpoint (same arm and code), instead of starting it again",
    )
    group.addoption(
        "--sk-keep-checkpoints",
        action="store_true",
        help="keep every epoch's checkpoint in <run>/checkpoints/ (for stabilitykit replay); "
        "by default only the newest is kept while a run goes, and none once it has finished",
    )
    group.addoption(
        "--sk-no-plots",
        action="store_true",
        help="write each stage's summary and metrics JSON without its plots (quicker: for "
        "quick iterations and test suites)",
    )
    group.addoption(
        "--sk-executor",
        default=None,
        choices=("local", "slurm"),
        help="train each arm as its own job through submitit and wait for it: slurm (a Slurm "
        "job per arm; run pytest on a login node) or local (subprocesses here, to try it out). "
        "Default: train in the pytest process. -n N keeps N jobs in flight (pytest-xdist). "
        "Needs pip install 'stabilitykit[cluster]'",
    )
    group.addoption("--sk-slurm-partition", default=None, help="Slurm partition of the jobs")
    group.addoption("--sk-slurm-account", default=None, help="Slurm account of the jobs")
    group.addoption("--sk-slurm-qos", default=None, help="Slurm QOS of the jobs")
    group.addoption(
        "--sk-slurm-gpus",
        type=int,
        default=None,
        help="GPUs per job (default: 1 for an arm on CUDA, else 0); add --sk-device cuda "
        "to train on them",
    )
    group.addoption(
        "--sk-slurm-cpus", type=int, default=None, help="CPUs per job (Slurm's cpus-per-task)"
    )
    group.addoption(
        "--sk-slurm-time", type=int, default=None, help="time limit per job, minutes (default 60)"
    )
    group.addoption(
        "--sk-slurm-max-timeouts",
        type=int,
        default=None,
        help="requeue a job that reaches its time limit up to N times, to continue from its last "
        "epoch checkpoint (default 3; a preempted job is always requeued)",
    )
    group.addoption(
        "--sk-slurm-signal-delay",
        type=int,
        default=None,
        help="seconds before the time limit at which a job is signalled to requeue itself "
        "(default: submitit's, 90 on Slurm)",
    )
    group.addoption(
        "--sk-cache",
        default=None,
        help="data-set cache folder (default: $STABILITYKIT_CACHE or ~/.cache/stabilitykit)",
    )
    group.addoption(
        "--sk-shard",
        default=None,
        help="run shard I of N of the stability benchmarks, as I/N (e.g. 2/8)",
    )
    group.addoption(
        "--sk-baseline",
        default=None,
        help="baseline folder: <dir>/<scale>/<stage>.json; arms are gated against it",
    )
    group.addoption(
        "--sk-require-baseline",
        action="store_true",
        help="a missing baseline entry fails the arm (for CI)",
    )
    group.addoption(
        "--sk-accept",
        action="store_true",
        help="write the selected arms' results into the baseline files (needs --sk-baseline)",
    )
    group.addoption(
        "--sk-strict",
        action="store_true",
        help="a gate comparison that cannot tell a regression from noise ('not decided': "
        "another machine's numerics and a wide spread over seeds) fails the arm",
    )
    group.addoption(
        "--sk-tensorboard",
        default=None,
        metavar="DIR",
        help="also write each arm to TensorBoard under DIR/<stage>/<run> as it trains (needs "
        "pip install 'stabilitykit[tensorboard]'; docs/trackers.md)",
    )
    group.addoption(
        "--sk-mlflow",
        default=None,
        metavar="URI",
        help="also record each arm as an MLflow run, nested under a run per stage and "
        "session: a tracking URI, or a folder (sqlite:///DIR/mlflow.db) (needs pip install "
        "'stabilitykit[mlflow]'; docs/trackers.md)",
    )
    group.addoption(
        "--sk-numerics",
        default=None,
        choices=("auto", "portable", "native"),
        help="CPU kernels: portable (pinned to what every x86-64 with AVX2 runs alike: the same "
        "bits on any such machine), native (this processor's fastest), auto (portable where it "
        "can be guaranteed, else native). Set for the whole session at start-up. Default: "
        "auto, or $STABILITYKIT_NUMERICS",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Pin the CPU kernels before any conftest or test module can run a torch computation:
    each kernel library reads its setting once (:mod:`stabilitykit.numerics`). The environment
    carries the mode to xdist workers and submitit jobs."""
    from stabilitykit.numerics import MODE_ENV, NumericsError, pin, requested_mode

    mode = getattr(early_config.known_args_namespace, "sk_numerics", None)
    try:
        pin(requested_mode(mode))
    except (NumericsError, ValueError) as exc:
        source = "--sk-numerics" if mode is not None else MODE_ENV
        raise pytest.UsageError(f"{source}: {exc}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _quiet_benchmark_under_xdist(config)
    _check_options(config)
    config.addinivalue_line(
        "markers", "stability: a stability benchmark (trains arms with stabilitykit)"
    )
    for stage in STAGE_MARKERS:
        config.addinivalue_line("markers", f"{stage}: stabilitykit stage {stage[-1].upper()}")
    config.pluginmanager.register(StageReporter(config), "stabilitykit-stage-reporter")


#: What pytest-benchmark would write to disk; all of it is off under xdist.
_BENCHMARK_OUTPUTS = (
    ("--benchmark-json", "benchmark_json"),
    ("--benchmark-autosave", "benchmark_autosave"),
    ("--benchmark-save", "benchmark_save"),
)


def _quiet_benchmark_under_xdist(config: pytest.Config) -> None:
    """pytest-benchmark turns itself off under xdist with a warning per process; turn it off
    first, quietly (arm training times are still in every record). When the user asked for
    benchmark files, say once (on the controller) that none are written and where the timings
    are instead."""
    import os

    worker = bool(os.environ.get("PYTEST_XDIST_WORKER")) or hasattr(config, "workerinput")
    xdist = worker or config.getoption("dist", "no") != "no"
    if not (xdist and hasattr(config.option, "benchmark_disable")):
        return
    config.option.benchmark_disable = True
    config.option.benchmark_enable = False
    asked = [flag for flag, dest in _BENCHMARK_OUTPUTS if getattr(config.option, dest, None)]
    if asked and not worker:
        out = config.getoption("sk_out")
        config.issue_config_time_warning(
            pytest.PytestWarning(
                f"stabilitykit: no benchmark JSON is written under xdist (-n): pytest-benchmark "
                f"is off there, so {' and '.join(asked)} did nothing. Every run's timing is in "
                f"its record ({out}/<stage>/runs/<run>/stats.json: train_seconds) and in "
                f"{out}/<stage>/<stage>_metrics.json (train_seconds per run). Run without -n "
                f"for pytest-benchmark's files."
            ),
            stacklevel=2,
        )


def _check_options(config: pytest.Config) -> None:
    """Every session, benchmarks selected or not: a bad option is a usage error before any
    collection or training, naming the option and what is allowed."""
    import os

    for flag in ("sk_accept", "sk_require_baseline"):
        if config.getoption(flag) and not config.getoption("sk_baseline"):
            name = "--" + flag.replace("_", "-")
            raise pytest.UsageError(f"{name} needs --sk-baseline DIR (the baselines folder)")
    for option, dest in (("--sk-seeds", "sk_seeds"), ("--sk-threads", "sk_threads")):
        value = config.getoption(dest)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise pytest.UsageError(f"{option}: got {value!r}; allowed: an int >= 1")
    shard = config.getoption("sk_shard")
    if shard:
        from stabilitykit.shard import parse_shard

        try:
            parse_shard(shard)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    _check_folder("--sk-out", config.getoption("sk_out"))
    cache = config.getoption("sk_cache")
    if cache:
        _check_folder("--sk-cache", cache)
    elif os.environ.get("STABILITYKIT_CACHE"):
        _check_folder("--sk-cache (from $STABILITYKIT_CACHE)", os.environ["STABILITYKIT_CACHE"])
    baseline = config.getoption("sk_baseline")
    if baseline:
        _check_baseline(baseline, config.getoption("sk_scale"), config.getoption("sk_accept"))
    cluster = [config.getoption(dest) for _, dest in _CLUSTER_OPTIONS]
    checked = (config.getoption("sk_device"), config.getoption("sk_fast"), *cluster)
    if any(v is not None for v in checked):
        _options(config)  # imports torch: is the device here? are the other options valid?
    tensorboard, mlflow = config.getoption("sk_tensorboard"), config.getoption("sk_mlflow")
    if tensorboard:
        _check_folder("--sk-tensorboard", tensorboard)
    if tensorboard or mlflow:
        from stabilitykit.track import MissingExtraError, check_available

        try:
            check_available(bool(tensorboard), bool(mlflow))
        except MissingExtraError as exc:
            option = "--sk-tensorboard" if "tensorboard]" in str(exc) else "--sk-mlflow"
            raise pytest.UsageError(f"{option}: {exc}") from None
    executor = config.getoption("sk_executor")
    if executor is not None:
        from stabilitykit.cluster import ClusterError, check_available

        try:
            check_available(executor)
        except ClusterError as exc:
            raise pytest.UsageError(str(exc)) from None


#: ``--sk-executor`` and the job options: (ClusterOptions field, pytest option dest).
_CLUSTER_OPTIONS = (
    ("executor", "sk_executor"),
    ("slurm_partition", "sk_slurm_partition"),
    ("slurm_account", "sk_slurm_account"),
    ("slurm_qos", "sk_slurm_qos"),
    ("slurm_gpus", "sk_slurm_gpus"),
    ("slurm_cpus", "sk_slurm_cpus"),
    ("slurm_time", "sk_slurm_time"),
    ("slurm_max_timeouts", "sk_slurm_max_timeouts"),
    ("slurm_signal_delay", "sk_slurm_signal_delay"),
)


def _check_folder(
    option: str, value: str, allowed: str = "a folder (existing, or one stabilitykit creates)"
) -> Path:
    """``value`` as a folder path: a folder, or a path that can become one (nothing on the way
    to it is a file)."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{option}: got {value!r}, which is a file; allowed: {allowed}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise pytest.UsageError(
                    f"{option}: got {value!r}, under {str(parent)!r}, which is a file; allowed: "
                    f"{allowed}"
                )
            break
    return path


def _check_baseline(value: str, scale: str, accept: bool) -> None:
    """``--sk-baseline``: an existing folder to gate against; with ``--sk-accept`` also a new
    one (created at the end), and every baseline file of this scale must be one that the
    accepted runs can be written into."""
    allowed = "a baselines folder (<dir>/<scale>/<stage>.json)"
    root = _check_folder("--sk-baseline", value, allowed)
    if root.suffix == ".json":
        raise pytest.UsageError(
            f"--sk-baseline: got {value!r}, a .json name; allowed: {allowed} (one file cannot "
            f"hold several stages)"
        )
    if not root.exists():
        if accept:
            return  # --sk-accept creates it
        raise pytest.UsageError(
            f"--sk-baseline: got {value!r}, which does not exist, so nothing would be gated; "
            f"allowed: an existing {allowed[2:]}, or a new one together with --sk-accept (which "
            f"creates it)"
        )
    folder = "custom" if scale == "none" else scale  # --sk-scale none: arms as written
    scale_dir = root / folder
    if scale_dir.exists() and not scale_dir.is_dir():
        raise pytest.UsageError(
            f"--sk-baseline: {str(scale_dir)!r} is a file; allowed: {allowed} (a folder per scale)"
        )
    if not (accept and scale_dir.is_dir()):
        return  # gating: an unusable file fails the arms it holds, naming the file
    from stabilitykit.gate import read_baseline

    for path in sorted(scale_dir.glob("*.json")):
        try:
            baseline = read_baseline(path)
        except (ValueError, OSError) as exc:
            raise pytest.UsageError(
                f"--sk-accept: cannot accept into {path}: {exc}; restore the file (e.g. from "
                f"git) or delete it to start it afresh"
            ) from None
        if (baseline.stage, baseline.scale) != (path.stem, folder):
            raise pytest.UsageError(
                f"--sk-accept: cannot accept into {path}: it holds stage {baseline.stage!r} at "
                f"scale {baseline.scale!r}; expected stage {path.stem!r} at scale {folder!r}"
            )


def _options(config: pytest.Config) -> StudyOptions:
    if _options_key not in config.stash:
        from stabilitykit.cluster import ClusterOptions
        from stabilitykit.stage import StudyOptions

        workerinput = getattr(config, "workerinput", {})
        try:
            options = StudyOptions(
                scale=config.getoption("sk_scale"),
                out=Path(config.getoption("sk_out")),
                device=config.getoption("sk_device"),
                seeds=config.getoption("sk_seeds"),
                rerun=config.getoption("sk_rerun"),
                threads=config.getoption("sk_threads"),
                cache_dir=_path_or_none(config.getoption("sk_cache")),
                resume=config.getoption("sk_resume"),
                fast=config.getoption("sk_fast"),
                numerics=config.getoption("sk_numerics"),
                tensorboard=config.getoption("sk_tensorboard"),
                mlflow=config.getoption("sk_mlflow"),
                worker=_worker_number(workerinput),
                keep_checkpoints=config.getoption("sk_keep_checkpoints"),
                plots=not config.getoption("sk_no_plots"),
                cluster=ClusterOptions(
                    **{field: config.getoption(dest) for field, dest in _CLUSTER_OPTIONS}
                ),
                **({"session": workerinput["sk_session"]} if "sk_session" in workerinput else {}),
            )
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[_options_key] = options
    return config.stash[_options_key]


def _worker_number(workerinput: dict[str, Any]) -> int | None:
    """xdist's worker id ``gw3`` as 3; ``None`` outside xdist."""
    worker = str(workerinput.get("workerid", ""))
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


_options_key = pytest.StashKey["StudyOptions"]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: every worker writes records tagged with the controller's session."""
    node.workerinput["sk_session"] = _options(node.config).session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    seeds = metafunc.config.getoption("sk_seeds")
    if "run_arm" in metafunc.fixturenames and seeds and seeds > 1:
        metafunc.parametrize("sk_replicate", range(seeds), ids=[f"r{i}" for i in range(seeds)])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = config.getoption("sk_shard")
    if not shard:
        return
    from stabilitykit.shard import parse_shard, select_shard

    try:
        index, count = parse_shard(shard)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    stability = [i.nodeid for i in items if i.get_closest_marker("stability")]
    keep = set(select_shard(stability, index, count))
    deselected = [i for i in items if i.get_closest_marker("stability") and i.nodeid not in keep]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if i not in deselected]


def _stage_markers(node: pytest.Item) -> list[str]:
    """The item's distinct ``stage_*`` markers, the closest first."""
    return list(dict.fromkeys(m.name for m in node.iter_markers() if m.name.startswith("stage_")))


def _stage_of(node: pytest.Item) -> str:
    """The item's stage marker; a missing or invalid one fails that item (not the session)."""
    from stabilitykit.stage import check_stage_name

    stages = _stage_markers(node)
    if not stages:
        pytest.fail(
            f"{node.nodeid}: a stability benchmark needs a stage marker, e.g. @pytest.mark.stage_b",
            pytrace=False,
        )
    if len(stages) > 1:
        markers = " and ".join(f"@pytest.mark.{s}" for s in stages)
        pytest.fail(
            f"{node.nodeid}: one stage marker per benchmark, got {markers}; keep one (a run "
            "belongs to one stage's report and gate)",
            pytrace=False,
        )
    try:
        check_stage_name(stages[0])
    except ValueError as exc:
        problem = str(exc)
    else:
        return stages[0]
    marker = f"@pytest.mark.{stages[0]}"
    pytest.fail(f"{node.nodeid}: invalid stage marker {marker} ({problem})", pytrace=False)


@pytest.fixture
def sk_replicate() -> int:
    """Seed replicate index of the current test (0 unless --sk-seeds K > 1)."""
    return 0


@pytest.fixture(scope="session")
def sk_options(request: pytest.FixtureRequest) -> StudyOptions:
    """The session's :class:`~stabilitykit.stage.StudyOptions` (scale, device, seeds, out)."""
    return _options(request.config)


@pytest.fixture(scope="session")
def sk_dataset(sk_options: StudyOptions):
    """Factory for a workload's data sets, backed by the content-addressed cache::

    def test_data(sk_dataset):
        data = sk_dataset(GridLinesSpec(N=32, object_size=128), workload="gridlines")
        assert data.train.diffraction.shape[1:] == (32, 32, 1)
    """
    from stabilitykit.cache import default_cache_dir
    from stabilitykit.workload import get_workload

    cache = sk_options.cache_dir or default_cache_dir()

    def build(spec: Any, workload: Any = "gridlines") -> Any:
        return get_workload(workload).build_data(spec, cache)

    return build


@pytest.fixture
def run_arm(request: pytest.FixtureRequest, sk_options: StudyOptions, sk_replicate: int):
    """Train an arm in the current test's stage and fail the test when a criterion fails::

        @pytest.mark.stage_b
        def test_deep(run_arm):
            result = run_arm(DEEP_CONTROL)                # trains, records, judges
            assert result.metrics["amp_ssim"] > 0.3      # any extra assertion you like

    ``run_arm(arm, criteria=...)`` replaces the default criteria; ``rules=`` the baseline
    gate's metric rules (``stabilitykit.gate.DEFAULT_RULES.override(...)``). The arm is scaled and
    moved to the session's device; the record goes to ``<sk-out>/<stage>/runs/``. Under
    ``--sk-baseline`` the arm also fails on a regression against its baseline entry.
    ``expect="collapsed"`` (any verdict kind) marks an arm meant to fail, e.g. a control that
    must diverge: the test passes when the verdict matches and fails when it does not (the arm
    unexpectedly survived); the baseline then holds that verdict, so the gate stays green.
    ``xfail_unstable=True``: a failed verdict is a finding, not a test failure (a sweep point
    past the edge, docs/frontiers.md): the test shows as xfailed with its reason; a gate
    regression still fails it.
    """
    from stabilitykit.judge.criteria import DEFAULT_CRITERIA
    from stabilitykit.stage import check_expect, run_in_stage

    stage = _stage_of(request.node)

    def run(
        arm: Any,
        *,
        criteria: Any = DEFAULT_CRITERIA,
        rules: Any = None,
        expect: Any = None,
        xfail_unstable: bool = False,
    ):
        expected = check_expect(expect)
        result = _maybe_benchmark(
            request,
            lambda: run_in_stage(
                arm, stage, sk_options, criteria=criteria, replicate=sk_replicate, expect=expected
            ),
        )
        _remember(request, stage=stage, run_dir=result.run_dir, role="arm")
        if expected is None:
            problems = [] if result.verdict.ok else [result.verdict.explain()]
        elif result.verdict.kind.value == expected:
            problems = []  # an arm meant to fail did: the harness and the fix both work
        else:
            problems = [
                f"expected verdict {expected!r}, got {result.verdict.kind.value!r}"
                + ("" if result.verdict.ok else f": {result.verdict.explain()}")
            ]
        gate_problems, known = _gate(request.config, stage, result, rules)
        if problems and not gate_problems and known:
            # the baseline holds this verdict (for this seed, or at every seed), or, against
            # another machine's seeds, it cannot tell: a known result, not a regression
            pytest.xfail(f"{result.arm.id}: {result.verdict.kind.value}, {known}: {problems[0]}")
        if problems and not gate_problems and xfail_unstable:  # e.g. a sweep point past the edge
            pytest.xfail(f"{result.arm.id}: {problems[0]}")
        problems += gate_problems
        if problems:
            pytest.fail(
                f"{result.arm.id}: " + "\n".join(problems) + f"\nrecord: {result.run_dir}",
                pytrace=False,
            )
        return result

    return run


@pytest.fixture
def stage_result(request: pytest.FixtureRequest, sk_options: StudyOptions, sk_replicate: int):
    """Another stage's arm result: its last record at this scale and arm hash, else run now::

    control = stage_result("stage_a", CONTROL)
    result = run_arm(DEEP_CONTROL, criteria=(*DEFAULT_CRITERIA, NoWorseThan(...)))
    """
    from stabilitykit.stage import reference_result

    def get(stage: str, arm: Any):
        result, _ = reference_result(arm, stage, sk_options, replicate=sk_replicate)
        label = f"{stage}/{result.arm.name}"
        _remember(request, stage=_stage_of(request.node), run_dir=result.run_dir, role=label)
        return result

    return get


def _maybe_benchmark(request: pytest.FixtureRequest, fn: Any) -> Any:
    """Time ``fn`` with pytest-benchmark when that plugin is installed and enabled."""
    session = getattr(request.config, "_benchmarksession", None)  # pytest-benchmark's state
    if session is None or session.disabled:
        return fn()  # not installed or off (e.g. under xdist): no fixture, no warning
    benchmark = request.getfixturevalue("benchmark")
    result = benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(
        {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, bool, type(None)))}
    )
    benchmark.extra_info["verdict"] = result.verdict.kind.value
    for key in _BENCHMARK_STATS:
        benchmark.extra_info[key] = result.stats.get(key)
    return result


#: Stats of a run that go into pytest-benchmark's ``extra_info`` beside the metrics.
_BENCHMARK_STATS = (
    "best_val_loss",
    "train_seconds",
    "grad_norm_preclip_median",
    "grad_norm_preclip_p99",
    "grad_norm_preclip_max",
    "grad_norm_postclip_max",
)


def _remember(request: pytest.FixtureRequest, **entry: Any) -> None:
    """Record a run for the session's stage reports (travels to the xdist controller)."""
    entry["run_dir"] = str(entry["run_dir"])
    request.node.user_properties.append((PROPERTY, json.dumps(entry)))


def _gate(config: pytest.Config, stage: str, result: Any, rules: Any) -> tuple[list[str], str]:
    """Problems of ``result`` against its baseline entry (none without ``--sk-baseline``), and,
    when its failed verdict is no regression (``GateResult.known_verdict``), why, naming the
    baseline's path."""
    root = config.getoption("sk_baseline")
    if not root or config.getoption("sk_accept"):
        return [], ""
    from stabilitykit.gate import GateStatus, baseline_path, gate_arm, read_baseline

    path = baseline_path(root, stage, result.arm.scale)
    try:
        baseline = read_baseline(path, missing_ok=True)
    except ValueError as exc:
        return [f"baseline unusable: {exc}"], ""
    gated = gate_arm(result, baseline, rules)
    require, strict = config.getoption("sk_require_baseline"), config.getoption("sk_strict")
    if not gated.ok(require_baseline=require, strict=strict):
        return [f"stability gate against {path}:\n{gated.render()}"], ""
    if gated.status in (GateStatus.MISSING, GateStatus.NOT_COMPARABLE, GateStatus.NOT_DECIDED):
        summary = gated.summary() + (f" ({gated.comparison})" if gated.comparison else "")
        warnings.warn(pytest.PytestWarning(f"stabilitykit gate: {summary}"), stacklevel=1)
    known = gated.known_verdict
    return [], f"{known} ({path})" if known else ""


class StageReporter:
    """Collects the runs of the session (on the xdist controller too) and writes and prints one
    report per stage at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.entries: list[dict[str, Any]] = []
        self.reports: list[Any] = []
        self.gate_lines: list[str] = []
        self.problems: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == PROPERTY and report.when == "call":
                self.entries.append(json.loads(value))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return
        stages = {  # an item with two stage markers failed on it and reports under neither
            marker
            for item in session.items
            if item.get_closest_marker("stability")
            for marker in _stage_markers(item)
            if len(_stage_markers(item)) == 1
        }
        stages |= {e["stage"] for e in self.entries}
        if not stages:
            return
        from stabilitykit.stage import check_stage_name, write_session_reports

        options = _options(self.config)
        failed = False
        for stage in sorted(stages):  # one stage's trouble costs the others nothing
            try:
                check_stage_name(stage)
            except ValueError as exc:  # its items failed on it already
                self.problems.append(f"no report for the marker {stage}: {exc}")
                continue
            try:
                self.reports += write_session_reports(options, [stage], self.entries)
            except Exception as exc:
                failed = True
                self.problems.append(
                    f"{stage}: writing the report failed: {type(exc).__name__}: {exc}\n"
                    + traceback.format_exc()
                )
        if options.tensorboard or options.mlflow:
            from stabilitykit.stage import track_stage_reports

            try:
                track_stage_reports(options, self.reports)
            except Exception as exc:  # the reports are written; a tracker must not cost them
                self.problems.append(f"trackers: the stage reports: {type(exc).__name__}: {exc}")
        root = self.config.getoption("sk_baseline")
        for stage in sorted({e["stage"] for e in self.entries}) if root else ():
            from stabilitykit.stage import gate_session

            try:
                lines, stage_failed = gate_session(
                    options,
                    root,
                    [e for e in self.entries if e["stage"] == stage],
                    accept=self.config.getoption("sk_accept"),
                    require=self.config.getoption("sk_require_baseline"),
                    strict=self.config.getoption("sk_strict"),
                )
            except (ValueError, OSError) as exc:  # e.g. a baseline file that cannot be written
                lines, stage_failed = [f"{stage}: baseline gate failed: {exc}"], True
            self.gate_lines += lines
            failed |= stage_failed
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.problems:
            terminalreporter.section("stabilitykit problems")
            for line in self.problems:
                terminalreporter.write_line(line)
        if self.gate_lines:
            terminalreporter.section("stabilitykit baseline gate")
            for line in self.gate_lines:
                terminalreporter.write_line(line)
        if not self.reports:
            return
        from rich.console import Console

        from stabilitykit.report.terminal import print_stage_report

        console = Console(
            file=terminalreporter._tw,
            force_terminal=terminalreporter.hasmarkup,
            width=max(terminalreporter._tw.fullwidth, 120),
        )
        terminalreporter.section("stabilitykit stage summary")
        for report in self.reports:
            print_stage_report(report, console)
            summary = report.files.get("summary")
            if summary:
                terminalreporter.write_line(f"{report.stage}: report written to {summary}")
