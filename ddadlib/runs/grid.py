"""Grids of runs: the paper's experiments as folders of cached, resumable runs.

A *grid* is every combination of backbone, AR and seed on one prepared dataset. Each combination
is one run folder (see :mod:`ddadlib.runs`) under one root, named for its settings, so that

- a finished run is reused and an interrupted one resumes (nothing is trained twice),
- runs that differ only in AR share module B (it does not depend on AR),
- the notebooks and ``ddad reproduce`` read the same folders.

:func:`ensure_run` makes one run of a grid; :mod:`ddadlib.runs.reproduce` and
:mod:`ddadlib.course` walk their grids with it. :func:`load_results` turns evaluated runs into
one tidy table (a row per run and score), and
:func:`summarise` into mean and standard deviation over seeds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from ddadlib.errors import DataError
from ddadlib.paper import PAPER_BATCH_SIZE, PAPER_EPOCHS, PAPER_K, PAPER_LR, TABLE_AR
from ddadlib.presets import table_unlabeled
from ddadlib.runs.config import is_finished, read_config, run_config
from ddadlib.runs.evaluate import evaluate_run
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
) -> str:
    """The folder name of a run in a grid, e.g. ``ae-ar0.6-m500-e30-k3-s0``."""
    if backbone == "fanogan":
        return f"fanogan-e{epochs}-s{seed}"
    return f"{backbone}-ar{ar:g}-m{n_unlabeled}-e{epochs}-k{k}-s{seed}"


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
    device: str | None = "auto",
    precision: str | None = "auto",
    n_boot: int = 1000,
    figures: bool = False,
    progress: bool = True,
    log: Log = print,
) -> Path:
    """Train (or resume, or reuse) and evaluate one run in ``root``; return its folder.

    Nothing is trained or scored again when the folder already holds it. The run's Du is
    drawn with ``seed``; Dn and the test split are the dataset's own.
    """
    if n_unlabeled is None and backbone != "fanogan":
        n_unlabeled = table_unlabeled(data, ar)
    run = Path(root) / run_name(backbone, ar, seed, epochs, k, n_unlabeled)
    if not (run / "metrics.json").is_file():
        if not is_finished(run):
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
                device=device,
                precision=precision,
                log=log,
            )
            train_run(run, cfg, progress=progress, log=log)
        evaluate_run(run, n_boot=n_boot, figures=figures, device=device, log=log)
    return run


def load_scores(run: str | Path) -> pd.DataFrame:
    """A run's test scores (``scores.csv``: id, label, rec, rec_ensemble, intra, inter,
    rec_m1..)."""
    path = Path(run) / "scores.csv"
    if not path.is_file():
        raise DataError(
            f"{run}: no scores.csv; evaluate the run first (`ddad evaluate --run {run}`)"
        )
    return pd.read_csv(path)


def load_metrics(run: str | Path) -> dict[str, dict]:
    """A run's ``metrics.json``: score -> auc, ap, auc_ci, sens_at_95_spec (and auc_std,
    auc_members for rec); a :class:`DataError` naming the folder and the fix otherwise."""
    path = Path(run) / "metrics.json"
    if not path.is_file():
        raise DataError(
            f"{run}: no metrics.json; evaluate the run first (`ddad evaluate --run {run}`)"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: damaged ({exc}); evaluate the run again (`ddad evaluate "
            f"--run {run} --overwrite`)"
        ) from None


def load_results(runs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per evaluated run and score: backbone, ar, seed, epochs, k, n_unlabeled, score,
    auc, ap, auc_low, auc_high, sens_at_95_spec, seconds and torch_threads (of training) and
    run."""
    rows = []
    for run in runs:
        run = Path(run)
        metrics = load_metrics(run)  # first: "evaluate the run first" is the likelier fix
        cfg = read_config(run)
        log = run / "train_log.json"
        info = json.loads(log.read_text()) if log.is_file() else {}
        for score, m in metrics.items():
            ci = m.get("auc_ci") or [float("nan"), float("nan")]
            rows.append(
                {
                    "backbone": cfg["backbone"],
                    "ar": cfg["ar"],
                    "seed": cfg["seed"],
                    "epochs": cfg["epochs"],
                    "k": cfg["k"],
                    "n_unlabeled": cfg["n_unlabeled"],
                    "score": score,
                    "auc": m["auc"],
                    "ap": m["ap"],
                    "auc_low": ci[0],
                    "auc_high": ci[1],
                    "sens_at_95_spec": m["sens_at_95_spec"],
                    "seconds": info.get("seconds"),
                    "torch_threads": info.get("torch_threads"),
                    "run": str(run),
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
        "run",
    ]
    return pd.DataFrame(rows, columns=columns)


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
