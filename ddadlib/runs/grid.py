"""Grids of runs: the paper's experiments as folders of cached, resumable runs.

A *grid* is every combination of backbone, AR and seed on one prepared dataset. Each combination
is one run folder (see :mod:`ddadlib.runs`) under one root, named for its settings, so that

- a finished run is reused and an interrupted one resumes (nothing is trained twice),
- runs that differ only in AR share module B (it does not depend on AR),
- the notebooks and ``ddad reproduce`` read the same folders.

:func:`ensure_run` makes one run of a grid; :mod:`ddadlib.runs.reproduce` and
:mod:`ddadlib.course` walk their grids with it. A cached run is reused only when every setting
that changes its result matches (the data, backbone, K, epochs, M, AR, seed, lr, betas, batch,
device and precision); a folder that holds the run with other settings is refused. :func:`load_results` turns evaluated runs into
one tidy table (a row per run and score), and
:func:`summarise` into mean and standard deviation over seeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from ddadlib.data.dataset import PreparedDataset
from ddadlib.detectors import detector_for
from ddadlib.devices import CpuPlan
from ddadlib.errors import DataError
from ddadlib.models.backbones import LATENT
from ddadlib.paper import PAPER_BATCH_SIZE, PAPER_EPOCHS, PAPER_K, PAPER_LR, TABLE_AR
from ddadlib.presets import table_unlabeled
from ddadlib.runs.config import config_changes, run_config
from ddadlib.runs.evaluate import evaluate_run
from ddadlib.runs.run import Run
from ddadlib.runs.train import train_run

Log = Callable[[str], None]


def cache_dir() -> Path:
    """Where notebooks keep prepared data and trained runs: ``$DDAD_CACHE``, else
    ``~/.cache/ddadlib``."""
    env = os.environ.get("DDAD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddadlib"


def run_name(
    backbone: str,
    ar: float | None,
    seed: int,
    epochs: int,
    k: int = PAPER_K,
    n_unlabeled: int | None = None,
    latent: int = LATENT,
) -> str:
    """The folder name of a run in a grid, e.g. ``ae-ar0.6-m500-e30-k3-s0`` (a detector
    without Du: ``fanogan-e30-s0``; a latent size other than 16 adds ``-z4``)."""
    if not detector_for(backbone).uses_unlabeled:
        return f"{backbone}-e{epochs}-s{seed}"
    z = "" if latent == LATENT else f"-z{latent}"
    return f"{backbone}-ar{ar:g}-m{n_unlabeled}-e{epochs}-k{k}{z}-s{seed}"


def ensure_run(
    root: str | Path,
    data: str | Path,
    *,
    backbone: str = "ae",
    ar: float = TABLE_AR,
    seed: int = 0,
    epochs: int = PAPER_EPOCHS,
    k: int = PAPER_K,
    n_unlabeled: int | None = None,
    batch_size: int = PAPER_BATCH_SIZE,
    lr: float = PAPER_LR,
    latent: int = LATENT,
    device: str | None = "auto",
    precision: str | None = "auto",
    n_boot: int = 1000,
    figures: bool = False,
    progress: bool = True,
    workers: int | None = None,
    threads: int | None = None,
    log: Log = print,
) -> Path:
    """Train (or resume, or reuse) and evaluate one run in ``root``; return its folder.

    Nothing is trained or scored again when the folder already holds it. The run's Du is
    drawn with ``seed``; Dn and the test split are the dataset's own. ``workers`` and
    ``threads``: the CPU plan of the training (:func:`~ddadlib.runs.train.train_run`).
    """
    if n_unlabeled is None and detector_for(backbone).uses_unlabeled:
        n_unlabeled = table_unlabeled(data, ar)
    run = Run(Path(root) / run_name(backbone, ar, seed, epochs, k, n_unlabeled, latent))
    cfg = run_config(
        data,
        backbone=backbone,
        k=k,
        epochs=epochs,
        ar=ar,
        n_unlabeled=n_unlabeled,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        latent=latent,
        device=device,
        precision=precision,
        log=log,
    )
    if run.is_evaluated:
        diff = config_changes(run.config, cfg, PreparedDataset.load(data, mmap=True))
        if diff:
            raise DataError(
                f"{run.path}: holds this run with other settings ({'; '.join(diff)}); it is "
                "not reused: pass the settings it was made with, or another folder"
            )
        return run.path
    # reuses it, resumes it or refuses
    train_run(run.path, cfg, progress=progress, workers=workers, threads=threads, log=log)
    evaluate_run(run.path, n_boot=n_boot, figures=figures, device=device, log=log)
    return run.path


def load_results(runs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per evaluated run and score: backbone, ar, seed, epochs, k, n_unlabeled, score,
    auc, ap, auc_low, auc_high, sens_at_95_spec, seconds, torch_threads (of the training's
    own process) and training_cpu (how its networks trained: ``2 workers x 1 thread``) and
    run."""
    rows = []
    for path in runs:
        run = Run(path)
        metrics = run.metrics()  # first: "evaluate the run first" is the likelier fix
        cfg = run.config
        info = run.train_log()
        for score, m in metrics.items():
            ci = m.get("auc_ci") or [float("nan"), float("nan")]
            rows.append(
                {
                    "backbone": cfg.backbone,
                    "ar": cfg.ar,
                    "seed": cfg.seed,
                    "epochs": cfg.epochs,
                    "k": cfg.k,
                    "n_unlabeled": cfg.n_unlabeled,
                    "score": score,
                    "auc": m["auc"],
                    "ap": m["ap"],
                    "auc_low": ci[0],
                    "auc_high": ci[1],
                    "sens_at_95_spec": m["sens_at_95_spec"],
                    "seconds": info.get("seconds"),
                    "torch_threads": info.get("torch_threads"),
                    "training_cpu": training_cpu(info),
                    "run": str(run.path),
                }
            )
    columns = [
        "backbone",
        "ar",
        "seed",
        "epochs",
        "k",
        "n_unlabeled",
        "score",
        "auc",
        "ap",
        "auc_low",
        "auc_high",
        "sens_at_95_spec",
        "seconds",
        "torch_threads",
        "training_cpu",
        "run",
    ]
    return pd.DataFrame(rows, columns=columns)


def training_cpu(train_log: dict) -> str | None:
    """How a run's networks trained on the CPU, from its ``train_log.json``: ``2 workers x 1
    thread`` (the plan it recorded; a plan of one worker trained in the run's own process), or
    ``1 process x 2 threads`` for a log without a plan; None when it says neither."""
    plan = train_log.get("cpu")
    if plan:
        return CpuPlan(
            plan.get("cores", 0), plan.get("load"), plan["workers"], plan["threads"]
        ).shape()
    t = train_log.get("torch_threads")
    return None if t is None else f"1 process x {int(t)} thread{'s' if int(t) != 1 else ''}"


def summarise(
    results: pd.DataFrame, by: Sequence[str] = ("backbone", "ar", "score"), value: str = "auc"
) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1) and count over seeds of ``value`` per group."""
    if results.empty:
        raise DataError("no results to summarise")
    frame = results.assign(ar=results["ar"].fillna(-1.0))  # f-AnoGAN has no AR
    out = frame.groupby(list(by), sort=True)[value].agg(["mean", "std", "count"]).reset_index()
    if "ar" in by:
        out["ar"] = out["ar"].where(out["ar"] >= 0)
    return out


def format_mean_sd(mean: float, sd: float, n: int) -> str:
    """``0.812 ± 0.014`` (``0.812`` for one seed)."""
    return f"{mean:.3f}" if n < 2 or sd != sd else f"{mean:.3f} ± {sd:.3f}"
