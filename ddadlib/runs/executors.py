"""Where the runs of a grid train: here, one after the other (the default); in parallel local
processes (``ddad reproduce --jobs N``); or as Ray tasks on a local Ray or an existing cluster
(``--executor ray``).

Every executor trains the same cached, resumable run folders (:mod:`ddadlib.runs.grid`), so a
reproduction may be stopped under one executor and resumed under another. :func:`run_tasks` is
the one scheduling loop: it starts the tasks in the order given, as many at once as the executor
takes, and lets a task of a *group* (the runs that share module B) start only once the group's
first task has ended, so that module B is trained once and the others reuse it. A task that
fails is reported with its error; the others go on.

A worker process or a Ray task trains with one torch thread (or ``cpus_per_task``): torch's
threads in several processes on the same cores spin against each other, and a small network
gains little from intra-op threads, so N processes of one thread beat one process of N threads.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ddadlib.devices import pick_device
from ddadlib.errors import ConfigError, DataError, TrainingError, disk_full_message

Log = Callable[[str], None]

RAY_INSTALL = 'pip install "ddadlib[ray]"'


@dataclass
class Task:
    """One call ``fn(**kwargs, log=...)`` of a module-level function (so that it can be sent to
    another process; a worker elsewhere sets ``progress=False`` in ``kwargs``: no progress bars
    from several processes at once); ``group``: tasks that must start after the first task of
    the same group has ended (None: independent)."""

    name: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any]
    group: Hashable | None = None


@dataclass
class Outcome:
    """How a task ended: its ``result``, or ``error`` (one line) and ``details`` (a traceback,
    for errors that are not ddadlib's own)."""

    name: str
    result: Any = None
    error: str | None = None
    details: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def error_message(exc: BaseException) -> tuple[str, str | None]:
    """One line for ``exc`` (ddadlib's errors as they are, others with their type) and, for the
    errors that are not ddadlib's, the traceback."""
    if isinstance(exc, (ConfigError, DataError, TrainingError)):
        return str(exc), None
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return disk_full_message(exc), None
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}", text


def call_task(
    fn: Callable[..., Any], kwargs: dict[str, Any], name: str, log: Log | None
) -> Outcome:
    """Run one task and catch its error (not Ctrl-C): what every executor runs. ``log`` None:
    print each line prefixed with the task's name (a worker process, a Ray task)."""
    if log is None:

        def log(line: str) -> None:
            print(f"[{name}] {line}", flush=True)

    try:
        return Outcome(name, result=fn(**kwargs, log=log))
    except Exception as exc:
        message, details = error_message(exc)
        return Outcome(name, error=message, details=details)


def set_worker_threads(threads: int = 1) -> None:
    """Give this process ``threads`` torch threads (also for OpenMP code started later)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _quiet(task: Task) -> dict[str, Any]:
    return dict(task.kwargs, progress=False) if "progress" in task.kwargs else task.kwargs


def _init_worker(threads: int) -> None:
    set_worker_threads(threads)
    # Ctrl-C reaches every process of the terminal: the parent decides and stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Executor:
    """Runs :class:`Task`\\ s; ``slots`` at once (:func:`run_tasks` keeps that many started)."""

    slots: int = 1
    #: whether tasks run in this process (their log lines and progress bars are this process's)
    live: bool = False
    #: the CPU plan each task trains with (``workers``/``threads`` of :func:`~ddadlib.runs.
    #: grid.ensure_run`): empty means the machine's plan (:func:`ddadlib.devices.cpu_plan`); a
    #: task that shares the machine with others trains in its own process, with its own threads
    task_cpu: dict[str, int] = {}

    def submit(self, task: Task, log: Log) -> cf.Future:
        """Start ``task``; a future of its :class:`Outcome`."""
        raise NotImplementedError

    def device(self, requested: str | None) -> torch.device:
        """The device the runs will train on when ``requested`` (``auto``, ``cpu``, ...)."""
        return pick_device(requested)

    def close(self, cancel: bool = False) -> None:
        """Release the workers; ``cancel``: stop the tasks still running (a Ctrl-C)."""

    def describe(self) -> str:
        raise NotImplementedError


class SequentialExecutor(Executor):
    """One task after the other in this process, with this process's threads (``--jobs 1``)."""

    live = True

    def submit(self, task: Task, log: Log) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(call_task(task.fn, task.kwargs, task.name, log))
        return future

    def describe(self) -> str:
        return f"one run at a time in this process ({torch.get_num_threads()} torch threads)"


class ProcessExecutor(Executor):
    """``jobs`` local worker processes (spawned, one torch thread each; ``--jobs N``)."""

    def __init__(self, jobs: int, threads: int = 1) -> None:
        if jobs < 1 or threads < 1:
            raise ConfigError(f"jobs and threads must be at least 1 (got {jobs}, {threads})")
        self.slots, self.threads = int(jobs), int(threads)
        self.task_cpu = {"workers": 1, "threads": self.threads}
        self._pool: cf.ProcessPoolExecutor | None = None

    def submit(self, task: Task, log: Log) -> cf.Future:
        if self._pool is None:
            # spawn, not fork: a forked copy of a process that has started torch's threads can hang
            self._pool = cf.ProcessPoolExecutor(
                self.slots,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.threads,),
            )
        return self._pool.submit(call_task, task.fn, _quiet(task), task.name, None)

    def close(self, cancel: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if cancel:  # a stopped worker leaves its run folder to resume (atomic checkpoints)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=cancel)

    def describe(self) -> str:
        text = f"{self.slots} local processes, {self.threads} torch thread(s) each"
        cores = os.cpu_count() or 1
        if self.slots * self.threads > cores:
            text += f" (more threads than the {cores} CPU cores: they slow each other down)"
        return text


class RayExecutor(Executor):
    """Each task a Ray task, on the Ray this process has started (``ray.init`` before), else a
    new local Ray, or the cluster at ``address``. Each task asks for ``cpus_per_task`` CPUs
    (its torch threads) and ``gpus_per_task`` GPUs (a fraction lets several runs share a GPU);
    the run folders must be on storage that every node sees, at the same path."""

    slots = 1 << 30  # Ray queues the tasks by the resources they ask for

    def __init__(
        self, address: str | None = None, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}"
            ) from None
        if cpus_per_task <= 0 or gpus_per_task < 0:
            raise ConfigError(
                f"Ray resources per task: CPUs must be > 0 and GPUs >= 0 (got {cpus_per_task}, "
                f"{gpus_per_task})"
            )
        self.ray, self.address = ray, address
        self.cpus, self.gpus = float(cpus_per_task), float(gpus_per_task)
        self.task_cpu = {"workers": 1, "threads": max(1, int(self.cpus))}
        self._started = False
        self._refs: list = []
        self._remote = None

    def _start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False)
            except Exception as exc:
                where = (
                    f"connect to the Ray cluster at {self.address}" if self.address else "start Ray"
                )
                raise ConfigError(f"could not {where}: {exc}") from None
            self._started = True
        self._remote = ray.remote(_ray_task).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0
        )

    def submit(self, task: Task, log: Log) -> cf.Future:
        if self._remote is None:
            self._start()
        threads = max(1, int(self.cpus))
        ref = self._remote.remote(task.fn, _quiet(task), task.name, threads)
        self._refs.append(ref)
        return ref.future()

    def device(self, requested: str | None) -> torch.device:
        # Ray gives a task the GPUs it asks for and hides the others: the device follows
        # --ray-gpus-per-task (checked here, as the workers may have GPUs this machine lacks)
        gpu = self.gpus > 0
        if requested in (None, "auto"):
            return torch.device("cuda" if gpu else "cpu")
        dev = torch.device(requested)
        if (dev.type == "cuda") != gpu:
            raise ConfigError(
                f"--device {requested} with --ray-gpus-per-task {self.gpus:g}: a Ray task sees a "
                "GPU only when it asks for one; pass --ray-gpus-per-task > 0 for cuda, 0 for cpu"
            )
        return dev

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self._refs:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # already finished
                    pass
        self._refs = []
        if self._started:
            self.ray.shutdown()
            self._started = False
        self._remote = None

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "Ray"
        return f"{where}, {self.cpus:g} CPU(s) and {self.gpus:g} GPU(s) per run"


def _ray_task(fn: Callable[..., Any], kwargs: dict[str, Any], name: str, threads: int) -> Outcome:
    set_worker_threads(threads)
    return call_task(fn, kwargs, name, None)


def make_executor(
    kind: str = "local",
    *,
    jobs: int = 1,
    address: str | None = None,
    cpus_per_task: float | None = None,
    gpus_per_task: float | None = None,
) -> Executor:
    """``local`` (``jobs`` 1: :class:`SequentialExecutor`, more: :class:`ProcessExecutor`) or
    ``ray`` (:class:`RayExecutor`; ``cpus_per_task`` 1 and ``gpus_per_task`` 0 unless given)."""
    if kind == "local":
        given = [
            flag
            for flag, value in (
                ("--ray-address", address),
                ("--ray-cpus-per-task", cpus_per_task),
                ("--ray-gpus-per-task", gpus_per_task),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --executor ray")
        return SequentialExecutor() if jobs == 1 else ProcessExecutor(jobs)
    if kind == "ray":
        if jobs != 1:
            raise ConfigError(
                "--jobs is for --executor local; Ray runs as many runs at once as the cluster's "
                "CPUs and GPUs allow (--ray-cpus-per-task, --ray-gpus-per-task)"
            )
        return RayExecutor(
            address,
            1.0 if cpus_per_task is None else cpus_per_task,
            0.0 if gpus_per_task is None else gpus_per_task,
        )
    raise ConfigError(f"unknown executor {kind!r}; choose local or ray")


def run_tasks(
    executor: Executor,
    tasks: Sequence[Task],
    *,
    log: Log = print,
    on_start: Callable[[int, Task], None] | None = None,
    on_done: Callable[[int, Task, Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``tasks`` on ``executor`` and return their outcomes, in the order of ``tasks``.

    Tasks start in order, at most ``executor.slots`` at once. Within a group the first task
    runs alone; once it has succeeded the others may start, and when it has failed the next
    one leads instead. ``on_start`` and ``on_done`` get the task's index (from 0). A Ctrl-C
    (KeyboardInterrupt) stops the running tasks and is raised again."""
    waiting = list(range(len(tasks)))
    leader: dict[Hashable, int] = {}  # group -> its task running alone
    opened: set[Hashable] = set()  # groups whose first task has succeeded
    running: dict[cf.Future, int] = {}
    outcomes: dict[int, Outcome] = {}

    def ready(i: int) -> bool:
        group = tasks[i].group
        if group is None or group in opened:
            return True
        if group in leader:
            return False
        leader[group] = i
        return True

    try:
        while waiting or running:
            for i in list(waiting):
                if len(running) >= executor.slots:
                    break
                if ready(i):
                    waiting.remove(i)
                    if on_start:
                        on_start(i, tasks[i])
                    running[executor.submit(tasks[i], log)] = i
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in sorted(done, key=running.get):
                i = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker died (killed, out of memory, a lost node)
                    message, details = error_message(exc)
                    outcome = Outcome(tasks[i].name, error=message, details=details)
                outcomes[i] = outcome
                group = tasks[i].group
                if group is not None and leader.get(group) == i:
                    del leader[group]
                    if outcome.ok:
                        opened.add(group)
                if on_done:
                    on_done(i, tasks[i], outcome)
    except BaseException:
        executor.close(cancel=True)
        raise
    executor.close()
    return [outcomes[i] for i in range(len(tasks))]
