"""Evaluating a finished run on a test split: scores, metrics and figures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ddadlib import plots
from ddadlib.data.dataset import PreparedDataset
from ddadlib.detectors import DDAD
from ddadlib.errors import DataError
from ddadlib.fileio import atomic_write_bytes, atomic_write_json, stale_temp_files
from ddadlib.paper import SCORE_NAMES
from ddadlib.provenance import provenance
from ddadlib.runs.config import (
    FINGERPRINT_PREFIX,
    FLOAT_FORMAT,
    RUN_FILES,
    Log,
    dataset_fingerprint,
    fingerprint_matches,
    is_finished,
    read_config,
)
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
    metrics. The run's own dataset must still be the one it trained on (its fingerprint)."""
    run = Path(run)
    cfg = read_config(run)
    if not is_finished(run):
        raise DataError(
            f"{run}: training has not finished (no model.pt); run `ddad train` "
            "with the same settings to resume it"
        )
    with run_lock(run):
        remove_stale_temp_files(run, log)
        return _evaluate_locked(run, cfg, data, out, n_boot, figures, overwrite, device, log)


def _evaluate_locked(
    run: Path,
    cfg: dict,
    data: str | Path | None,
    out: str | Path | None,
    n_boot: int,
    figures: bool,
    overwrite: bool,
    device: str | None,
    log: Log,
) -> dict[str, dict]:
    data = Path(data) if data is not None else Path(cfg["data_path"])
    own = Path(cfg["data_path"]).resolve() == data.resolve()
    ds = PreparedDataset.load(data)
    fingerprint = dataset_fingerprint(ds)
    if own and not fingerprint_matches(ds, cfg["data_fingerprint"], fingerprint):
        raise DataError(
            f"{data}: the dataset changed since the run trained on it (its pixels, "
            f"labels or split differ from the fingerprint in {run / 'config.json'}), "
            "so its test images may have been training images; prepare it again as "
            "it was (same command and seed) or train a new run on it"
        )
    if out is None:
        # keyed by the dataset's identity: two folders of the same name never share results
        out = (
            run
            if own
            else run
            / (f"eval-{data.resolve().name}-{fingerprint.removeprefix(FINGERPRINT_PREFIX)[:8]}")
        )
    out = Path(out)
    if out != run:
        for p in stale_temp_files(out, RUN_FILES):
            p.unlink(missing_ok=True)
    if (out / "metrics.json").exists() and not overwrite:
        earlier = out / "evaluation.json"
        done = json.loads(earlier.read_text()) if earlier.is_file() else {}
        if done.get("data_fingerprint", fingerprint) != fingerprint:
            raise DataError(
                f"{out}: holds the evaluation of another dataset "
                f"({done.get('data')}); pass --overwrite to replace it"
            )
        log(f"{out / 'metrics.json'}: already evaluated; showing it (--overwrite to redo)")
        return json.loads((out / "metrics.json").read_text())
    if ds.size != cfg["size"]:
        raise DataError(
            f"{data}: images are {ds.size} pixels, the run was trained on {cfg['size']}"
        )
    # the completion marker goes first and comes back last: a stopped evaluation is redone
    (out / "metrics.json").unlink(missing_ok=True)
    idx = np.concatenate([ds.part("test_normal"), ds.part("test_abnormal")])
    model = DDAD.load(run / "model.pt", device=device)
    x, labels = ds.images[idx], ds.labels[idx]
    t0 = time.perf_counter()
    maps, scores = model.score_all(x)
    masks = ds.masks[idx] if ds.masks is not None else None
    table = {
        n: (scores["rec_members"] if n == "rec" else scores[n]) for n in SCORE_NAMES if n in scores
    }
    metrics = evaluate_scores(
        labels, table, masks=masks, maps=maps, n_boot=n_boot, seed=cfg["seed"]
    )
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"id": [ds.ids[i] for i in idx], "label": labels})
    for name in SCORE_NAMES:
        frame[name] = scores[name] if name in scores else np.nan
    for j, row in enumerate(scores["rec_members"]):
        frame[f"rec_m{j + 1}"] = row
    atomic_write_bytes(
        out / "scores.csv", frame.to_csv(index=False, float_format=FLOAT_FORMAT).encode()
    )
    atomic_write_json(
        out / "evaluation.json",
        {
            "run": str(run.resolve()),
            "data": str(data.resolve()),
            "data_fingerprint": fingerprint,
            "test": [int((labels == 0).sum()), int((labels == 1).sum())],
            "n_boot": n_boot,
            "seconds": round(time.perf_counter() - t0, 2),
            "provenance": provenance(),
        },
    )
    if figures:
        _write_figures(
            out, x, labels, table, metrics, maps, masks, [ds.ids[i] for i in idx], cfg["seed"], log
        )
    atomic_write_json(out / "metrics.json", metrics)
    log(f"wrote {out / 'metrics.json'} and {out / 'scores.csv'}")
    return metrics


def _write_figures(out: Path, x, labels, table, metrics, maps, masks, ids, seed, log) -> None:
    fig = plots.plot_score_histograms(table, labels, metrics)
    plots.save_figure(fig, out / "histograms.png")
    pick = plots.pick_map_examples(labels, seed=seed)
    shown = {n: maps[n][pick] for n in ("mu_A", "mu_B", "intra", "inter") if n in maps}
    if "mu_A" not in maps:
        shown = {"recon": maps["mu_B"][pick], "rec": maps["rec"][0][pick]}
    fig = plots.plot_score_maps(
        x[pick],
        shown,
        labels=labels[pick],
        masks=masks[pick] if masks is not None else None,
        ids=[ids[i] for i in pick],
    )
    plots.save_figure(fig, out / "maps.png")
    log(f"wrote {out / 'histograms.png'} and {out / 'maps.png'}")


def format_metrics(metrics: dict[str, dict]) -> str:
    """A small text table of AUC (with interval) and AP per score."""
    lines = [f"{'score':<14}{'AUC':>13}{'95% CI':>17}{'AP':>8}{'sens@95%spec':>14}"]
    for name, m in metrics.items():
        auc = f"{m['auc']:.3f}" + (f"±{m['auc_std']:.3f}" if "auc_std" in m else "")
        ci = m.get("auc_ci")
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        lines.append(f"{name:<14}{auc:>13}{ci_s:>17}{m['ap']:>8.3f}{m['sens_at_95_spec']:>14.3f}")
    return "\n".join(lines)
