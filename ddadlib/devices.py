"""Where, in what precision and on how many CPU cores ddadlib trains: CUDA, then MPS, then
CPU, unless told; on the CPU, :func:`cpu_plan` chooses the worker processes and torch threads."""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ddadlib.data.prepare import available_cores
from ddadlib.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def pick_device(name: str | None = "auto") -> torch.device:
    """The device to use: ``"auto"`` (or None) takes CUDA, then MPS, then the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for, but MPS is not available")
    return device


def pick_precision(precision: str | None, device: torch.device) -> str:
    """The training precision: ``"auto"`` is float32 on every device.

    bfloat16 autocast is available (``"bf16"``) but not the default: see
    ``benchmarks/bench_training.py`` and the note of issue 3 for its speed and AUCs.
    """
    if precision in (None, "auto"):
        return "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose auto, {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "mps":
        raise ConfigError("bf16 autocast is not supported on MPS; use fp32")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to bfloat16 inside the block when ``precision == "bf16"``."""
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def to_tensor(images, device: torch.device) -> torch.Tensor:
    """uint8 images ``(N, S, S)`` (or a float tensor already in [-1, 1]) as one float tensor
    ``(N, 1, S, S)`` in [-1, 1] on ``device``; the whole set stays there for the run."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        t = images.float()
    else:
        t = torch.as_tensor(images)
        if t.dtype != torch.uint8:
            raise ValueError(
                f"images must be uint8 (0-255) or a float tensor in [-1, 1]; got {t.dtype}"
            )
        t = t.float() / 127.5 - 1.0
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1 or t.shape[2] != t.shape[3]:
        raise ValueError(f"images must be (N, S, S) or (N, 1, S, S) squares; got {tuple(t.shape)}")
    return t.to(device)


@functools.lru_cache(maxsize=1)
def _load_at_start() -> float | None:
    # Read once per process, before its own training loads the machine (later readings would
    # count this process's earlier work as someone else's).
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return None


#: Member-images (K x epochs x images, summed over the modules) below which a CPU training runs
#: in one process by default: seconds of training, less than starting worker processes takes.
PARALLEL_MIN_WORK = 50_000


@dataclass(frozen=True)
class CpuPlan:
    """How a CPU training runs: ``workers`` processes of ``threads`` torch threads each, on a
    machine of ``cores`` cores with 1-minute load average ``load`` (None: unknown)."""

    cores: int
    load: float | None
    workers: int
    threads: int

    def shape(self) -> str:
        """``2 workers x 1 thread``."""
        w = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        return f"{w} x {self.threads} thread{'s' if self.threads != 1 else ''}"

    def describe(self) -> str:
        """One line for the log, e.g. ``CPU: 2 cores, load 1.9: 2 workers x 1 thread``."""
        load = "" if self.load is None else f", load {self.load:.1f}"
        over = (
            f"; more than the {self.cores} cores: expect it to be slow"
            if self.workers * self.threads > self.cores
            else ""
        )
        return (
            f"CPU: {self.cores} cores{load}: {self.shape()}{over} (--workers / --threads to change)"
        )

    def to_dict(self) -> dict:
        return {
            "workers": self.workers,
            "threads": self.threads,
            "cores": self.cores,
            "load": None if self.load is None else round(self.load, 2),
        }


def cpu_plan(
    workers: int | None = None,
    threads: int | None = None,
    *,
    tasks: int = 1,
    work: int | None = None,
    jobs: int = 1,
    cores: int | None = None,
    load: float | None = None,
) -> CpuPlan:
    """Worker processes and torch threads per worker for a CPU computation of ``tasks``
    independent pieces (the members of the modules being trained), one of ``jobs`` such
    computations sharing the machine; ``workers``/``threads`` given by the user are kept. A
    training of fewer than :data:`PARALLEL_MIN_WORK` member-images (``work``) gets one worker
    unless told otherwise: starting worker processes would take longer than it.

    The rule, so that workers x threads never exceeds the cores: workers default to one per core
    (at most ``tasks``), each with one thread; threads beyond one are given only from the cores
    that are free, i.e. not taken by the load average (``os.getloadavg``, read once per process)
    of other programs. Several torch threads on a busy core spin-wait for each other (OpenMP),
    which makes networks this small several times slower, while one-thread workers merely share
    a busy core fairly. ``cores`` and ``load`` are for tests (default: this machine's).
    """
    cores = available_cores() if cores is None else cores
    load = _load_at_start() if load is None else load
    jobs = max(1, jobs)
    share = max(1, cores // jobs)  # this job's cores
    free = max(1, min(share, math.floor(cores - (load or 0.0) + 0.5) // jobs))
    if work is not None and work < PARALLEL_MIN_WORK:
        tasks = 1
    if workers is None:
        per = threads or 1
        workers = max(1, min(tasks, share // per))
    if threads is None:
        threads = max(1, free // workers)
    return CpuPlan(cores=cores, load=load, workers=workers, threads=threads)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: unchanged), then restore them."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
