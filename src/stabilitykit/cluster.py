"""Each arm of a pytest session as a cluster job, through submitit.

``--sk-executor slurm`` (or ``local``: subprocesses on this machine, for trying the setup and for
the tests) makes :func:`stabilitykit.stage.run_in_stage` submit the arm as one job and wait for
it; the job trains the arm into the session's ``--sk-out`` with the session's tag, so the stage
report and the gate read its record as if it had been trained in the pytest process. Parallelism
comes from pytest-xdist: ``-n 8`` keeps 8 jobs in flight.

A job that is preempted or reaches its time limit gets submitit's signal (USR2,
``--sk-slurm-signal-delay`` seconds before the end), is requeued with the same job id, and
continues its own run from the last epoch checkpoint, in the same run folder (the record carries
``tags.job``, so a requeued job finds the run it began and nothing else).

submitit is imported only when a job is built or submitted: ``pip install 'stabilitykit[cluster]'``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stabilitykit.arm import Arm
    from stabilitykit.judge.criteria import Criterion
    from stabilitykit.record.run_record import RunRecord
    from stabilitykit.run import ArmResult
    from stabilitykit.stage import StudyOptions

EXECUTORS = ("local", "slurm")
#: Job logs, submission scripts and pickles: ``<sk-out>/<stage>/jobs/``.
JOBS = "jobs"
DEFAULT_TIME_MIN = 60
DEFAULT_SLURM_GPUS = 1
DEFAULT_MAX_TIMEOUTS = 3  # submitit's own default
INSTALL = "pip install 'stabilitykit[cluster]'"
#: A Slurm partition, account or QOS name (a partition may be a comma-separated list).
SLURM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]*(,[A-Za-z0-9_][A-Za-z0-9_.:+-]*)*$")
#: Options that only mean something to Slurm (the local executor has no partitions or CPUs).
SLURM_ONLY = {
    "slurm_partition": "--sk-slurm-partition",
    "slurm_account": "--sk-slurm-account",
    "slurm_qos": "--sk-slurm-qos",
    "slurm_cpus": "--sk-slurm-cpus",
}
#: Options for any executor: time limit, GPUs, requeues after time-outs, signal delay.
JOB_OPTIONS = {
    "slurm_gpus": "--sk-slurm-gpus",
    "slurm_time": "--sk-slurm-time",
    "slurm_max_timeouts": "--sk-slurm-max-timeouts",
    "slurm_signal_delay": "--sk-slurm-signal-delay",
}


class ClusterError(RuntimeError):
    """Jobs cannot be submitted from here (submitit missing, no Slurm), or a job failed."""


def check_options(options: StudyOptions) -> None:
    """``ValueError`` naming the option and what is allowed, for each cluster option of
    ``options`` (all ``None`` without ``--sk-executor``)."""
    executor = options.executor
    if executor is not None and executor not in EXECUTORS:
        raise ValueError(
            f"--sk-executor: got {executor!r}; allowed: one of {EXECUTORS} (or none: train in "
            f"the pytest process)"
        )
    if executor is None:
        for field, flag in {**SLURM_ONLY, **JOB_OPTIONS}.items():
            if _get(options, field) is not None:
                which = "slurm" if field in SLURM_ONLY else "slurm or local"
                raise ValueError(f"{flag}: needs --sk-executor {which}")
    if executor == "local":
        for field, flag in SLURM_ONLY.items():
            if _get(options, field) is not None:
                raise ValueError(f"{flag}: only with --sk-executor slurm (got --sk-executor local)")
    _check_int("--sk-slurm-gpus", options.slurm_gpus, 0)
    _check_int("--sk-slurm-cpus", options.slurm_cpus, 1)
    _check_int("--sk-slurm-time", options.slurm_time, 1)
    _check_int("--sk-slurm-max-timeouts", options.slurm_max_timeouts, 0)
    _check_int("--sk-slurm-signal-delay", options.slurm_signal_delay, 1)
    for field in ("slurm_partition", "slurm_account", "slurm_qos"):
        value = _get(options, field)
        if value is not None and (not isinstance(value, str) or not SLURM_NAME.match(value)):
            raise ValueError(
                f"{SLURM_ONLY[field]}: got {value!r}; allowed: a Slurm name (letters, digits, "
                f"'_', '.', '-', ':', '+'; a partition may be a comma-separated list)"
            )
    delay, time = options.slurm_signal_delay, options.slurm_time or DEFAULT_TIME_MIN
    if delay is not None and delay >= 60 * time:
        raise ValueError(
            f"--sk-slurm-signal-delay: got {delay}; allowed: fewer seconds than the time limit "
            f"({time} min = {60 * time} s)"
        )


def _get(options: StudyOptions, field: str) -> Any:
    return getattr(options, field, None)


def _check_int(flag: str, value: Any, least: int) -> None:
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < least
    ):
        raise ValueError(f"{flag}: got {value!r}; allowed: an int >= {least}")


def _submitit(executor: str) -> Any:
    try:
        import submitit
    except ImportError:
        raise ClusterError(
            f"--sk-executor {executor}: submitit is not installed; install it with {INSTALL}"
        ) from None
    return submitit


def check_available(executor: str) -> None:
    """``ClusterError`` when ``executor``'s jobs cannot be submitted from here."""
    _submitit(executor)
    if executor == "slurm" and shutil.which("srun") is None:
        raise ClusterError(
            "--sk-executor slurm: no Slurm here ('srun' is not on PATH); run pytest on a Slurm "
            "login node, or try the setup on this machine with --sk-executor local"
        )


def make_executor(options: StudyOptions, stage: str) -> Any:
    """The submitit executor of ``options`` for ``stage``: Slurm (``AutoExecutor``) or local
    subprocesses (``LocalExecutor``), with logs in ``<sk-out>/<stage>/jobs/``."""
    executor = options.executor
    if executor not in EXECUTORS:
        raise ValueError(f"--sk-executor: got {executor!r}; allowed: one of {EXECUTORS}")
    check_available(executor)
    submitit = _submitit(executor)
    folder = job_folder(options, stage)
    timeouts = (
        DEFAULT_MAX_TIMEOUTS if options.slurm_max_timeouts is None else options.slurm_max_timeouts
    )
    time = options.slurm_time or DEFAULT_TIME_MIN
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=timeouts)
        gpus = DEFAULT_SLURM_GPUS if options.slurm_gpus is None else options.slurm_gpus
        ex.update_parameters(
            timeout_min=time,
            gpus_per_node=gpus,
            tasks_per_node=1,
            nodes=1,
            cpus_per_task=options.slurm_cpus,  # None: the partition's default
            slurm_partition=options.slurm_partition,
            slurm_account=options.slurm_account,
            slurm_qos=options.slurm_qos,
            slurm_signal_delay_s=options.slurm_signal_delay,  # None: submitit's 90 s
            # Slurm may requeue it too (preemption in REQUEUE mode, a node failure): the job
            # then continues its own run as after submitit's requeue
            slurm_additional_parameters={"requeue": True},
        )
        return ex
    ex = submitit.LocalExecutor(folder=folder, max_num_timeout=timeouts)
    gpus = options.slurm_gpus
    if gpus is None:  # the local executor hides every GPU it is not given
        device = options.device or ""
        gpus = 1 if device.startswith("cuda") else 0
    parameters: dict[str, Any] = {"timeout_min": time, "gpus_per_node": gpus}
    if options.slurm_signal_delay is not None:
        parameters["signal_delay_s"] = options.slurm_signal_delay
    ex.update_parameters(**parameters)
    return ex


def job_folder(options: StudyOptions, stage: str) -> Path:
    """``<sk-out>/<stage>/jobs``, absolute (a job may start in another folder)."""
    return (options.stage_dir(stage) / JOBS).absolute()


class ArmJob:
    """What a job runs: one arm of a stage, trained by :func:`~stabilitykit.stage.run_in_stage`
    in the job (picklable; submitit's checkpointing protocol, so a preempted or timed-out job is
    requeued with it)."""

    def __init__(
        self,
        arm: Arm,
        stage: str,
        options: StudyOptions,
        *,
        criteria: Iterable[Criterion],
        replicate: int = 0,
        expect: str | None = None,
        progress: Any = False,
    ) -> None:
        self.arm = arm
        self.stage = stage
        self.options = options
        # folders as the session means them (a job may start in another folder)
        self.out = Path(options.out).absolute()
        self.cache_dir = Path(options.cache_dir).absolute() if options.cache_dir else None
        self.criteria = tuple(criteria)
        self.replicate = replicate
        self.expect = expect
        self.progress = progress if callable(progress) else False  # no terminal in a job
        workload = type(arm.workload_impl)  # registered here; the job registers it again
        self.workload = (workload.__module__, workload.__qualname__)

    def __call__(self) -> ArmResult:
        from stabilitykit.judge.verdict import VerdictKind
        from stabilitykit.run import check_resume
        from stabilitykit.stage import result_from_record, run_in_stage

        self.register_workload()
        options = self.job_options()  # built here: the device is checked on the job's node
        job = current_job_id()
        resume_from = None
        own = None
        if job is not None:  # a requeued job: continue the run it began
            prepared = options.prepare(self.arm, self.replicate)
            own = job_run(options.stage_dir(self.stage), prepared, options.session, job)
        if own is not None:
            if own.complete and own.verdict.kind is not VerdictKind.INTERRUPTED:
                return result_from_record(own)  # it finished before the job was stopped
            try:
                check_resume(own.path, prepared)
            except ValueError as exc:  # e.g. stopped before its first epoch ended
                print(
                    f"stabilitykit: not resuming {own.path}: {exc}; running afresh", file=sys.stderr
                )
            else:
                resume_from = own.path
        return run_in_stage(
            self.arm,
            self.stage,
            options,
            criteria=self.criteria,
            replicate=self.replicate,
            progress=self.progress,
            expect=self.expect,
            tags={"job": job} if job is not None else None,
            resume_from=resume_from,
        )

    def register_workload(self) -> None:
        """Register the arm's workload in the job, as the session had it (an entry point's, or
        one a module registers with ``register_workload``)."""
        from stabilitykit.workload import register_workload

        module, qualname = self.workload
        try:
            cls: Any = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError) as exc:
            raise ClusterError(
                f"workload {self.arm.workload!r}: its class {module}.{qualname} cannot be "
                f"imported in the job ({exc}); a workload defined in a test file runs in "
                f"process only: install it as a package (a 'stabilitykit.workloads' entry point)"
            ) from None
        register_workload(cls)

    def job_options(self) -> StudyOptions:
        """The session's options as the job trains with them: in this process (no executor),
        on the job's own GPUs (no xdist worker), the session's folders."""
        return dataclasses.replace(
            self.options,
            executor=None,
            worker=None,
            out=self.out,
            cache_dir=self.cache_dir,
            **dict.fromkeys((*JOB_OPTIONS, *SLURM_ONLY)),
        )

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption or time-out: requeue this same job. Its state is on
        disk (the epoch checkpoints in the run folder), so nothing else is carried."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def current_job_id() -> str | None:
    """The submitit job this process runs in (Slurm keeps it across requeues), else ``None``."""
    if "submitit" not in sys.modules:
        return None
    import submitit

    try:
        return str(submitit.JobEnvironment().job_id)
    except (RuntimeError, KeyError):  # not inside a submitit job
        return None


def job_run(stage_dir: Path, arm: Arm, session: str, job: str) -> RunRecord | None:
    """The newest run under ``stage_dir`` of ``arm``, begun by ``job`` in ``session``."""
    from stabilitykit.record.run_record import find_runs, read_record

    best = None
    for path in find_runs(stage_dir):
        try:
            record = read_record(path)
        except (ValueError, OSError):
            continue
        tags = record.config.get("tags") or {}
        if (
            tags.get("session") == session
            and tags.get("job") == job
            and record.config.get("arm_hash") == arm.hash
            and (best is None or (record.created, path.name) > (best.created, best.path.name))
        ):
            best = record
    return best


def submit_arm(task: ArmJob) -> Any:
    """Submit ``task`` as one job of its options' executor; the submitit job."""
    options = task.options
    _pickle_by_value(task)
    executor = make_executor(options, task.stage)
    executor.update_parameters(name=f"{task.stage}-{options.prepare(task.arm, task.replicate).id}")
    return executor.submit(task)


def run_as_job(task: ArmJob) -> ArmResult:
    """Submit ``task`` as a job, wait for it and return its result, as ``run_in_stage`` returns
    it in process. Ctrl-C cancels the job."""
    return job_result(submit_arm(task), task.options, task.stage)


def job_result(job: Any, options: StudyOptions, stage: str) -> ArmResult:
    """Wait for ``job`` and return its :class:`ArmResult`, its run folder under ``options.out``
    as given (relative stays relative); a failed job is a :class:`ClusterError` naming its logs."""
    from stabilitykit.run import ArmResult

    try:
        result = job.result()
    except KeyboardInterrupt:
        job.cancel(check=False)
        raise
    except Exception as exc:
        raise ClusterError(
            f"{options.executor} job {job.job_id} ({stage}) failed: {type(exc).__name__}: {exc}\n"
            f"logs: {job.paths.stdout} and {job.paths.stderr}"
        ) from exc
    if not isinstance(result, ArmResult):
        raise ClusterError(
            f"job {job.job_id} returned {type(result).__name__}, not an ArmResult; logs: "
            f"{job.paths.stdout}"
        )
    runs = options.stage_dir(stage) / "runs"
    if result.run_dir.parent == runs.absolute():
        result = dataclasses.replace(result, run_dir=runs / result.run_dir.name)
    return result


def _pickle_by_value(task: ArmJob) -> None:
    """Criteria or a progress callable from a module a job cannot import by name (a test or
    benchmark file pytest imported by path) travel by value."""
    import cloudpickle

    for obj in (*task.criteria, task.progress):
        name = getattr(obj, "__module__", None) or type(obj).__module__
        module = sys.modules.get(name)
        if module is None or name == "__main__" or name.split(".")[0] == "stabilitykit":
            continue
        try:
            importable = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            importable = False
        if not importable:
            cloudpickle.register_pickle_by_value(module)
