"""Training the modules of a run together: their members in parallel worker processes on CPU.

The members of DDAD's modules are independent: K networks of module A on Dn + Du and K of
module B on Dn (B does not need Du). A network this small gains little from more torch threads
(2 threads gave about 1.3x one), so on a CPU :func:`train_ensembles` trains the members in
``workers`` processes of one thread each (:func:`ddadlib.devices.cpu_plan` chooses them).

- **Same results as one after the other.** A worker trains a member with
  :func:`~ddadlib.models.ensemble.member_epoch`, the code of the sequential path, from the same
  seeds, so with one thread each member's weights equal those of the sequential path exactly.
- **Shared memory, no copies.** The images and every member's weights, BatchNorm statistics and
  Adam moments live in shared memory, given to the workers once when they start; a worker trains
  in place, and the parent reads them between epochs for checkpoints. Each member's tensors lie
  in a few flat buffers (so a few file handles, not hundreds), each tensor at the 64-byte
  alignment torch's own allocator gives.
- **Scheduling.** The parent hands out one member-epoch at a time to whichever worker is free,
  the members of the larger module (A) first; a member's next epoch is handed out once its last
  one is done, so no worker waits at an epoch barrier.
- **Checkpoints as the sequential path writes them**: one per module (``A.ckpt``, ``B.ckpt``),
  written when all its members have finished an epoch, read by either path; an interrupt keeps
  the epochs finished so far; a loss that is not finite stops with a
  :class:`~ddadlib.errors.TrainingError` naming the member; one progress bar counts
  member-epochs as the workers finish them.

Workers are started with ``spawn``, not ``fork``: a forked child of a process whose OpenMP
thread pool is running can deadlock (GNU OpenMP is not fork-safe), and macOS frameworks are not
fork-safe either, so ``spawn`` behaves the same on Linux and macOS (and is Python's default on
macOS); it costs a second or two to start the workers, nothing per epoch.
"""

from __future__ import annotations

import math
import queue
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as tmp
from tqdm.auto import tqdm

from ddadlib.devices import torch_threads
from ddadlib.errors import TrainingError
from ddadlib.models.backbones import build_backbone
from ddadlib.models.checkpoints import Checkpointer, check_finite_weights
from ddadlib.models.ensemble import (
    EnsembleConfig,
    TrainResult,
    _adam,
    _Sequential,
    batch_starts,
    check_losses,
    make_checkpoint,
    member_epoch,
    module_title,
    start_trainer,
    train_ensemble,
)
from ddadlib.seeding import epoch_order, torch_seed

#: Alignment of every tensor inside a shared buffer (torch's CPU allocator aligns to 64 bytes;
#: matrix kernels may take other code paths, and round differently, on other alignments).
ALIGN_BYTES = 64
#: Below this many member-images in all, a training is too short to be worth an estimate.
ESTIMATE_MIN_WORK = 20_000
#: Trainings estimated to take longer than this (seconds) get an estimate line.
ESTIMATE_MIN_SECONDS = 120.0


@dataclass
class ModuleJob:
    """One module to train: its images (float ``(N, 1, S, S)`` in [-1, 1]), its config, its
    checkpoint file (None: none) and an optional callback after each epoch."""

    images: torch.Tensor
    cfg: EnsembleConfig
    checkpoint: Path | None = None
    on_epoch: Callable[[int, list[float]], None] | None = None


def train_ensembles(
    jobs: Sequence[ModuleJob],
    *,
    workers: int = 1,
    threads: int | None = None,
    vectorised: bool | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> list[TrainResult]:
    """Train the modules of ``jobs``; their results in the same order.

    On the CPU with ``workers > 1`` (and not ``vectorised``), their members train in that many
    worker processes of ``threads`` torch threads each; otherwise the modules train one after
    the other with :func:`~ddadlib.models.ensemble.train_ensemble` (``threads`` torch threads on
    the CPU). Before a long CPU training, ``log`` gets one line with its estimated time,
    measured on a few batches (not with ``progress`` off or ``log`` None).
    """
    if not jobs:
        return []
    device = jobs[0].images.device
    cpu = device.type == "cpu"
    parallel = cpu and workers > 1 and not vectorised and sum(j.cfg.k for j in jobs) > 1
    with torch_threads(threads if cpu else None):
        if cpu and progress and log is not None and not vectorised:
            line = estimate_line(jobs, workers if parallel else 1)
            if line:
                log(line)
        if parallel:
            return _train_parallel(list(jobs), workers, threads or 1, checkpoint_every, progress)
        return [
            train_ensemble(
                j.images,
                j.cfg,
                vectorised=vectorised,
                checkpoint=j.checkpoint,
                checkpoint_every=checkpoint_every,
                progress=progress,
                on_epoch=j.on_epoch,
            )
            for j in jobs
        ]


# --- the time estimate ---------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``3 h 10 min``, ``12 min`` or ``45 s``."""
    if seconds >= 3600:
        h, rest = divmod(round(seconds / 60), 60)
        return f"{h} h {rest} min" if rest else f"{h} h"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds)} s"


def _remaining_steps(job: ModuleJob) -> int:
    start = 0
    if job.checkpoint is not None and job.checkpoint.exists():
        try:
            start = int(torch.load(job.checkpoint, map_location="cpu", weights_only=True)["epoch"])
        except Exception:  # noqa: BLE001 (a damaged file is reported when training reads it)
            start = 0
    n_batches = len(batch_starts(job.images.shape[0], job.cfg.batch_size))
    return job.cfg.k * max(0, job.cfg.epochs - start) * n_batches


def seconds_per_step(job: ModuleJob, steps: int = 2) -> float:
    """Seconds of one training step of a member of ``job``, timed on a throwaway member (after a
    warm-up step); the run's members, seeds and random streams are not touched."""
    cfg, images = job.cfg, job.images
    with torch_seed(0):
        m = (
            build_backbone(cfg.backbone, cfg.size, cfg.latent)
            .to(memory_format=torch.channels_last)
            .train()
        )
    opt = _adam(m.parameters(), cfg)
    first = min(images.shape[0], cfg.batch_size)
    member_epoch(m, opt, images[:first], torch.arange(first), cfg, True)  # warm-up
    n = min(images.shape[0], cfg.batch_size * steps)
    t0 = time.perf_counter()
    member_epoch(m, opt, images[:n], torch.arange(n), cfg, True)
    return (time.perf_counter() - t0) / max(1, len(batch_starts(n, cfg.batch_size)))


def estimate_line(jobs: Sequence[ModuleJob], workers: int) -> str | None:
    """``estimated 3 h 10 min for 250 epochs of modules B and A ...`` for a long CPU training,
    measured on a few batches; None when it is short (under two minutes)."""
    work = sum(j.cfg.k * j.cfg.epochs * j.images.shape[0] for j in jobs)
    if work < ESTIMATE_MIN_WORK:
        return None
    steps = sum(_remaining_steps(j) for j in jobs)
    if steps == 0:
        return None
    biggest = max(jobs, key=lambda j: j.images.shape[0])
    members = sum(j.cfg.k for j in jobs)
    seconds = seconds_per_step(biggest) * steps / max(1, min(workers, members))
    if seconds < ESTIMATE_MIN_SECONDS:
        return None
    names = " and ".join(j.cfg.module for j in jobs)
    epochs = max(j.cfg.epochs for j in jobs)
    return (
        f"estimated {format_duration(seconds)} for {epochs} epochs of "
        f"module{'s' if len(jobs) > 1 else ''} {names} (measured on the first batches)"
    )


# --- shared memory -------------------------------------------------------------------------


def _offsets(tensors: Sequence[torch.Tensor]) -> tuple[list[int], int]:
    offsets, at = [], 0
    for t in tensors:
        step = max(1, ALIGN_BYTES // t.element_size())
        at = -(-at // step) * step
        offsets.append(at)
        at += t.numel()
    return offsets, at


def _views(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Tensors shaped and strided as ``like``, laid one after another in ``flat``."""
    offsets, _ = _offsets(like)
    return [flat.as_strided(t.shape, t.stride(), o) for t, o in zip(like, offsets)]


def _shared(values: Sequence[torch.Tensor], like: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat shared-memory buffer holding ``values``, laid out as ``like``."""
    _, total = _offsets(like)
    flat = torch.zeros(max(total, 1), dtype=like[0].dtype).share_memory_()
    with torch.no_grad():
        for v, value in zip(_views(flat, like), values):
            v.copy_(value)
    return flat


def _groups(m: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    bufs = list(m.buffers())
    return {
        "params": list(m.parameters()),
        "float_buffers": [b for b in bufs if b.is_floating_point()],
        "int_buffers": [b for b in bufs if not b.is_floating_point()],
    }


def _step_like(n: int, dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.zeros((), dtype=dtype)] * n


def _share_member(m: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Move member ``m``'s tensors and its Adam state into shared buffers (in place: ``m`` and
    ``opt`` keep working on them); the buffers, to hand to a worker."""
    flats: dict[str, torch.Tensor] = {}
    for name, group in _groups(m).items():
        if group:
            flats[name] = _shared(group, group)
            for t, v in zip(group, _views(flats[name], group)):
                t.data = v
    params = _groups(m)["params"]
    # Adam's own first step would create the same: a zero step count and zero moments
    wide = torch.get_default_dtype() == torch.float64 and not opt.defaults.get("fused")
    scalar = torch.float64 if wide else torch.float32
    states = [
        opt.state.get(p)
        or {
            "step": torch.tensor(0.0, dtype=scalar),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
        for p in params
    ]
    for key in ("exp_avg", "exp_avg_sq"):
        flats[key] = _shared([s[key] for s in states], params)
    steps = [torch.as_tensor(s["step"]) for s in states]
    flats["step"] = _shared(steps, _step_like(len(steps), steps[0].dtype))
    _bind_adam(opt, params, flats)
    return flats


def _bind_adam(opt: torch.optim.Optimizer, params: list, flats: dict[str, torch.Tensor]) -> None:
    steps = _views(flats["step"], _step_like(len(params), flats["step"].dtype))
    for p, avg, sq, step in zip(
        params, _views(flats["exp_avg"], params), _views(flats["exp_avg_sq"], params), steps
    ):
        opt.state[p] = {"step": step, "exp_avg": avg, "exp_avg_sq": sq}


def _bound_member(cfg: EnsembleConfig, flats: dict[str, torch.Tensor]):
    """In a worker: a member network and its Adam working on the shared buffers ``flats``."""
    with torch.device("meta"):  # no initialisation: the weights come from the buffers
        m = build_backbone(cfg.backbone, cfg.size, cfg.latent)
    m = m.to_empty(device="cpu").to(memory_format=torch.channels_last).train()
    groups = _groups(m)
    for name, group in groups.items():
        if group:
            for t, v in zip(group, _views(flats[name], group)):
                t.data = v
    opt = _adam(groups["params"], cfg)
    _bind_adam(opt, groups["params"], flats)
    return m, opt


# --- the workers ---------------------------------------------------------------------------


def _worker(setup: dict, tasks, results) -> None:
    """A worker process: trains the member-epochs it takes from ``tasks`` until a None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    torch.set_num_threads(setup["threads"])
    torch.set_default_dtype(setup["dtype"])
    parent = tmp.parent_process()
    members: dict[int, tuple] = {}  # bound when first trained here
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        if task is None:
            return
        j, epoch = task
        spec = setup["members"][j]
        cfg, images = spec["cfg"], setup["images"][spec["images"]]
        try:
            order = torch.from_numpy(
                epoch_order(images.shape[0], cfg.seed, cfg.module, spec["k"], epoch=epoch)
            )
            if j not in members:
                members[j] = _bound_member(cfg, spec["flats"])
            m, opt = members[j]
            loss = member_epoch(m, opt, images, order, cfg, channels_last=True).item()
        except Exception:  # noqa: BLE001 (reported to the parent with its traceback)
            results.put(("error", j, traceback.format_exc()))
            return
        results.put(("done", j, epoch, loss))


@dataclass
class _Module:
    job: ModuleJob
    trainer: _Sequential
    start: int
    saver: Checkpointer
    losses: list[list[float]]
    done: dict[int, dict[int, float]]  # epoch -> member -> loss
    snapshots: dict[int, dict[int, tuple[dict, dict]]]  # epoch -> member -> (weights, adam)


def _snapshot(trainer: _Sequential, k: int) -> tuple[dict, dict]:
    """Copies of member ``k``'s weights and Adam state (taken while no worker trains it)."""
    m, opt = trainer.members[k], trainer.opts[k]
    weights = {n: v.detach().clone() for n, v in m.state_dict().items()}
    adam = {
        name: {key: v.detach().clone() for key, v in opt.state[p].items()}
        for name, p in m.named_parameters()
        if opt.state.get(p)
    }
    return weights, adam


def _train_parallel(
    jobs: list[ModuleJob],
    workers: int,
    threads: int,
    checkpoint_every: float,
    progress: bool,
) -> list[TrainResult]:
    modules: list[_Module] = []
    specs, images = [], []
    for i, job in enumerate(jobs):
        ckpt = Path(job.checkpoint) if job.checkpoint is not None else None
        trainer, start = start_trainer(job.images, job.cfg, ckpt, _Sequential)
        what = module_title(job.cfg)
        saver = Checkpointer(
            ckpt, checkpoint_every, lambda b, w=what: check_finite_weights(b["members"], w)
        )
        modules.append(_Module(job, trainer, start, saver, [], {}, {}))
        images.append(job.images.share_memory_())
        for k, (m, opt) in enumerate(zip(trainer.members, trainer.opts)):
            specs.append(
                {"module": i, "k": k, "cfg": job.cfg, "images": i, "flats": _share_member(m, opt)}
            )
    todo = [j for j, s in enumerate(specs) if modules[s["module"]].start < s["cfg"].epochs]
    # the members of the larger module first, so that the last epochs do not wait on them
    todo.sort(key=lambda j: -images[specs[j]["images"]].shape[0])
    cfgs = [m.job.cfg for m in modules]
    bar = tqdm(
        desc="modules " + ", ".join(c.module for c in cfgs) + f" ({cfgs[0].backbone}, "
        f"{cfgs[0].k} members each)",
        unit="member-epoch",
        initial=sum(m.start * m.job.cfg.k for m in modules),
        total=sum(c.epochs * c.k for c in cfgs),
        **({} if progress else {"disable": True}),
    )
    ctx = tmp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    setup = {
        "members": specs,
        "images": images,
        "threads": threads,
        "dtype": torch.get_default_dtype(),
    }
    procs = [
        ctx.Process(target=_worker, args=(setup, tasks, results), daemon=True)
        for _ in range(min(workers, max(1, len(todo))))
    ]
    t0 = time.perf_counter()
    failed: int | None = None
    try:
        for p in procs:
            p.start()
        for j in todo:
            tasks.put((j, modules[specs[j]["module"]].start))
        left = len(todo)
        while left:
            try:
                msg = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if not p.is_alive()]
                if dead:
                    raise TrainingError(
                        f"a training worker process stopped (exit code {dead[0].exitcode}): "
                        "out of memory, or a script that does not start under `if __name__ == "
                        '"__main__":` (workers are spawned, as Python requires then; or pass '
                        "workers=1); the checkpoints of finished epochs are kept"
                    ) from None
                continue
            if msg[0] == "error":
                spec = specs[msg[1]]
                failed = spec["module"]
                raise RuntimeError(
                    f"{module_title(spec['cfg'])}, member {spec['k'] + 1}: training failed in "
                    f"a worker process:\n{msg[2]}"
                )
            _, j, epoch, loss = msg
            spec = specs[j]
            mod = modules[spec["module"]]
            bar.update(1)
            if mod.saver.path is not None:
                mod.snapshots.setdefault(epoch, {})[spec["k"]] = _snapshot(mod.trainer, spec["k"])
            mod.done.setdefault(epoch, {})[spec["k"]] = loss
            if math.isfinite(loss) and epoch + 1 < spec["cfg"].epochs:
                tasks.put((j, epoch + 1))
            else:
                left -= 1
            if len(mod.done[epoch]) == mod.job.cfg.k:
                failed = spec["module"]
                _module_epoch_done(mod, epoch, bar)
                failed = None
    except BaseException as exc:
        # as on the sequential path, an interrupt keeps the epochs finished so far, and a module
        # that failed keeps its last checkpoint; the other modules keep what they finished
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.terminate()
        tasks.cancel_join_thread()
        for i, mod in enumerate(modules):
            if isinstance(exc, KeyboardInterrupt) or i != failed:
                mod.saver.interrupted()
        raise
    finally:
        bar.close()
        started = [p for p in procs if p.pid is not None]
        for _ in started:
            tasks.put(None)
        for p in started:
            # a worker has nothing left to save: do not wait for its interpreter to wind down
            p.join(timeout=0.5)
            if p.is_alive():
                p.terminate()
                p.join()
    seconds = time.perf_counter() - t0
    out = []
    for mod in modules:
        final = [{n: v.detach() for n, v in m.state_dict().items()} for m in mod.trainer.members]
        check_finite_weights(final, module_title(mod.job.cfg))
        out.append(
            TrainResult(
                mod.trainer.trained(),
                mod.losses,
                seconds,
                mod.start,
                f"parallel ({len(procs)} workers x {threads} thread{'s' if threads > 1 else ''})",
            )
        )
    return out


def _module_epoch_done(mod: _Module, epoch: int, bar) -> None:
    """Book-keeping when every member of ``mod`` has finished ``epoch``: the loss check (a
    :class:`TrainingError` naming the members), the callback, the checkpoint."""
    cfg = mod.job.cfg
    done = mod.done.pop(epoch)
    epoch_losses = [done[k] for k in range(cfg.k)]
    check_losses(epoch_losses, epoch, cfg, mod.saver.path)
    mod.losses.append(epoch_losses)
    bar.set_postfix_str(
        f"module {cfg.module}: epoch {epoch + 1}/{cfg.epochs}, "
        f"loss {sum(epoch_losses) / len(epoch_losses):.4g}"
    )
    if mod.job.on_epoch is not None:
        mod.job.on_epoch(epoch, epoch_losses)
    snaps = mod.snapshots.pop(epoch, None)
    if snaps is not None:
        mod.saver.epoch_done(
            lambda: make_checkpoint(
                cfg,
                epoch + 1,
                [snaps[k][0] for k in range(cfg.k)],
                [snaps[k][1] for k in range(cfg.k)],
            ),
            final=epoch + 1 == cfg.epochs,
        )
