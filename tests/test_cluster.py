"""Each arm as a cluster job through submitit, exercised with submitit's local executor (real
subprocesses): a job's record equals an in-process run's, a preempted job is requeued and
continues its own run from the last epoch checkpoint, bad options are named."""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")

from stabilitykit import Arm  # noqa: E402
from stabilitykit.arm import apply_scale  # noqa: E402
from stabilitykit.cluster import (  # noqa: E402
    ArmJob,
    ClusterError,
    ClusterOptions,
    Heartbeat,
    check_available,
    explain_refusal,
    job_result,
    make_executor,
    submit_arm,
    submitter_timeout,
    watching_submitter,
)
from stabilitykit.judge.criteria import DEFAULT_CRITERIA  # noqa: E402
from stabilitykit.judge.verdict import VerdictKind  # noqa: E402
from stabilitykit.record.run_record import read_record  # noqa: E402
from stabilitykit.stage import StudyOptions, find_resumable, run_in_stage  # noqa: E402
from stabilitykit.train.checkpoint import list_checkpoints  # noqa: E402

pytest_plugins = ["pytester"]

#: 40 training samples in batches of 16: 3 steps per epoch, 5 epochs (as in test_resume.py).
ARM = apply_scale(Arm(workload="darcy", layer_norm_every=2), "smoke").replace(epochs=5)
STOP_AT = 8  # mid epoch 3: the last checkpoint is epoch 2's (step 6)
#: What may differ between a resumed and an uninterrupted run: time, and the resume's own record.
VOLATILE = {"train_seconds", "resumes", "checkpoint_bytes"}
WAIT_S = 60


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "cluster-data-cache"


@pytest.fixture(scope="module")
def whole(tmp_path_factory, cache):
    """``ARM``'s uninterrupted in-process run, the reference of every job test (read only)."""
    here = tmp_path_factory.mktemp("uninterrupted")
    return run_in_stage(ARM, "stage_x", _options(here, cache, "here"), progress=False)


def _options(tmp_path, cache, name="out", executor=None):
    return StudyOptions(
        out=tmp_path / name, scale="none", cache_dir=cache, cluster=ClusterOptions(executor)
    )


def _steps(folder):
    return (folder / "steps.jsonl").read_text().splitlines()[1:]  # rows, header left out


def _untimed(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _assert_same_numbers(result, whole):
    assert result.metrics == whole.metrics
    assert result.verdict == whole.verdict
    assert _steps(result.run_dir) == _steps(whole.run_dir)
    assert _untimed(result.history) == _untimed(whole.history)
    same = {k: v for k, v in result.stats.items() if k not in VOLATILE}
    assert same == {k: v for k, v in whole.stats.items() if k not in VOLATILE}


def _wait_for(path, job):
    """Wait until ``path`` exists; fail with the job's logs when the job ends first."""
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if job.done() or time.monotonic() > deadline:
            pytest.fail(f"{path.name} never came; job log:\n{job.stderr()}")
        time.sleep(0.05)


def _submit(options, progress):
    """Submit ``ARM`` to stage ``stage_x`` as a job of ``options``' executor, with ``progress``."""
    task = ArmJob(
        ARM, "stage_x", options, train=run_in_stage, criteria=DEFAULT_CRITERIA, progress=progress
    )
    return submit_arm(task)


def _submit_paused(options, paused):
    """Submit ``ARM`` as a job whose first run writes its pid to ``paused`` mid epoch 3 (step
    ``STOP_AT``, epoch 2 checkpointed) and waits there to be stopped; a run after it (requeued,
    resumed) passes through. The job and the run folder, once paused."""

    def progress(step, total, info):
        if step == STOP_AT and not paused.exists():
            paused.write_text(str(os.getpid()))
            for _ in range(10 * SLURM_WAIT_S):
                time.sleep(0.1)  # a signal ends it in here

    job = _submit(options, progress)
    _wait_for(paused, job)
    (folder,) = (options.out / "stage_x" / "runs").iterdir()
    assert [e for e, _ in list_checkpoints(folder / "checkpoints")] == [2]
    return job, folder


def test_an_arm_run_as_a_local_job_records_what_an_in_process_run_records(tmp_path, cache, whole):
    options = _options(tmp_path, cache, executor="local")

    result = run_in_stage(ARM, "stage_x", options)  # submits, waits, gathers

    assert result.run_dir.parent == tmp_path / "out" / "stage_x" / "runs"
    _assert_same_numbers(result, whole)
    assert result.stats["resumes"] == []
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["tags"]["session"] == options.session  # the session's report takes it
    assert config["tags"]["stage"] == "stage_x" and config["tags"]["job"]
    job = config["tags"]["job"]
    jobs = tmp_path / "out" / "stage_x" / "jobs"  # logs under --sk-out, nowhere else
    assert (jobs / f"{job}_0_log.out").exists() and (jobs / f"{job}_0_log.err").exists()


def test_a_preempted_job_is_requeued_and_continues_its_run_in_the_same_folder(
    tmp_path, cache, whole
):
    options = _options(tmp_path, cache, executor="local")
    paused = tmp_path / "paused"
    job, folder = _submit_paused(options, paused)  # mid epoch 3, to be preempted
    # what Slurm does before preempting or at --signal time: submitit's signal to the task
    # (LocalJob._interrupt signals the local controller instead, which dies of it: no requeue)
    os.kill(int(paused.read_text()), submitit.JobEnvironment._usr_sig())

    result = job_result(job, options, "stage_x")

    assert result.run_dir == folder  # the same run folder, no second one
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    (entry,) = result.stats["resumes"]
    assert (entry["from_epoch"], entry["from_step"], entry["steps_replayed"]) == (2, 6, 2)
    assert entry["previous_session"] == options.session
    _assert_same_numbers(result, whole)
    assert not (folder / "checkpoints").exists()  # finished: removed
    log = f"{job.stdout()}{job.stderr()}"
    assert "this job is preempted" in log and "Requeued job" in log


def test_a_job_slurm_requeues_itself_continues_its_own_run(tmp_path, cache, whole, monkeypatch):
    """Slurm may requeue a job without submitit's signal (preemption in REQUEUE mode, a node
    failure): the same job id runs the same submission again and continues its run."""
    options = _options(tmp_path, cache, executor="local")
    killed = tmp_path / "killed"

    def progress(step, total, info):
        if step == STOP_AT and not killed.exists():
            killed.touch()
            os.kill(os.getpid(), signal.SIGKILL)  # the node went away

    job = _submit(options, progress)
    job._results_timeout_s = 1  # submitit waits 15 s for a result file a killed job never writes
    with pytest.raises(
        ClusterError, match=rf"(?s)local job {job.job_id} \(stage_x\) failed.*logs: "
    ):
        job_result(job, options, "stage_x")
    (folder,) = (tmp_path / "out" / "stage_x" / "runs").iterdir()
    assert not (folder / "stats.json").exists()  # killed mid-run
    # the requeued job: same id, same submission, run here as its node would run it
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", job.job_id)
    delayed = submitit.helpers.DelayedSubmission.load(job.paths.submitted_pickle)
    result = delayed.result()
    assert result.run_dir == folder and result.stats["resumes"][0]["from_epoch"] == 2
    _assert_same_numbers(result, whole)
    # requeued once more after it finished: the record is taken, nothing is trained again
    again = submitit.helpers.DelayedSubmission.load(job.paths.submitted_pickle).result()
    assert again.run_dir == folder and again.metrics == whole.metrics
    assert len(list(folder.parent.iterdir())) == 1


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"executor": "pbs"}, "--sk-executor: got 'pbs'; allowed: one of ('local', 'slurm')"),
        ({"executor": "slurm", "slurm_time": 0}, "--sk-slurm-time: got 0; allowed: an int >= 1"),
        ({"executor": "slurm", "slurm_gpus": -1}, "--sk-slurm-gpus: got -1; allowed: an int >= 0"),
        ({"executor": "slurm", "slurm_cpus": "4"}, "--sk-slurm-cpus: got '4'; allowed: an int"),
        ({"executor": "slurm", "slurm_max_timeouts": -1}, "--sk-slurm-max-timeouts: got -1"),
        ({"executor": "slurm", "slurm_partition": "gpu long"}, "--sk-slurm-partition: got"),
        ({"executor": "slurm", "slurm_account": ""}, "--sk-slurm-account: got ''"),
        ({"slurm_partition": "gpu"}, "--sk-slurm-partition: needs --sk-executor slurm"),
        ({"slurm_gpus": 0}, "--sk-slurm-gpus: needs --sk-executor slurm or local"),
        ({"executor": "local", "slurm_qos": "high"}, "--sk-slurm-qos: only with --sk-executor"),
        (
            {"executor": "slurm", "slurm_time": 2, "slurm_signal_delay": 120},
            "--sk-slurm-signal-delay: got 120; allowed: fewer seconds than the time limit "
            "(2 min = 120 s)",
        ),
    ],
)
def test_bad_cluster_options_are_named(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ClusterOptions(**kw)


def test_missing_submitit_or_slurm_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ClusterError, match=r"no Slurm here \('srun' is not on PATH\)"):
        check_available("slurm")
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit fails
    with pytest.raises(ClusterError, match=r"pip install 'stabilitykit\[cluster\]'"):
        check_available("local")


def test_slurm_jobs_get_the_options_as_sbatch_flags(tmp_path, monkeypatch):
    """No Slurm here: submitit's own sbatch script is built and read."""
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    options = StudyOptions(
        out=tmp_path / "out",
        device="cuda",  # checked on the job's node, not here
        cluster=ClusterOptions(
            executor="slurm",
            slurm_partition="gpu",
            slurm_account="lab",
            slurm_gpus=2,
            slurm_cpus=8,
            slurm_time=240,
            slurm_signal_delay=300,
        ),
    )
    ex = make_executor(options, "stage_b")
    text = ex._executor._make_submission_file_text("python -m job", "uid")
    for flag in (
        "--partition=gpu",
        "--account=lab",
        "--gpus-per-node=2",
        "--cpus-per-task=8",
        "--time=240",
        "--signal=USR2@300",
        "--requeue",
        f"--output={tmp_path / 'out' / 'stage_b' / 'jobs'}/%j_%t_log.out".replace("%t", "0"),
    ):
        assert f"#SBATCH {flag}\n" in text + "\n", flag
    assert ex._executor.max_num_timeout == 3
    # by default a job asks for what its arm trains on: no GPU for a CPU arm, one for CUDA
    default = make_executor(StudyOptions(out=tmp_path, cluster=ClusterOptions("slurm")), "stage_b")
    text = default._executor._make_submission_file_text("python -m job", "uid")
    assert "#SBATCH --time=60\n" in text
    assert "#SBATCH --gpus-per-node=1\n" not in text and "gres=gpu" not in text
    options = StudyOptions(out=tmp_path, cluster=ClusterOptions("slurm"))
    on_gpu = make_executor(options, "stage_b", device="cuda:0")
    text = on_gpu._executor._make_submission_file_text("python -m job", "uid")
    assert "#SBATCH --gpus-per-node=1\n" in text


@pytest.mark.parametrize(
    ("stderr", "option"),
    [
        ("sbatch: error: Invalid generic resource (gres) specification", "--sk-slurm-gpus"),
        ("sbatch: error: invalid partition specified: gpu", "--sk-slurm-partition"),
        ("sbatch: error: Invalid account or account/partition combination", "--sk-slurm-account"),
        ("sbatch: error: Invalid qos specification", "--sk-slurm-qos"),
        (
            "sbatch: error: Requested time limit is invalid (missing or exceeds some limit)",
            "--sk-slurm-time",
        ),
    ],
)
def test_an_sbatch_refusal_names_the_option_behind_it(stderr, option):
    failed = RuntimeError(f"Could not make sbatch call.\nError: {stderr}\n")
    refusal = explain_refusal(failed)
    assert isinstance(refusal, ClusterError)
    assert str(refusal).startswith(f"{option}: Slurm refused the job ({stderr})")
    assert explain_refusal(RuntimeError("job 12 failed: KeyError")) is None


def test_a_pytest_session_with_the_local_executor_reports_its_jobs(pytester, sk_pytest):
    pytester.makepyfile(
        """
import pytest
from pathlib import Path
from stabilitykit import Arm
from stabilitykit.judge.criteria import Finite

@pytest.mark.stability
@pytest.mark.stage_a
def test_arm(run_arm, sk_options):
    result = run_arm(Arm(workload="darcy", layer_norm_every=2), criteria=(Finite(),))
    assert result.run_dir.parent == Path("reports/stage_a/runs")
    Path("session.txt").write_text(sk_options.session)
"""
    )
    result = sk_pytest("--sk-executor", "local")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*stabilitykit stage summary*", "*stage_a: report written*"])
    stage = pytester.path / "reports" / "stage_a"
    assert (stage / "summary.md").exists()
    (run,) = (stage / "runs").iterdir()
    tags = json.loads((run / "config.json").read_text())["tags"]
    assert tags["session"] == (pytester.path / "session.txt").read_text()
    assert list((stage / "jobs").glob(f"{tags['job']}_0_log.out"))

    bad = sk_pytest("--sk-executor", "slurm", "--sk-slurm-time", "0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--sk-slurm-time: got 0; allowed: an int >= 1*"])


def test_a_local_job_whose_submitter_is_gone_stops_as_interrupted_and_resumes(tmp_path, cache):
    """``kill -9`` of pytest under the local executor: the job sees its submitter gone and
    stops its run as Ctrl-C would. Run here in process, a stand-in process as the submitter."""
    options = _options(tmp_path, cache, executor="local")
    submitter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    killed = []

    def progress(step, total, info):
        if step == STOP_AT:
            submitter.kill()
            submitter.wait()
            killed.append(time.monotonic())
            time.sleep(10)  # interrupted in here

    task = ArmJob(
        ARM, "stage_x", options, train=run_in_stage, criteria=DEFAULT_CRITERIA, progress=progress
    )
    assert task.submitter == os.getpid()
    task.submitter, task.watch_interval = submitter.pid, 0.05
    # a job started from a background shell ignores SIGINT: the watch still interrupts it
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            task()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - killed[0] < 5

    (folder,) = (tmp_path / "out" / "stage_x" / "runs").iterdir()
    record = read_record(folder)
    assert record.verdict.kind is VerdictKind.INTERRUPTED
    assert [e for e, _ in list_checkpoints(folder / "checkpoints")] == [2]
    assert find_resumable(tmp_path / "out" / "stage_x", options.prepare(ARM)) == folder


def test_a_job_stops_when_its_submitters_heartbeat_stops_and_not_while_it_beats(tmp_path):
    path = tmp_path / "jobs" / "x.heartbeat"
    beats = Heartbeat(path, interval=0.05)
    assert path.exists()
    with watching_submitter(None, 0.05, heartbeat=path, timeout=0.5):
        time.sleep(1.5)  # three timeouts, beaten all along: not interrupted
        beats.stop()  # the submitter is gone (here: stopped beating)
        assert not path.exists()
        stopped = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            time.sleep(10)
    assert time.monotonic() - stopped < 3


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_submitter_timeout_is_named(monkeypatch, value):
    monkeypatch.setenv("STABILITYKIT_SUBMITTER_TIMEOUT_S", value)
    with pytest.raises(ValueError, match=r"STABILITYKIT_SUBMITTER_TIMEOUT_S: got .*seconds > 0"):
        submitter_timeout()


# --- on a real Slurm ---------------------------------------------------------------------------
# A one-node cluster on this machine: `bash benchmarks/slurm/cluster.sh up` (as root). The tests
# below are marked `slurm` and skip, saying how to bring one up, when no Slurm answers here.

REPO = Path(__file__).resolve().parents[1]
#: How long a job may wait in the queue and run before a test gives up on it (seconds).
SLURM_WAIT_S = 240
#: A run folder's name ends with its start time and a random suffix; the rest is the arm's id.
RUN_SUFFIX = re.compile(r"-\d{8}T\d+Z-[0-9a-f]{6}")


def _slurm_down() -> str | None:
    """Why no Slurm can take jobs here, ``None`` when its controller answers."""
    if shutil.which("sbatch") is None:
        return "no Slurm here ('sbatch' is not on PATH)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Slurm controller answers ({exc})"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"no Slurm controller answers ({(ping.stdout or ping.stderr).strip()})"
    return None


SLURM_DOWN = _slurm_down()
on_slurm = pytest.mark.skipif(
    SLURM_DOWN is not None,
    reason=f"{SLURM_DOWN}; bring a one-node cluster up with `bash benchmarks/slurm/cluster.sh up`",
)


def _queue(workdir):
    """``{job id: state}`` of the queued or running jobs submitted from ``workdir``."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%T|%Z"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return {job: state for job, state, where in rows if Path(where) == Path(workdir)}


def _sacct_states(job_id):
    """The states of ``job_id``'s allocations, oldest first (a requeue leaves one per run)."""
    out = subprocess.run(
        ["sacct", "-j", str(job_id), "-X", "-D", "-n", "-P", "-o", "State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _until(condition, what, timeout=SLURM_WAIT_S, session=None):
    """Wait for ``condition``; fail after ``timeout`` s, or when ``session`` (a Popen) ends."""
    deadline = time.monotonic() + timeout
    while not condition():
        if session is not None and session.poll() is not None:
            pytest.fail(f"{what}: the session ended first (exit code {session.returncode})")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s; squeue:\n{_squeue_all()}")
        time.sleep(0.5)


def _squeue_all():
    return subprocess.run(["squeue"], capture_output=True, text=True).stdout


def _session_env(**extra):
    """This process's environment for a nested session: not an xdist worker, this venv first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env.pop("PYTEST_ADDOPTS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _stage_session(out, cache, *extra):
    """``pytest benchmarks -m stage_darcy`` at smoke, in the repository (``extra``: ``-n 2``,
    the executor)."""
    argv = [sys.executable, "-m", "pytest", "benchmarks", "-m", "stage_darcy"]
    argv += ["--sk-scale", "smoke", "--sk-out", str(out), "--sk-cache", str(cache)]
    argv += ["-p", "no:cacheprovider", "-p", "no:randomly", "-q", *extra]
    done = subprocess.run(argv, cwd=REPO, env=_session_env(), capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]  # 1: verdicts
    return done


def _by_arm(stage_dir):
    """``{arm id: run folder}`` of a stage's runs."""
    return {RUN_SUFFIX.sub("", p.name): p for p in (stage_dir / "runs").iterdir()}


def _record_numbers(folder):
    """What a run computed: metrics, verdict, every logged step, the epoch history (untimed)
    and its stats (untimed)."""
    record = read_record(folder)
    return {
        "metrics": record.metrics,
        "verdict": record.verdict,
        "steps": _steps(folder),
        "history": _untimed(record.history),
        "stats": {k: v for k, v in record.stats.items() if k not in VOLATILE},
    }


def _assert_same_stage(a, b):
    """Two stage folders hold the same runs, number for number, and the same summary (up to the
    run folders' names and the training times)."""
    runs_a, runs_b = _by_arm(a), _by_arm(b)
    assert sorted(runs_a) == sorted(runs_b)
    for arm in runs_a:
        assert _record_numbers(runs_a[arm]) == _record_numbers(runs_b[arm]), arm
    summary = [RUN_SUFFIX.sub("", (d / "summary.md").read_text()) for d in (a, b)]
    assert summary[0] == summary[1]


@pytest.fixture(scope="module")
def darcy_smoke_session(tmp_path_factory):
    """The Darcy stage at smoke, a local serial session: the reference (read only)."""
    here = tmp_path_factory.mktemp("local-session")
    _stage_session(here / "out", here / "cache", "-n", "0")
    return here / "out" / "stage_darcy"


@pytest.mark.slurm
@on_slurm
def test_a_stage_through_slurm_under_xdist_equals_a_local_session(tmp_path, darcy_smoke_session):
    done = _stage_session(tmp_path / "out", tmp_path / "cache", "-n", "2", "--sk-executor", "slurm")

    stage = tmp_path / "out" / "stage_darcy"
    _assert_same_stage(stage, darcy_smoke_session)
    for folder in _by_arm(stage).values():  # each arm ran as a Slurm job, and it says which
        job = json.loads((folder / "config.json").read_text())["tags"]["job"]
        assert _sacct_states(job) == ["COMPLETED"]
        assert (stage / "jobs" / f"{job}_0_log.out").exists()
    assert "stage_darcy: report written" in done.stdout
    assert not list((stage / "jobs").glob("*.heartbeat"))  # each removed when its job ended


@pytest.mark.slurm
@on_slurm
def test_a_job_slurm_requeues_mid_run_ends_with_an_uninterrupted_runs_numbers(
    tmp_path, cache, whole
):
    options = _options(tmp_path, cache, executor="slurm")
    job, folder = _submit_paused(options, tmp_path / "paused")  # mid epoch 3, for the requeue
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True)

    result = job_result(job, options, "stage_x")

    assert result.run_dir == folder  # the same run folder, no second one
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    (entry,) = result.stats["resumes"]
    assert (entry["from_epoch"], entry["from_step"]) == (2, 6)
    _assert_same_numbers(result, whole)
    _until(lambda: _sacct_states(job.job_id)[-1] != "RUNNING", "the job's end in sacct", 30)
    assert _sacct_states(job.job_id) == ["REQUEUED", "COMPLETED"]
    assert "Slurm stops this job" in job.stderr()


@pytest.mark.slurm
@on_slurm
def test_a_job_past_its_time_limit_leaves_an_interrupted_record_that_resume_finishes(
    tmp_path, cache, whole
):
    options = dataclasses.replace(
        _options(tmp_path, cache),
        cluster=ClusterOptions("slurm", slurm_time=1, slurm_max_timeouts=0),
    )
    job, folder = _submit_paused(options, tmp_path / "paused")  # the time limit ends it there
    job._results_timeout_s = 1  # submitit waits 15 s for a result file a killed job never writes
    with pytest.raises(ClusterError, match=r"reached its time limit \(1 min, --sk-slurm-time\)"):
        job_result(job, options, "stage_x")

    assert _sacct_states(job.job_id) == ["TIMEOUT"]
    (folder,) = (tmp_path / "out" / "stage_x" / "runs").iterdir()
    record = read_record(folder)  # readable, and it says what happened
    assert record.complete and record.verdict.kind is VerdictKind.INTERRUPTED
    assert [e for e, _ in list_checkpoints(folder / "checkpoints")] == [2]

    # --sk-resume, through Slurm again: the run continues in its folder to the full numbers
    resumed = run_in_stage(ARM, "stage_x", dataclasses.replace(options, resume=True))
    assert resumed.run_dir == folder
    assert resumed.stats["resumes"][0]["from_epoch"] == 2
    _assert_same_numbers(resumed, whole)


@pytest.mark.slurm
@on_slurm
def test_the_job_array_recipe_runs_as_documented_and_merges_to_the_single_session(
    tmp_path, darcy_smoke_session
):
    results = tmp_path / "results"
    results.mkdir()
    env = _session_env(
        SK_STAGE="stage_darcy",
        SK_SCALE="smoke",
        SK_DEVICE="cpu",
        SK_RESULTS=str(results),
        STABILITYKIT_CACHE=str(tmp_path / "cache"),
    )
    # docs/long-runs.md: sbatch --wait, then stabilitykit merge (no GPU here: no --gres; two
    # shards of two arms each: --array on the command line, as the docs allow)
    sbatch = ["sbatch", "--wait", "--array=1-2", f"--output={results}/%x-%A_%a.out"]
    sbatch.append("benchmarks/slurm/stage.sbatch")
    done = subprocess.run(sbatch, cwd=REPO, env=env, capture_output=True, text=True)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(results.glob("*.out")))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    shards = sorted(results.glob("stage_darcy/shard-*"))
    assert [p.name for p in shards] == ["shard-1", "shard-2"]
    merge = ["stabilitykit", "merge", *map(str, shards)]
    merge += ["--out", str(results / "merged"), "--stage", "stage_darcy"]
    subprocess.run(merge, cwd=REPO, env=env, check=True, capture_output=True)

    _assert_same_stage(results / "merged" / "stage_darcy", darcy_smoke_session)


KILLED_SESSION = """
import pytest
from stabilitykit import Arm
from stabilitykit.arm import apply_scale
from stabilitykit.judge.criteria import Finite

# smoke-sized, thousands of epochs (run as written): still training when the session is stopped
ARM = apply_scale(Arm(workload="darcy"), "smoke").replace(epochs=5000)

@pytest.mark.stability
@pytest.mark.stage_a
@pytest.mark.parametrize("name", ["first", "second"])
def test_arm(run_arm, name):
    run_arm(ARM.replace(name=name), criteria=(Finite(),))
"""


@pytest.mark.slurm
@on_slurm
@pytest.mark.parametrize(
    ("stop", "workers"),
    [
        ("kill -9", 2),  # the orphaned xdist workers cancel their jobs
        ("kill -9", 0),  # no process is left: the jobs see the heartbeat stop
        ("ctrl-c", 2),  # the workers cancel their jobs
    ],
)
def test_a_stopped_session_leaves_no_job_in_the_queue(pytester, stop, workers):
    pytester.makepyfile(test_killed=KILLED_SESSION)
    argv = [sys.executable, "-m", "pytest", "test_killed.py", "-n", str(workers)]
    argv += ["--sk-scale", "none"]
    argv += ["--sk-executor", "slurm", "-p", "no:cacheprovider", "-p", "no:randomly"]
    env = _session_env(STABILITYKIT_SUBMITTER_TIMEOUT_S="4")
    log = (pytester.path / "session.log").open("w")
    session = subprocess.Popen(
        argv,
        cwd=pytester.path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # as from a terminal: an xdist worker running this test may ignore SIGINT, and a
        # child inherits that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        runs = pytester.path / "reports" / "stage_a" / "runs"
        _until(
            lambda: (
                list(_queue(pytester.path).values()).count("RUNNING") == max(workers, 1)
                and runs.is_dir()
                and len(list(runs.glob("*/checkpoints/*"))) >= max(workers, 1)
            ),
            "both jobs training",
            session=session,
        )
        jobs = sorted(_queue(pytester.path))
        if stop == "kill -9":
            os.kill(session.pid, signal.SIGKILL)  # the session only: its xdist workers live on
        else:
            os.killpg(session.pid, signal.SIGINT)  # what Ctrl-C sends the foreground group
        _until(lambda: not _queue(pytester.path), "the session's jobs gone from squeue", 60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session.pid, signal.SIGKILL)
        session.wait()
        log.close()
    # each job says why it stopped: cancelled by its worker (Slurm's SIGTERM), or its session
    # stopped beating
    why = "has not beaten for 4 s" if workers == 0 else "Slurm stops this job (SIGTERM"
    for job in jobs:
        log = pytester.path / "reports" / "stage_a" / "jobs" / f"{job}_0_log.err"
        assert why in log.read_text(), log.read_text()[-2000:]
    for folder in runs.iterdir():  # each run stopped as interrupted, resumable
        assert read_record(folder).verdict.kind is VerdictKind.INTERRUPTED
