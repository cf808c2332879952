"""Run folders: what ``ddad train`` writes and ``ddad evaluate`` / ``ddad score`` read.

A run folder holds

- ``config.json``: every setting, the drawn Du ids, the seed, device, precision, library
  versions and git commit; written before training starts;
- ``checkpoints/A.ckpt``, ``checkpoints/B.ckpt``: training state, so an interrupted run resumes;
- ``model.pt``: the trained model (:meth:`ddadlib.estimator.DDAD.save`), written last: its
  presence marks a finished run;
- ``train_log.json``: losses per epoch and wall time of each module;
- after ``ddad evaluate``: ``metrics.json``, ``scores.csv``, ``evaluation.json`` and figures.

Training into a folder that holds a run with the same config resumes it (or reuses it when it
is finished); a different config is refused with the settings that differ. Module B does not
depend on Du, so a run finds a finished sibling run (same parent folder) whose module B has the
same config and reuses it: an AR ablation trains B once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ddadlib.dataset import PreparedDataset, atomic_write_bytes, atomic_write_json
from ddadlib.devices import pick_device, pick_precision
from ddadlib.errors import DataError
from ddadlib.estimator import DDAD
from ddadlib.metrics import evaluate_scores
from ddadlib.provenance import provenance
from ddadlib.splits import draw_unlabeled, max_unlabeled, split_sizes

Log = Callable[[str], None]
RUN_FORMAT = 1
#: The paper's |Du|.
PAPER_UNLABELED = 4000
#: Config keys that do not define the run (they may differ when it is resumed or reused).
VOLATILE = ("provenance", "created", "data_path")
#: Config keys that define module B (it does not depend on Du).
MODULE_B_KEYS = ("data_fingerprint", "size", "dn_size", "backbone", "k", "epochs", "batch_size",
                 "lr", "seed", "device", "precision")


def dataset_fingerprint(ds: PreparedDataset) -> str:
    """A digest of a prepared dataset's split and image digests (not its folder path)."""
    h = hashlib.sha256()
    h.update(json.dumps(ds.split, sort_keys=True).encode())
    h.update("\n".join(ds.manifest["md5"].astype(str)).encode())
    h.update(str(ds.images.shape).encode())
    return h.hexdigest()[:16]


def default_unlabeled(split: dict, ar: float) -> int:
    """The paper's M = 4,000 where the pools allow it at ``ar``, else the largest they allow."""
    return min(PAPER_UNLABELED, max_unlabeled(split, ar))


def run_config(data: str | Path, *, backbone: str = "ae", k: int = 3, epochs: int = 250,
               ar: float = 0.6, n_unlabeled: int | None = None, seed: int = 0,
               batch_size: int = 64, lr: float = 5e-4, device: str | None = "auto",
               precision: str | None = "auto", log: Log = print) -> dict[str, Any]:
    """The full config of a run on a prepared dataset, with Du drawn; fails at once (a
    :class:`DataError`) when the pools cannot supply M images at ``ar``."""
    DDAD(backbone=backbone, k=k, epochs=epochs, batch_size=batch_size, lr=lr)._check_params()
    ds = PreparedDataset.load(data, mmap=True)
    sizes = split_sizes(ds.split)
    dev = pick_device(device)
    cfg: dict[str, Any] = {
        "format": RUN_FORMAT, "data_path": str(Path(data).resolve()),
        "data_fingerprint": dataset_fingerprint(ds), "size": ds.size,
        "dn_size": sizes["normal"], "test_size": [sizes["test_normal"], sizes["test_abnormal"]],
        "backbone": backbone, "k": k if backbone != "fanogan" else 1, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "betas": [0.5, 0.999], "seed": seed,
        "device": dev.type, "precision": pick_precision(precision, dev),
    }
    if backbone == "fanogan":
        cfg.update(ar=None, n_unlabeled=0, du_ids=[])
        log("f-AnoGAN trains on Dn only: no unlabeled images are drawn")
    else:
        if n_unlabeled is None:
            n_unlabeled = default_unlabeled(ds.split, ar)
            log(f"M = {n_unlabeled:,} unlabeled images at AR {ar} "
                f"({'the paper' if n_unlabeled == PAPER_UNLABELED else 'the most the pools allow'}"
                f"; --n-unlabeled to change)")
        cfg.update(ar=ar, n_unlabeled=n_unlabeled,
                   du_ids=draw_unlabeled(ds.split, n_unlabeled, ar, seed))
    cfg["provenance"] = provenance()
    cfg["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return cfg


def _defining(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in VOLATILE}


def config_differences(old: dict, new: dict) -> list[str]:
    """The defining settings in which two run configs differ, as ``key: old -> new``."""
    a, b = _defining(old), _defining(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            va, vb = a.get(key), b.get(key)
            if isinstance(va, list) and len(va) > 8:
                va, vb = f"<{len(va)} ids>", f"<{len(vb or [])} ids>"
            out.append(f"{key}: {va} -> {vb}")
    return out


def is_finished(run: str | Path) -> bool:
    """Whether ``run`` holds a finished run (its ``model.pt`` is written last)."""
    return (Path(run) / "model.pt").is_file() and (Path(run) / "config.json").is_file()


def read_config(run: str | Path) -> dict:
    """A run's ``config.json`` (a :class:`DataError` naming the folder when absent)."""
    path = Path(run) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{run}: not a ddadlib run folder (no config.json)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: damaged ({exc})") from None


def _find_module_b(run: Path, cfg: dict) -> Path | None:
    want = {k: cfg[k] for k in MODULE_B_KEYS}
    if not run.parent.is_dir():
        return None
    for other in sorted(run.parent.iterdir()):
        if other == run or not is_finished(other):
            continue
        try:
            ocfg = read_config(other)
        except DataError:
            continue
        if {k: ocfg.get(k) for k in MODULE_B_KEYS} == want and ocfg.get("backbone") != "fanogan":
            return other
    return None


def train_run(run: str | Path, cfg: dict, *, progress: bool = True, vectorised: bool | None = None,
              log: Log = print) -> DDAD:
    """Train (or resume, or reuse) the run ``cfg`` in folder ``run``; return the model."""
    run = Path(run)
    resumed = False
    if (run / "config.json").exists():
        old = read_config(run)
        diff = config_differences(old, cfg)
        if diff:
            raise DataError(f"{run}: holds a run with another config ({'; '.join(diff)}); "
                            "train into a new --out folder")
        if is_finished(run):
            log(f"{run}: finished run with the same config found; reusing it (nothing trained)")
            return DDAD.load(run / "model.pt", device=cfg["device"])
        log(f"{run}: unfinished run with the same config found; resuming it")
        cfg = dict(cfg, created=old.get("created"))
        resumed = True
    elif run.exists() and any(run.iterdir()):
        raise DataError(f"{run}: folder exists and is not a ddadlib run; choose a new --out")
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / "config.json", cfg)

    ds = PreparedDataset.load(cfg["data_path"])
    if dataset_fingerprint(ds) != cfg["data_fingerprint"]:
        raise DataError(f"{cfg['data_path']}: dataset changed since the run was configured")
    normal = ds.images[ds.part("normal")]
    unlabeled = ds.images[ds.indices(cfg["du_ids"])] if cfg["du_ids"] else None
    model = DDAD(backbone=cfg["backbone"], k=cfg["k"], epochs=cfg["epochs"],
                 batch_size=cfg["batch_size"], lr=cfg["lr"], seed=cfg["seed"],
                 device=cfg["device"], precision=cfg["precision"], vectorised=vectorised,
                 progress=progress)
    module_b = None
    if cfg["backbone"] != "fanogan":
        source = _find_module_b(run, cfg)
        if source is not None:
            log(f"module B: reusing the one trained in {source} (same data, backbone, seed and "
                "settings; B does not depend on AR)")
            module_b = DDAD.load(source / "model.pt", device=cfg["device"]).module_b_
    n_u = len(cfg["du_ids"])
    log(f"training {cfg['backbone']} on {cfg['device']} ({cfg['precision']}): "
        f"module B on Dn ({cfg['dn_size']:,} images)"
        + ("" if cfg["backbone"] == "fanogan" else
           f", module A on Dn + Du ({cfg['dn_size'] + n_u:,} images, AR {cfg['ar']})")
        + f"; K = {cfg['k']}, {cfg['epochs']} epochs, seed {cfg['seed']}")
    t0 = time.perf_counter()
    model.fit(normal, unlabeled, module_b=module_b, checkpoint_dir=run / "checkpoints")
    log_entry = {"seconds": round(time.perf_counter() - t0, 2),
                 "torch_threads": torch.get_num_threads(), "modules": model.history_,
                 "module_b_from": str(source) if module_b is not None else None,
                 # after a resume, "seconds" counts the last session only
                 "resumed": resumed}
    atomic_write_json(run / "train_log.json", log_entry)
    model.save(run / "model.pt")
    # Checkpoints (weights and Adam states) only serve to resume; a finished run is model.pt.
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    log(f"wrote {run / 'model.pt'} ({log_entry['seconds']:.0f} s)")
    return model


# -- evaluation ---------------------------------------------------------------------------
def evaluate_run(run: str | Path, data: str | Path | None = None, *, out: str | Path | None = None,
                 n_boot: int = 1000, figures: bool = True, overwrite: bool = False,
                 device: str | None = "auto", log: Log = print) -> dict[str, dict]:
    """Score the test split of the run's dataset (or of ``data``) and write ``metrics.json``,
    ``scores.csv``, ``evaluation.json`` and figures into ``out`` (default: the run folder,
    or ``RUN/eval-<name of data>`` for another dataset). Returns the metrics."""
    run = Path(run)
    cfg = read_config(run)
    if not is_finished(run):
        raise DataError(f"{run}: training has not finished (no model.pt); run `ddad train` "
                        "with the same settings to resume it")
    data = Path(data) if data is not None else Path(cfg["data_path"])
    if out is None:
        own = Path(cfg["data_path"]).resolve() == data.resolve()
        out = run if own else run / f"eval-{data.resolve().name}"
    out = Path(out)
    if (out / "metrics.json").exists() and not overwrite:
        log(f"{out / 'metrics.json'}: already evaluated; showing it (--overwrite to redo)")
        return json.loads((out / "metrics.json").read_text())
    ds = PreparedDataset.load(data)
    if ds.size != cfg["size"]:
        raise DataError(f"{data}: images are {ds.size} pixels, the run was trained on "
                        f"{cfg['size']}")
    idx = np.concatenate([ds.part("test_normal"), ds.part("test_abnormal")])
    model = DDAD.load(run / "model.pt", device=device)
    x, labels = ds.images[idx], ds.labels[idx]
    t0 = time.perf_counter()
    maps, scores = model.score_all(x)
    masks = ds.masks[idx] if ds.masks is not None else None
    table = {n: (scores["rec_members"] if n == "rec" else scores[n])
             for n in ("rec", "rec_ensemble", "intra", "inter") if n in scores}
    metrics = evaluate_scores(labels, table, masks=masks, maps=maps, n_boot=n_boot,
                              seed=cfg["seed"])
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"id": [ds.ids[i] for i in idx], "label": labels})
    for name in ("rec", "rec_ensemble", "intra", "inter"):
        frame[name] = scores[name] if name in scores else np.nan
    for j, row in enumerate(scores["rec_members"]):
        frame[f"rec_m{j + 1}"] = row
    atomic_write_bytes(out / "scores.csv", frame.to_csv(index=False, float_format="%.6g").encode())
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "evaluation.json", {
        "run": str(run.resolve()), "data": str(data.resolve()),
        "test": [int((labels == 0).sum()), int((labels == 1).sum())],
        "n_boot": n_boot, "seconds": round(time.perf_counter() - t0, 2),
        "provenance": provenance()})
    if figures:
        _write_figures(out, x, labels, table, metrics, maps, masks, [ds.ids[i] for i in idx],
                       cfg["seed"], log)
    log(f"wrote {out / 'metrics.json'} and {out / 'scores.csv'}")
    return metrics


def _write_figures(out: Path, x, labels, table, metrics, maps, masks, ids, seed, log) -> None:
    from ddadlib import plots

    fig = plots.plot_score_histograms(table, labels, metrics)
    plots.save_figure(fig, out / "histograms.png")
    pick = plots.pick_map_examples(labels, seed=seed)
    shown = {n: maps[n][pick] for n in ("mu_A", "mu_B", "intra", "inter") if n in maps}
    if "mu_A" not in maps:
        shown = {"recon": maps["mu_B"][pick], "rec": maps["rec"][0][pick]}
    fig = plots.plot_score_maps(x[pick], shown, labels=labels[pick],
                                masks=masks[pick] if masks is not None else None,
                                ids=[ids[i] for i in pick])
    plots.save_figure(fig, out / "maps.png")
    log(f"wrote {out / 'histograms.png'} and {out / 'maps.png'}")


def format_metrics(metrics: dict[str, dict]) -> str:
    """A small text table of AUC (with interval) and AP per score."""
    lines = [f"{'score':<14}{'AUC':>13}{'95% CI':>17}{'AP':>8}{'sens@95%spec':>14}"]
    for name, m in metrics.items():
        auc = f"{m['auc']:.3f}" + (f"±{m['auc_std']:.3f}" if "auc_std" in m else "")
        ci = m.get("auc_ci")
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        lines.append(f"{name:<14}{auc:>13}{ci_s:>17}{m['ap']:>8.3f}"
                     f"{m['sens_at_95_spec']:>14.3f}")
    return "\n".join(lines)


def score_images(run: str | Path, images: np.ndarray, ids: list[str],
                 device: str | None = "auto") -> pd.DataFrame:
    """Scores of unlabeled images by a finished run, one row per image."""
    read_config(run)
    if not is_finished(run):
        raise DataError(f"{run}: training has not finished (no model.pt)")
    model = DDAD.load(Path(run) / "model.pt", device=device)
    scores = model.score_samples(images)
    frame = pd.DataFrame({"id": ids})
    for name in ("rec", "rec_ensemble", "intra", "inter"):
        if name in scores:
            frame[name] = scores[name]
    return frame
