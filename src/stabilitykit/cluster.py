"""Each arm of a pytest session as a cluster job, through submitit.

``--sk-executor slurm`` (or ``local``: subprocesses on this machine, for trying the setup and for
the tests) makes :func:`stabilitykit.stage.run_in_stage` submit the arm as one job and wait for
it; the job trains the arm into the session's ``--sk-out`` with the session's tag, so the stage
report and the gate read its record as if it had been trained in the pytest process. Parallelism
comes from pytest-xdist: ``-n 8`` keeps 8 jobs in flight.

A job watches the pytest process that submitted it. That process rewrites a heartbeat file in
``<sk-out>/<stage>/jobs/`` every few seconds while it waits; when the file stops changing for
:data:`SUBMITTER_TIMEOUT_S` (``kill -9`` of pytest, a lost login node), or, for a local job, when
the process is gone, the job stops its run as interrupted, as Ctrl-C would: it writes nothing
more into ``--sk-out``, the job ends, and ``--sk-resume`` continues the run. Ctrl-C on pytest
cancels the jobs it waits for.

Slurm's own stop (the time limit, ``scancel``, a requeue) sends SIGTERM: the job stops its run as
interrupted too, within Slurm's KillWait, so the record stays readable and resumable.

A job that is preempted or reaches its time limit gets submitit's signal (USR2,
``--sk-slurm-signal-delay`` seconds before the end), is requeued with the same job id, and
continues its own run from the last epoch checkpoint, in the same run folder (the record carries
``tags.job``, so a requeued job finds the run it began and nothing else).

submitit is imported only when a job is built or submitted: ``pip install 'stabilitykit[cluster]'``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stabilitykit.arm import Arm
    from stabilitykit.judge.criteria import Criterion
    from stabilitykit.record.run_record import RunRecord
    from stabilitykit.run import ArmResult

#: The session's options (a :class:`stabilitykit.stage.StudyOptions`: ``cluster``, ``out``,
#: ``cache_dir``, ``device``, ``prepare``, ``stage_dir``); this module does not import the
#: session, which imports it.
Options = Any
#: How a job trains its arm: :func:`stabilitykit.stage.run_in_stage`, passed in by the session.
Train = Callable[..., "ArmResult"]

EXECUTORS = ("local", "slurm")
#: Job logs, submission scripts and pickles: ``<sk-out>/<stage>/jobs/``.
JOBS = "jobs"
DEFAULT_TIME_MIN = 60
DEFAULT_MAX_TIMEOUTS = 3  # submitit's own default
#: How often a job checks that the process that submitted it is still there (seconds).
WATCH_INTERVAL_S = 1.0
#: A job whose submitter's heartbeat has not changed for this long stops its run (seconds);
#: ``STABILITYKIT_SUBMITTER_TIMEOUT_S`` in the submitter's environment sets another. Generous,
#: because a shared file system may show a file's new content only after its attribute cache
#: (up to a minute on NFS) expires.
SUBMITTER_TIMEOUT_S = 120.0
SUBMITTER_TIMEOUT_ENV = "STABILITYKIT_SUBMITTER_TIMEOUT_S"
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


@dataclass(frozen=True)
class ClusterOptions:
    """Each arm of a session as a cluster job: the executor (``None``: train in the pytest
    process) and the job's options, each checked when built; a ``ValueError`` names the pytest
    option (``--sk-slurm-time``) and what it allows."""

    executor: str | None = None  # "local" or "slurm"
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    slurm_gpus: int | None = None  # per job; None: 1 for an arm on CUDA, else 0
    slurm_cpus: int | None = None  # per job; None: the partition's default
    slurm_time: int | None = None  # minutes; None: 60
    slurm_max_timeouts: int | None = None  # requeues after a time-out; None: 3
    slurm_signal_delay: int | None = None  # seconds before the end; None: submitit's

    def __post_init__(self) -> None:
        executor = self.executor
        if executor is not None and executor not in EXECUTORS:
            raise ValueError(
                f"--sk-executor: got {executor!r}; allowed: one of {EXECUTORS} (or none: train "
                "in the pytest process)"
            )
        if executor is None:
            for name, flag in {**SLURM_ONLY, **JOB_OPTIONS}.items():
                if getattr(self, name) is not None:
                    which = "slurm" if name in SLURM_ONLY else "slurm or local"
                    raise ValueError(f"{flag}: needs --sk-executor {which}")
        if executor == "local":
            for name, flag in SLURM_ONLY.items():
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{flag}: only with --sk-executor slurm (got --sk-executor local)"
                    )
        _check_int("--sk-slurm-gpus", self.slurm_gpus, 0)
        _check_int("--sk-slurm-cpus", self.slurm_cpus, 1)
        _check_int("--sk-slurm-time", self.slurm_time, 1)
        _check_int("--sk-slurm-max-timeouts", self.slurm_max_timeouts, 0)
        _check_int("--sk-slurm-signal-delay", self.slurm_signal_delay, 1)
        for name in ("slurm_partition", "slurm_account", "slurm_qos"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not SLURM_NAME.match(value)):
                raise ValueError(
                    f"{SLURM_ONLY[name]}: got {value!r}; allowed: a Slurm name (letters, digits, "
                    f"'_', '.', '-', ':', '+'; a partition may be a comma-separated list)"
                )
        delay, time = self.slurm_signal_delay, self.slurm_time or DEFAULT_TIME_MIN
        if delay is not None and delay >= 60 * time:
            raise ValueError(
                f"--sk-slurm-signal-delay: got {delay}; allowed: fewer seconds than the time "
                f"limit ({time} min = {60 * time} s)"
            )


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


def job_gpus(cluster: ClusterOptions, device: str | None) -> int:
    """GPUs per job: ``--sk-slurm-gpus`` when given, else what the arm trains on (1 on CUDA,
    0 on the CPU: a request for a GPU that a CPU arm never uses is refused by a cluster without
    GPUs, and wastes one on a cluster with them)."""
    if cluster.slurm_gpus is not None:
        return cluster.slurm_gpus
    return 1 if (device or "cpu").startswith("cuda") else 0


#: sbatch's refusals, by a fragment of its message, and the option that set what it refused.
SBATCH_REFUSALS = (
    ("generic resource", "--sk-slurm-gpus"),
    ("gres", "--sk-slurm-gpus"),
    ("account", "--sk-slurm-account"),  # before partition: "account/partition combination"
    ("partition", "--sk-slurm-partition"),
    ("qos", "--sk-slurm-qos"),
    ("time limit", "--sk-slurm-time"),
    ("cpu count", "--sk-slurm-cpus"),
    ("cpus", "--sk-slurm-cpus"),
)


def explain_refusal(exc: BaseException) -> ClusterError | None:
    """A :class:`ClusterError` naming the option behind sbatch's refusal in ``exc`` (submitit
    raises sbatch's stderr as it is), ``None`` when ``exc`` is no sbatch refusal."""
    text = str(exc)
    if "sbatch: error" not in text:
        return None
    reason = text[text.index("sbatch: error") :].splitlines()[0]
    lower = reason.lower()
    for fragment, option in SBATCH_REFUSALS:
        if fragment in lower:
            return ClusterError(f"{option}: Slurm refused the job ({reason})")
    return ClusterError(f"--sk-executor slurm: Slurm refused the job ({reason})")


def make_executor(options: Options, stage: str, device: str | None = None) -> Any:
    """The submitit executor of ``options`` for ``stage``: Slurm (``AutoExecutor``) or local
    subprocesses (``LocalExecutor``), with logs in ``<sk-out>/<stage>/jobs/``. ``device``: the
    arm's (GPUs per job, :func:`job_gpus`); ``None``: the session's ``--sk-device``."""
    cluster = options.cluster
    executor = cluster.executor
    if executor not in EXECUTORS:
        raise ValueError(f"--sk-executor: got {executor!r}; allowed: one of {EXECUTORS}")
    check_available(executor)
    submitit = _submitit(executor)
    folder = job_folder(options, stage)
    timeouts = (
        DEFAULT_MAX_TIMEOUTS if cluster.slurm_max_timeouts is None else cluster.slurm_max_timeouts
    )
    time = cluster.slurm_time or DEFAULT_TIME_MIN
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=timeouts)
        gpus = job_gpus(cluster, device or options.device)
        ex.update_parameters(
            timeout_min=time,
            gpus_per_node=gpus,
            tasks_per_node=1,
            nodes=1,
            cpus_per_task=cluster.slurm_cpus,  # None: the partition's default
            slurm_partition=cluster.slurm_partition,
            slurm_account=cluster.slurm_account,
            slurm_qos=cluster.slurm_qos,
            slurm_signal_delay_s=cluster.slurm_signal_delay,  # None: submitit's 90 s
            # Slurm may requeue it too (preemption in REQUEUE mode, a node failure): the job
            # then continues its own run as after submitit's requeue
            slurm_additional_parameters={"requeue": True},
        )
        return ex
    ex = submitit.LocalExecutor(folder=folder, max_num_timeout=timeouts)
    gpus = job_gpus(cluster, device or options.device)  # it hides every GPU it is not given
    parameters: dict[str, Any] = {"timeout_min": time, "gpus_per_node": gpus}
    if cluster.slurm_signal_delay is not None:
        parameters["signal_delay_s"] = cluster.slurm_signal_delay
    ex.update_parameters(**parameters)
    return ex


def job_folder(options: Options, stage: str) -> Path:
    """``<sk-out>/<stage>/jobs``, absolute (a job may start in another folder)."""
    return (options.stage_dir(stage) / JOBS).absolute()


class ArmJob:
    """What a job runs: one arm of a stage, trained in the job by ``train`` (the session's
    :func:`~stabilitykit.stage.run_in_stage`, pickled by reference). Picklable, and submitit's
    checkpointing protocol, so a preempted or timed-out job is requeued with it."""

    def __init__(
        self,
        arm: Arm,
        stage: str,
        options: Options,
        *,
        criteria: Iterable[Criterion],
        replicate: int = 0,
        train: Train,
        expect: str | None = None,
        progress: Any = False,
    ) -> None:
        self.arm = arm
        self.train = train
        self.stage = stage
        self.options = options
        # folders as the session means them (a job may start in another folder)
        self.out = Path(options.out).absolute()
        self.cache_dir = Path(options.cache_dir).absolute() if options.cache_dir else None
        self.criteria = tuple(criteria)
        self.replicate = replicate
        self.expect = expect
        self.progress = progress if callable(progress) else False  # no terminal in a job
        # a job ends with the pytest process that submitted it: a local job watches its pid,
        # every job the heartbeat it writes while it waits (a Slurm job may run on another node)
        self.submitter = os.getpid() if options.cluster.executor == "local" else None
        self.watch_interval = WATCH_INTERVAL_S
        self.heartbeat = job_folder(options, stage) / f"{uuid.uuid4().hex}.heartbeat"
        self.submitter_timeout = submitter_timeout()
        workload = type(arm.workload_impl)  # registered here; the job registers it again
        self.workload = (workload.__module__, workload.__qualname__)

    def __call__(self) -> ArmResult:
        # getattr: a job pickled by an older version has neither
        with (
            watching_submitter(
                getattr(self, "submitter", None),
                getattr(self, "watch_interval", WATCH_INTERVAL_S),
                heartbeat=getattr(self, "heartbeat", None),
                timeout=getattr(self, "submitter_timeout", SUBMITTER_TIMEOUT_S),
            ),
            stopping_on_slurm_signals(),
        ):
            return self._run()

    def _run(self) -> ArmResult:
        from stabilitykit.judge.verdict import VerdictKind
        from stabilitykit.run import check_resume, result_from_record

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
        return self.train(
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

    def job_options(self) -> Options:
        """The session's options as the job trains with them: in this process (no executor),
        on the job's own GPUs (no xdist worker), the session's folders."""
        return dataclasses.replace(
            self.options,
            cluster=ClusterOptions(),
            worker=None,
            out=self.out,
            cache_dir=self.cache_dir,
        )

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption or time-out: requeue this same job. Its state is on
        disk (the epoch checkpoints in the run folder), so nothing else is carried."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def submitter_timeout() -> float:
    """:data:`SUBMITTER_TIMEOUT_S`, or ``STABILITYKIT_SUBMITTER_TIMEOUT_S`` (seconds > 0)."""
    value = os.environ.get(SUBMITTER_TIMEOUT_ENV)
    if value is None:
        return SUBMITTER_TIMEOUT_S
    try:
        timeout = float(value)
    except ValueError:
        timeout = -1.0
    if not timeout > 0 or timeout == float("inf"):
        raise ValueError(f"{SUBMITTER_TIMEOUT_ENV}: got {value!r}; allowed: seconds > 0")
    return timeout


class Heartbeat:
    """The submitter's side of the watch: rewrites ``path`` with a new count every ``interval``
    seconds, from a daemon thread, until :meth:`stop` (which removes the file). A process that
    dies stops beating with it. An xdist worker outlives a ``kill -9`` of its session (it is
    orphaned, and its test goes on): a worker whose parent is gone stops beating and cancels
    ``job`` (set once submitted), so the session's jobs end at once."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self.count = 0
        self.job: Any = None
        self._stop = threading.Event()
        self._parent = os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.beat()  # before the job can start
        self._thread = threading.Thread(target=self._run, name="stabilitykit-heartbeat")
        self._thread.daemon = True
        self._thread.start()

    def beat(self) -> None:
        self.count += 1
        # in place, not renamed: an NFS client sees new content when it next opens the file;
        # a full disk: the job sees no beat and stops
        with contextlib.suppress(OSError), open(self.path, "w") as f:
            f.write(f"{os.getpid()} {self.count}\n")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self._parent is not None and os.getppid() != self._parent:
                print(
                    "stabilitykit: the pytest session of this xdist worker is gone; cancelling "
                    f"job {getattr(self.job, 'job_id', '?')} (--sk-resume continues its run)",
                    file=sys.stderr,
                )
                if self.job is not None:
                    with contextlib.suppress(Exception):
                        self.job.cancel(check=False)
                return
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)


#: The heartbeats of the jobs this process submitted and waits for, by job id.
_HEARTBEATS: dict[str, Heartbeat] = {}


def _beat_interval(timeout: float) -> float:
    return min(5.0, timeout / 5)


class _HeartbeatWatch:
    """The job's side: the heartbeat is stale when its content has not changed for ``timeout``
    seconds of this process's clock (so the two machines' clocks never meet), counted from the
    job's start when the file is not there."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.last = self._read()
        self.since = time.monotonic()

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except OSError:
            return None

    def stale(self) -> bool:
        now, content = time.monotonic(), self._read()
        if content is not None and content != self.last:
            self.last, self.since = content, now
        return now - self.since > self.timeout


@contextlib.contextmanager
def watching_submitter(
    pid: int | None,
    interval: float = WATCH_INTERVAL_S,
    *,
    heartbeat: Path | None = None,
    timeout: float = SUBMITTER_TIMEOUT_S,
) -> Iterator[None]:
    """For the block, watch the submitter from a daemon thread every ``interval`` seconds:
    process ``pid`` (a local job's; ``None``: not watched) and the ``heartbeat`` file it rewrites
    (``None``: not watched). When the process is gone (this process's parent no longer, or no
    such process) or the heartbeat has not changed for ``timeout`` seconds, send SIGINT to the
    main thread, as Ctrl-C does: a run in training ends ``interrupted``, resumable. Enter it in
    the main thread: a SIGINT that the process ignores (a job started from a background shell
    inherits that) raises ``KeyboardInterrupt`` for the block."""
    if pid is None and heartbeat is None:
        yield
        return
    stop = threading.Event()
    child = pid is not None and os.getppid() == pid  # then a new parent says it is gone
    beats = _HeartbeatWatch(heartbeat, timeout) if heartbeat is not None else None

    def pid_gone() -> bool:
        if child:
            return os.getppid() != pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # there, owned by another user
            return False
        return False

    def why_gone() -> str | None:
        if pid is not None and pid_gone():
            return f"the process that submitted this job (pid {pid}) is gone"
        if beats is not None and beats.stale():
            return (
                f"the pytest session that submitted this job has not beaten for {timeout:g} s "
                f"({beats.path})"
            )
        return None

    def watch() -> None:
        while not stop.wait(interval):
            reason = why_gone()
            if reason is not None:
                print(
                    f"stabilitykit: {reason}; stopping the run as interrupted (--sk-resume "
                    "continues it)",
                    file=sys.stderr,
                )
                # SIGINT to the main thread: it also wakes a blocking call (a sleep, a wait)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=watch, name="stabilitykit-watch-submitter", daemon=True).start()
    try:
        yield
    finally:
        stop.set()
        if previous is signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def stopping_on_slurm_signals() -> Iterator[None]:
    """For the block (a job's run, in its main thread): Slurm's stop (SIGTERM: the time limit,
    ``scancel``, a requeue) ends the run as ``interrupted``, as Ctrl-C does, and a second one is
    ignored while the record is written (Slurm kills the job after its KillWait). When the time
    limit comes and no requeue is left (``--sk-slurm-max-timeouts``), submitit's warning signal
    no longer ends the job with an error: the run goes on until Slurm stops it, then ends
    interrupted, and ``--sk-resume`` continues it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the record be written
        print(
            "stabilitykit: Slurm stops this job (SIGTERM: its time limit, scancel or a "
            "requeue); stopping the run as interrupted (--sk-resume continues it)",
            file=sys.stderr,
        )
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, on_term)
    usr, previous_usr = None, None
    if "submitit" in sys.modules:
        import submitit
        from submitit.core.utils import UncompletedJobError

        usr = submitit.JobEnvironment._usr_sig()
        previous_usr = signal.getsignal(usr)
        if callable(previous_usr):
            submitits = previous_usr

            def on_usr(signum: int, frame: Any) -> None:
                try:
                    submitits(signum, frame)  # requeues, or says why it will not
                except UncompletedJobError as exc:
                    print(
                        f"stabilitykit: {exc} The run goes on until Slurm stops it at the time "
                        "limit; then it ends interrupted, and --sk-resume continues it.",
                        file=sys.stderr,
                    )

            signal.signal(usr, on_usr)
        else:
            usr = None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if usr is not None:
            signal.signal(usr, previous_usr)


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
    from stabilitykit.record.run_record import newest_record

    def keep(record: RunRecord) -> bool:
        tags = record.config.get("tags") or {}
        return (
            tags.get("session") == session
            and tags.get("job") == job
            and record.config.get("arm_hash") == arm.hash
        )

    return newest_record(stage_dir, keep)


def submit_arm(task: ArmJob) -> Any:
    """Submit ``task`` as one job of its options' executor; the submitit job."""
    options = task.options
    _pickle_by_value(task)
    prepared = options.prepare(task.arm, task.replicate)
    executor = make_executor(options, task.stage, prepared.device)
    executor.update_parameters(name=f"{task.stage}-{prepared.id}")
    heartbeat = getattr(task, "heartbeat", None)
    beats = None
    if heartbeat is not None:
        beats = Heartbeat(heartbeat, _beat_interval(task.submitter_timeout))
    try:
        job = executor.submit(task)
    except BaseException as exc:  # submitit's FailedJobError carries sbatch's stderr
        if beats is not None:
            beats.stop()
        refusal = explain_refusal(exc) if isinstance(exc, Exception) else None
        if refusal is None:
            raise
        raise refusal from None
    if beats is not None:
        beats.job = job
        _HEARTBEATS[str(job.job_id)] = beats  # until job_result has the job's end
    return job


def run_as_job(task: ArmJob) -> ArmResult:
    """Submit ``task`` as a job, wait for it and return its result, as ``run_in_stage`` returns
    it in process. Ctrl-C cancels the job."""
    return job_result(submit_arm(task), task.options, task.stage)


def job_result(job: Any, options: Options, stage: str) -> ArmResult:
    """Wait for ``job`` and return its :class:`ArmResult`, its run folder under ``options.out``
    as given (relative stays relative); a failed job is a :class:`ClusterError` naming its logs."""
    from stabilitykit.run import ArmResult

    beats = _HEARTBEATS.get(str(job.job_id))
    try:
        result = job.result()
    except KeyboardInterrupt:
        job.cancel(check=False)
        raise
    except Exception as exc:
        raise ClusterError(
            f"{options.cluster.executor} job {job.job_id} ({stage}) failed: "
            f"{_ended(job, options)}{type(exc).__name__}: {exc}\n"
            f"logs: {job.paths.stdout} and {job.paths.stderr}"
        ) from exc
    finally:
        if beats is not None:
            beats.stop()
            _HEARTBEATS.pop(str(job.job_id), None)
    if not isinstance(result, ArmResult):
        raise ClusterError(
            f"job {job.job_id} returned {type(result).__name__}, not an ArmResult; logs: "
            f"{job.paths.stdout}"
        )
    runs = options.stage_dir(stage) / "runs"
    if result.run_dir.parent == runs.absolute():
        result = dataclasses.replace(result, run_dir=runs / result.run_dir.name)
    return result


def _ended(job: Any, options: Options) -> str:
    """How Slurm ended ``job``, when that says more than submitit's error: the time limit or a
    cancel leave an interrupted run that ``--sk-resume`` continues."""
    if options.cluster.executor != "slurm":
        return ""
    try:
        state = str(job.state)
    except Exception:  # sacct unreachable: submitit's error says what it knows
        return ""
    if state.startswith("TIMEOUT"):
        limit = options.cluster.slurm_time or DEFAULT_TIME_MIN
        return (
            f"it reached its time limit ({limit} min, --sk-slurm-time) with no requeue left "
            "(--sk-slurm-max-timeouts); its run ended interrupted and --sk-resume continues "
            "it. "
        )
    if state.startswith("CANCELLED"):
        return "it was cancelled; its run ended interrupted and --sk-resume continues it. "
    return f"Slurm state {state}. "


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
