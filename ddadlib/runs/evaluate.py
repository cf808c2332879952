"""Evaluating a finished run on a test split: scores, metrics and figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ddadlib import plots
from ddadlib.data.dataset import PreparedDataset
from ddadlib.errors import DataError
from ddadlib.fileio import atomic_write_bytes, atomic_write_json, stale_temp_files
from ddadlib.paper import REFINED_SCORES, SCORE_NAMES
from ddadlib.provenance import provenance
from ddadlib.runs.config import (
    FINGERPRINT_PREFIX,
    FLOAT_FORMAT,
    RUN_FILES,
    Log,
    dataset_fingerprint,
    fingerprint_matches,
)
from ddadlib.runs.refine import file_digest, finished_refinements, load_refiners
from ddadlib.runs.run import Run, test_boxes, test_set
from ddadlib.runs.train import remove_stale_temp_files, run_lock
from ddadlib.scoring.metrics import evaluate_scores


def evaluate_run(
    run: str | Path,
    data: str | Path | None = None,
    *,
    out: str | Path | None = None,
    n_boot: int = 1000,
    figures: bool = True,
    overwrite: bool = False,
    device: str | None = "auto",
    log: Log = print,
) -> dict[str, dict]:
    """Score the test split of the run's dataset (or of ``data``) and write ``scores.csv``,
    ``evaluation.json``, figures and, last, ``metrics.json`` into ``out`` (default: the run
    folder, or ``RUN/eval-<name of data>-<its fingerprint>`` for another dataset). Returns the
    metrics. The run's own dataset must still be the one it trained on (its fingerprint).

    The scores include those of the run's finished refinements (``ddad refine``: ``r_intra``,
    ``r_dual``); an evaluation made before a refinement changed is made again. On data with
    masks every score also gets its pixel AUROC and AUPRO, on data with boxes the box metrics
    (:mod:`ddadlib.scoring.localization`)."""
    run = Run(run)
    run.require_finished()
    with run_lock(run.path):
        remove_stale_temp_files(run.path, log)
        return _evaluate_locked(run, data, out, n_boot, figures, overwrite, device, log)


def _evaluate_locked(
    run: Run,
    data: str | Path | None,
    out: str | Path | None,
    n_boot: int,
    figures: bool,
    overwrite: bool,
    device: str | None,
    log: Log,
) -> dict[str, dict]:
    cfg = run.config
    data = Path(data) if data is not None else Path(cfg.data_path)
    own = Path(cfg.data_path).resolve() == data.resolve()
    ds = PreparedDataset.load(data)
    fingerprint = dataset_fingerprint(ds)
    if own and not fingerprint_matches(ds, cfg.data_fingerprint, fingerprint):
        raise DataError(
            f"{data}: the dataset changed since the run trained on it (its pixels, "
            f"labels or split differ from the fingerprint in {run.config_path}), "
            "so its test images may have been training images; prepare it again as "
            "it was (same command and seed) or train a new run on it"
        )
    if out is None:
        # keyed by the dataset's identity: two folders of the same name never share results
        out = (
            run.path
            if own
            else run.path
            / (f"eval-{data.resolve().name}-{fingerprint.removeprefix(FINGERPRINT_PREFIX)[:8]}")
        )
    out = Path(out)
    if out != run.path:
        for p in stale_temp_files(out, RUN_FILES):
            p.unlink(missing_ok=True)
    result = Run(out)
    refined = {name: file_digest(p) for name, p in finished_refinements(run.path).items()}
    if result.is_evaluated and not overwrite:
        earlier = out / "evaluation.json"
        done = json.loads(earlier.read_text()) if earlier.is_file() else {}
        if done.get("data_fingerprint", fingerprint) != fingerprint:
            raise DataError(
                f"{out}: holds the evaluation of another dataset "
                f"({done.get('data')}); pass --overwrite to replace it"
            )
        if done.get("refinements", {}) == refined:
            log(f"{result.metrics_path}: already evaluated; showing it (--overwrite to redo)")
            return result.metrics()
        # the same scores come out again (the bootstrap is seeded), with the refined ones
        before = ", ".join(done.get("refinements", {})) or "none"
        log(
            f"{out}: evaluating again: the refinements changed since the evaluation (now "
            f"{', '.join(refined) or 'none'}; evaluated: {before})"
        )
    if ds.size != cfg.size:
        raise DataError(f"{data}: images are {ds.size} pixels, the run was trained on {cfg.size}")
    # the completion marker goes first and comes back last: a stopped evaluation is redone
    result.metrics_path.unlink(missing_ok=True)
    model = run.model(device=device)
    x, labels, ids, masks = test_set(ds)
    t0 = time.perf_counter()
    maps, scores = model.score_all(x)
    refiners = load_refiners(run.path, model, device=device) if refined else []
    for refiner in refiners:  # r_intra, r_dual: from the DDAD's maps just computed
        maps[refiner.score_name] = refiner.refine_maps(maps)
        scores[refiner.score_name] = maps[refiner.score_name].mean(axis=(1, 2)).astype(float)
    boxes = test_boxes(ds) if masks is None else None
    metrics = evaluate_scores(
        labels, scores, masks=masks, maps=maps, boxes=boxes, n_boot=n_boot, seed=cfg.seed
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        result.scores_path,
        score_table(ids, labels, scores).to_csv(index=False, float_format=FLOAT_FORMAT).encode(),
    )
    atomic_write_json(
        out / "evaluation.json",
        {
            "run": str(run.path.resolve()),
            "data": str(data.resolve()),
            "data_fingerprint": fingerprint,
            "test": [int((labels == 0).sum()), int((labels == 1).sum())],
            "n_boot": n_boot,
            "refinements": refined,
            "seconds": round(time.perf_counter() - t0, 2),
            "provenance": provenance(),
        },
    )
    if figures:
        shown = model.shown_maps(maps)
        shown.update({r.score_name: maps[r.score_name] for r in refiners})
        _write_figures(out, x, labels, scores, metrics, shown, masks, ids, cfg.seed, log)
    atomic_write_json(result.metrics_path, metrics)
    log(f"wrote {result.metrics_path} and {result.scores_path}")
    return metrics


def score_table(ids: list[str], labels: np.ndarray, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """The table of ``scores.csv``: id, label and every score of the detector.

    The columns follow :data:`~ddadlib.paper.SCORE_NAMES` (NaN where the detector has none;
    ``rec`` is network 1 of module B alone, the column that ``ddad score`` reads its threshold
    from), then ``rec_m1`` to ``rec_mK``, each network alone, then ``r_intra`` and ``r_dual``
    where the run has been refined (``ddad refine``)."""
    frame = pd.DataFrame({"id": ids, "label": labels})
    for name in SCORE_NAMES:
        if name == "rec":
            frame[name] = scores["rec"][0]
        else:
            frame[name] = scores[name] if name in scores else np.nan
    for j, row in enumerate(scores["rec"]):
        frame[f"rec_m{j + 1}"] = row
    for name in REFINED_SCORES.values():  # the refinements' scores, where the run has them
        if name in scores:
            frame[name] = scores[name]
    return frame


def _write_figures(out: Path, x, labels, table, metrics, shown, masks, ids, seed, log) -> None:
    fig = plots.plot_score_histograms(table, labels, metrics)
    plots.save_figure(fig, out / "histograms.png")
    pick = plots.pick_map_examples(labels, seed=seed)
    shown = {n: v[pick] for n, v in shown.items()}
    fig = plots.plot_score_maps(
        x[pick],
        shown,
        labels=labels[pick],
        masks=masks[pick] if masks is not None else None,
        ids=[ids[i] for i in pick],
    )
    plots.save_figure(fig, out / "maps.png")
    log(f"wrote {out / 'histograms.png'} and {out / 'maps.png'}")
