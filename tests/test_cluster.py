"""Each arm as a cluster job through submitit, exercised with submitit's local executor (real
subprocesses): a job's record equals an in-process run's, a preempted job is requeued and
continues its own run from the last epoch checkpoint, bad options are named."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

submitit = pytest.importorskip("submitit")

from stabilitykit import Arm  # noqa: E402
from stabilitykit.arm import apply_scale  # noqa: E402
from stabilitykit.cluster import (  # noqa: E402
    ArmJob,
    ClusterError,
    ClusterOptions,
    check_available,
    explain_refusal,
    job_result,
    make_executor,
    submit_arm,
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

    def progress(step, total, info):
        # the first attempt waits mid epoch 3 to be preempted; the requeued one passes through
        if step == STOP_AT and not paused.exists():
            paused.write_text(str(os.getpid()))
            for _ in range(1200):
                time.sleep(0.1)

    job = submit_arm(
        ArmJob(
            ARM,
            "stage_x",
            options,
            train=run_in_stage,
            criteria=DEFAULT_CRITERIA,
            progress=progress,
        )
    )
    _wait_for(paused, job)
    (folder,) = (tmp_path / "out" / "stage_x" / "runs").iterdir()
    assert [e for e, _ in list_checkpoints(folder / "checkpoints")] == [2]
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

    job = submit_arm(
        ArmJob(
            ARM,
            "stage_x",
            options,
            train=run_in_stage,
            criteria=DEFAULT_CRITERIA,
            progress=progress,
        )
    )
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
