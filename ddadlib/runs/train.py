"""Training a run folder: :func:`train_run`, under the folder's lock (:func:`run_lock`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ddadlib.data.dataset import PreparedDataset
from ddadlib.detectors import HYPERPARAMETERS, Detector, make_detector
from ddadlib.devices import cpu_plan
from ddadlib.errors import DataError
from ddadlib.fileio import atomic_write_json, stale_temp_files
from ddadlib.runs.config import (
    LOCK_FILE,
    RUN_FILES,
    Log,
    RunConfig,
    config_changes,
    fingerprint_matches,
)
from ddadlib.runs.run import Run


@contextlib.contextmanager
def run_lock(run: str | Path) -> Iterator[None]:
    """Hold the lock of a run folder while training or evaluating it; a :class:`DataError`
    naming the other process when one holds it. The operating system releases the lock of a
    process that dies, so a stale lock file is simply taken over. A folder that cannot be
    written (read-only media) is not locked: nothing can be written there either."""
    path = Path(run) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
            yield
            return
        raise DataError(f"{path}: cannot create the lock file ({exc.strerror})") from None
    try:
        try:
            _lock(fd)
        except OSError:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            except OSError:  # Windows: the holder's locked byte cannot be read
                holder = "unknown"
            raise DataError(
                f"{run}: another process (pid {holder}) is training or evaluating "
                "this run; wait for it to finish or stop it, then run the command "
                "again"
            ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: lock the first byte
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_temp_files(run: Path, log: Log) -> None:
    """Delete the temporary files that interrupted writes left in ``run``; call it only under the
    run's lock (no other process of ours writes there then)."""
    found = stale_temp_files(run, RUN_FILES) + stale_temp_files(
        run / "checkpoints", ("A.ckpt", "B.ckpt")
    )
    for p in found:
        p.unlink(missing_ok=True)
    if found:
        log(f"{run}: removed {len(found)} temporary file(s) of an interrupted write")


def _find_module_b(run: Path, cfg: RunConfig) -> Run | None:
    """A finished sibling run whose module B has the settings of ``cfg``'s."""
    want = cfg.module_b()
    if not run.parent.is_dir():
        return None
    for path in sorted(run.parent.iterdir()):
        other = Run(path)
        if path == run or not other.is_finished:
            continue
        try:
            ocfg = other.config
        except DataError:
            continue
        if ocfg.module_b() == want:
            return other
    return None


def train_run(
    run: str | Path,
    cfg: RunConfig | dict,
    *,
    progress: bool = True,
    vectorised: bool | None = None,
    workers: int | None = None,
    threads: int | None = None,
    log: Log = print,
) -> Detector:
    """Train (or resume, or reuse) the run ``cfg`` in folder ``run``; return the model.

    On a CPU, ``workers`` processes of ``threads`` torch threads train (None: as
    :func:`ddadlib.devices.cpu_plan` chooses; the choice is logged in one line and recorded in
    ``config.json``'s provenance and ``train_log.json``, not in what defines the run).

    The folder is locked while training (a second process is refused). ``config.json`` is
    written once the data has been checked; a run that never trained (no checkpoint, no model)
    is replaced by a new config, one that trained is refused. ``cfg`` may also be the dict of a
    ``config.json`` (:meth:`RunConfig.from_dict`)."""
    if isinstance(cfg, dict):
        cfg = RunConfig.from_dict(cfg)
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise DataError(f"{run}: is a file; --out must be a run folder")
    ours = {LOCK_FILE, "config.json", "checkpoints"}
    if run.is_dir() and not Run(run).has_config and any(p.name not in ours for p in run.iterdir()):
        raise DataError(f"{run}: folder exists and is not a ddadlib run; choose a new --out")
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(run):
            return _train_locked(run, cfg, progress, vectorised, (workers, threads), log)
    except BaseException:
        # a run that failed before it started leaves no folder behind
        if created and all(p.name == LOCK_FILE for p in run.iterdir()):
            shutil.rmtree(run, ignore_errors=True)
        raise


def _train_locked(
    path: Path,
    cfg: RunConfig,
    progress: bool,
    vectorised: bool | None,
    cpu: tuple[int | None, int | None],
    log: Log,
) -> Detector:
    remove_stale_temp_files(path, log)
    run = Run(path)
    ds = PreparedDataset.load(cfg.data_path)
    resumed = False
    if run.has_config:
        try:
            old, problem = run.config, None
        except DataError as exc:
            old, problem = None, str(exc)
        diff = config_changes(old, cfg, ds) if old is not None else []
        if not diff and old is not None:
            cfg = cfg.replace(data_fingerprint=old.data_fingerprint)
        if problem or diff:
            if run.has_trained:
                raise DataError(
                    problem
                    or (
                        f"{path}: holds a run with another config "
                        f"({'; '.join(diff)}); train into a new --out "
                        "folder"
                    )
                )
            log(f"{path}: replacing a run that never trained ({problem or '; '.join(diff)})")
        elif run.is_finished:
            log(f"{path}: finished run with the same config found; reusing it (nothing trained)")
            return run.model(device=cfg.device)
        else:
            log(f"{path}: unfinished run with the same config found; resuming it")
            cfg = cfg.replace(created=old.created)
            resumed = True
    if not fingerprint_matches(ds, cfg.data_fingerprint):
        raise DataError(f"{cfg.data_path}: dataset changed since the run was configured")
    normal = ds.images[ds.part("normal")]
    unlabeled = ds.images[ds.indices(list(cfg.du_ids))] if cfg.du_ids else None
    settings = {name: getattr(cfg, name) for name in (*HYPERPARAMETERS, "device", "precision")}
    model = make_detector(**settings, vectorised=vectorised, progress=progress)
    # config.json records the optimiser as the detector trains it, not as the caller wrote it
    optimiser = model.optimiser_settings()
    cfg = cfg.replace(
        lr=optimiser["lr"], betas=tuple(optimiser["betas"]), batch_size=optimiser["batch_size"]
    )
    atomic_write_json(run.config_path, cfg.to_dict())
    fit_extra = {}
    source = _find_module_b(path, cfg) if model.uses_unlabeled else None
    if source is not None:
        try:
            fit_extra["module_b"] = source.model(device=cfg.device).module_b_
            log(
                f"module B: reusing the one trained in {source.path} (same data, backbone, seed "
                "and settings; B does not depend on AR)"
            )
        except DataError as exc:
            log(f"module B: not reusing the one of {source.path} ({exc}); training it")
    n_u = len(cfg.du_ids)
    plan = None
    if cfg.device == "cpu" and not vectorised:
        modules = [cfg.dn_size or len(normal)]
        if model.uses_unlabeled:
            modules = modules[:0] if "module_b" in fit_extra else modules
            modules.append(len(normal) + n_u)
        plan = cpu_plan(*cpu, tasks=cfg.k * len(modules), work=cfg.k * cfg.epochs * sum(modules))
        model.workers, model.threads = plan.workers, plan.threads
        cfg = cfg.replace(provenance={**cfg.provenance, "cpu": plan.to_dict()})
        atomic_write_json(run.config_path, cfg.to_dict())
        log(plan.describe())
    log(
        f"training {cfg.backbone} on {cfg.device} ({cfg.precision}): "
        f"module B on Dn ({cfg.dn_size:,} images)"
        + (
            f", module A on Dn + Du ({cfg.dn_size + n_u:,} images, AR {cfg.ar})"
            if model.uses_unlabeled
            else ""
        )
        + f"; K = {cfg.k}, {cfg.epochs} epochs, seed {cfg.seed}"
    )
    t0 = time.perf_counter()
    model.fit(normal, unlabeled, checkpoint_dir=path / "checkpoints", **fit_extra)
    log_entry = {
        "seconds": round(time.perf_counter() - t0, 2),
        "torch_threads": torch.get_num_threads(),
        "cpu": plan.to_dict() if plan is not None else None,
        "modules": model.history_,
        "module_b_from": str(source.path) if "module_b" in fit_extra else None,
        # after a resume, "seconds" counts the last session only
        "resumed": resumed,
    }
    atomic_write_json(path / "train_log.json", log_entry)
    model.save(run.model_path)
    # Checkpoints (weights and Adam states) only serve to resume; a finished run is model.pt.
    shutil.rmtree(path / "checkpoints", ignore_errors=True)
    log(f"wrote {run.model_path} ({log_entry['seconds']:.0f} s)")
    return model
