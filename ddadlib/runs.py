"""Run folders: what ``ddad train`` writes and ``ddad evaluate`` / ``ddad score`` read.

A run folder holds

- ``config.json``: every setting, the drawn Du ids, the seed, device, precision, library
  versions and git commit; written once the data has been checked, just before training;
- ``checkpoints/A.ckpt``, ``checkpoints/B.ckpt``: training state, so an interrupted run resumes;
- ``model.pt``: the trained model (:meth:`ddadlib.estimator.DDAD.save`), written last: its
  presence marks a finished run;
- ``train_log.json``: losses per epoch and wall time of each module;
- ``.ddad.lock``: held (``flock``) by the process that trains or evaluates the run, so that a
  second one is refused instead of training the same run again;
- after ``ddad evaluate``: ``scores.csv``, ``evaluation.json``, figures and ``metrics.json``,
  written last: its presence marks a finished evaluation.

Training into a folder that holds a run with the same config resumes it (or reuses it when it
is finished); a different config is refused with the settings that differ, unless the run never
trained (no checkpoint, no model): then the new config replaces it. Module B does not
depend on Du, so a run finds a finished sibling run (same parent folder) whose module B has the
same config and reuses it: an AR ablation trains B once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ddadlib.dataset import (
    PreparedDataset,
    atomic_write_bytes,
    atomic_write_json,
    stale_temp_files,
)
from ddadlib.devices import pick_device, pick_precision
from ddadlib.errors import DataError
from ddadlib.estimator import DDAD
from ddadlib.metrics import evaluate_scores, operating_point
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


#: Marks fingerprints that cover the pixels; older runs recorded one of the manifest only.
FINGERPRINT_PREFIX = "px-"
#: Files that the run commands write into a run folder (their killed writes leave temp files).
RUN_FILES = ("config.json", "train_log.json", "model.pt", "metrics.json", "scores.csv",
             "evaluation.json", "histograms.png", "maps.png")
LOCK_FILE = ".ddad.lock"
#: Keys that every run config holds.
CONFIG_KEYS = ("format", "data_path", "data_fingerprint", "size", "backbone", "k", "epochs",
               "batch_size", "lr", "seed", "device", "precision", "du_ids")
#: How score tables write their numbers (``scores.csv`` of evaluate, the CSV of ``ddad score``).
FLOAT_FORMAT = "%.6g"
#: The specificity at which ``ddad score`` flags images (as ``sens_at_95_spec`` in metrics).
FLAG_SPECIFICITY = 0.95


def dataset_fingerprint(ds: PreparedDataset) -> str:
    """A digest of a prepared dataset's pixels (``images.npy``, ``masks.npy``), ids, labels and
    split, not of its folder path: re-preparing with another seed or editing a file changes it."""
    h = hashlib.sha256()
    h.update(json.dumps(ds.split, sort_keys=True).encode())
    h.update("\n".join(f"{i},{lab}" for i, lab in zip(ds.ids, ds.labels)).encode())
    for array in (ds.images, ds.masks):
        if array is None:
            continue
        h.update(f"{array.dtype}{array.shape}".encode())
        for start in range(0, len(array), 1024):  # chunks: images.npy may be memory-mapped
            h.update(np.ascontiguousarray(array[start:start + 1024]).tobytes())
    return FINGERPRINT_PREFIX + h.hexdigest()[:16]


def _manifest_fingerprint(ds: PreparedDataset) -> str:
    # what runs recorded before the fingerprint covered the pixels
    h = hashlib.sha256()
    h.update(json.dumps(ds.split, sort_keys=True).encode())
    h.update("\n".join(ds.manifest["md5"].astype(str)).encode())
    h.update(str(ds.images.shape).encode())
    return h.hexdigest()[:16]


def fingerprint_matches(ds: PreparedDataset, recorded: str, current: str | None = None) -> bool:
    """Whether ``ds`` is the dataset whose fingerprint a run recorded (``current``: its
    :func:`dataset_fingerprint`, when already computed)."""
    if str(recorded).startswith(FINGERPRINT_PREFIX):
        return recorded == (current or dataset_fingerprint(ds))
    return recorded == _manifest_fingerprint(ds)


def recorded_fingerprint(ds: PreparedDataset, recorded: str | None) -> str:
    """``recorded`` when it is the fingerprint of ``ds`` (also in the older form, so that runs
    and reproductions recorded before keep matching), else :func:`dataset_fingerprint`."""
    if recorded is not None and fingerprint_matches(ds, recorded):
        return recorded
    return dataset_fingerprint(ds)


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
    """A run's ``config.json`` (a :class:`DataError` naming the folder when absent or damaged)."""
    path = Path(run) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{run}: not a ddadlib run folder (no config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: damaged ({exc})") from None
    missing = [k for k in CONFIG_KEYS if k not in cfg] if isinstance(cfg, dict) else CONFIG_KEYS
    if missing:
        raise DataError(f"{path}: damaged or not a ddadlib run config (no "
                        f"{', '.join(missing)})")
    return cfg


def _has_trained(run: Path) -> bool:
    """Whether ``run`` holds anything that training produced (a checkpoint or a model)."""
    return ((run / "model.pt").exists() or (run / "train_log.json").exists()
            or any((run / "checkpoints").glob("*.ckpt")))


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
            raise DataError(f"{run}: another process (pid {holder}) is training or evaluating "
                            "this run; wait for it to finish or stop it, then run the command "
                            "again") from None
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


def _remove_stale_temp_files(run: Path, log: Log) -> None:
    # only under the run's lock: no other process of ours writes there now
    found = stale_temp_files(run, RUN_FILES) + stale_temp_files(run / "checkpoints",
                                                                ("A.ckpt", "B.ckpt"))
    for p in found:
        p.unlink(missing_ok=True)
    if found:
        log(f"{run}: removed {len(found)} temporary file(s) of an interrupted write")


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
    """Train (or resume, or reuse) the run ``cfg`` in folder ``run``; return the model.

    The folder is locked while training (a second process is refused). ``config.json`` is
    written once the data has been checked; a run that never trained (no checkpoint, no model)
    is replaced by a new config, one that trained is refused."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise DataError(f"{run}: is a file; --out must be a run folder")
    ours = {LOCK_FILE, "config.json", "checkpoints"}
    if (run.is_dir() and not (run / "config.json").exists()
            and any(p.name not in ours for p in run.iterdir())):
        raise DataError(f"{run}: folder exists and is not a ddadlib run; choose a new --out")
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(run):
            return _train_locked(run, cfg, progress, vectorised, log)
    except BaseException:
        # a run that failed before it started leaves no folder behind
        if created and all(p.name == LOCK_FILE for p in run.iterdir()):
            shutil.rmtree(run, ignore_errors=True)
        raise


def _train_locked(run: Path, cfg: dict, progress: bool, vectorised: bool | None,
                  log: Log) -> DDAD:
    _remove_stale_temp_files(run, log)
    ds = PreparedDataset.load(cfg["data_path"])
    resumed = False
    if (run / "config.json").exists():
        try:
            old, problem = read_config(run), None
        except DataError as exc:
            old, problem = None, str(exc)
        if old is not None:
            cfg = dict(cfg, data_fingerprint=recorded_fingerprint(ds, old["data_fingerprint"]))
        diff = config_differences(old, cfg) if old is not None else []
        if problem or diff:
            if _has_trained(run):
                raise DataError(problem or (f"{run}: holds a run with another config "
                                            f"({'; '.join(diff)}); train into a new --out "
                                            "folder"))
            log(f"{run}: replacing a run that never trained "
                f"({problem or '; '.join(diff)})")
        elif is_finished(run):
            log(f"{run}: finished run with the same config found; reusing it (nothing trained)")
            return DDAD.load(run / "model.pt", device=cfg["device"])
        else:
            log(f"{run}: unfinished run with the same config found; resuming it")
            cfg = dict(cfg, created=old.get("created"))
            resumed = True
    if not fingerprint_matches(ds, cfg["data_fingerprint"]):
        raise DataError(f"{cfg['data_path']}: dataset changed since the run was configured")
    normal = ds.images[ds.part("normal")]
    unlabeled = ds.images[ds.indices(cfg["du_ids"])] if cfg["du_ids"] else None
    model = DDAD(backbone=cfg["backbone"], k=cfg["k"], epochs=cfg["epochs"],
                 batch_size=cfg["batch_size"], lr=cfg["lr"], seed=cfg["seed"],
                 device=cfg["device"], precision=cfg["precision"], vectorised=vectorised,
                 progress=progress)
    model._check_params()
    atomic_write_json(run / "config.json", cfg)
    module_b = None
    if cfg["backbone"] != "fanogan":
        source = _find_module_b(run, cfg)
        if source is not None:
            try:
                module_b = DDAD.load(source / "model.pt", device=cfg["device"]).module_b_
                log(f"module B: reusing the one trained in {source} (same data, backbone, seed "
                    "and settings; B does not depend on AR)")
            except DataError as exc:
                log(f"module B: not reusing the one of {source} ({exc}); training it")
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
    """Score the test split of the run's dataset (or of ``data``) and write ``scores.csv``,
    ``evaluation.json``, figures and, last, ``metrics.json`` into ``out`` (default: the run
    folder, or ``RUN/eval-<name of data>-<its fingerprint>`` for another dataset). Returns the
    metrics. The run's own dataset must still be the one it trained on (its fingerprint)."""
    run = Path(run)
    cfg = read_config(run)
    if not is_finished(run):
        raise DataError(f"{run}: training has not finished (no model.pt); run `ddad train` "
                        "with the same settings to resume it")
    with run_lock(run):
        _remove_stale_temp_files(run, log)
        return _evaluate_locked(run, cfg, data, out, n_boot, figures, overwrite, device, log)


def _evaluate_locked(run: Path, cfg: dict, data: str | Path | None, out: str | Path | None,
                     n_boot: int, figures: bool, overwrite: bool, device: str | None,
                     log: Log) -> dict[str, dict]:
    data = Path(data) if data is not None else Path(cfg["data_path"])
    own = Path(cfg["data_path"]).resolve() == data.resolve()
    ds = PreparedDataset.load(data)
    fingerprint = dataset_fingerprint(ds)
    if own and not fingerprint_matches(ds, cfg["data_fingerprint"], fingerprint):
        raise DataError(f"{data}: the dataset changed since the run trained on it (its pixels, "
                        f"labels or split differ from the fingerprint in {run / 'config.json'}), "
                        "so its test images may have been training images; prepare it again as "
                        "it was (same command and seed) or train a new run on it")
    if out is None:
        # keyed by the dataset's identity: two folders of the same name never share results
        out = run if own else run / (f"eval-{data.resolve().name}-"
                                     f"{fingerprint.removeprefix(FINGERPRINT_PREFIX)[:8]}")
    out = Path(out)
    if out != run:
        for p in stale_temp_files(out, RUN_FILES):
            p.unlink(missing_ok=True)
    if (out / "metrics.json").exists() and not overwrite:
        earlier = out / "evaluation.json"
        done = json.loads(earlier.read_text()) if earlier.is_file() else {}
        if done.get("data_fingerprint", fingerprint) != fingerprint:
            raise DataError(f"{out}: holds the evaluation of another dataset "
                            f"({done.get('data')}); pass --overwrite to replace it")
        log(f"{out / 'metrics.json'}: already evaluated; showing it (--overwrite to redo)")
        return json.loads((out / "metrics.json").read_text())
    if ds.size != cfg["size"]:
        raise DataError(f"{data}: images are {ds.size} pixels, the run was trained on "
                        f"{cfg['size']}")
    # the completion marker goes first and comes back last: a stopped evaluation is redone
    (out / "metrics.json").unlink(missing_ok=True)
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
    atomic_write_bytes(out / "scores.csv",
                       frame.to_csv(index=False, float_format=FLOAT_FORMAT).encode())
    atomic_write_json(out / "evaluation.json", {
        "run": str(run.resolve()), "data": str(data.resolve()), "data_fingerprint": fingerprint,
        "test": [int((labels == 0).sum()), int((labels == 1).sum())],
        "n_boot": n_boot, "seconds": round(time.perf_counter() - t0, 2),
        "provenance": provenance()})
    if figures:
        _write_figures(out, x, labels, table, metrics, maps, masks, [ds.ids[i] for i in idx],
                       cfg["seed"], log)
    atomic_write_json(out / "metrics.json", metrics)
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


def normal_reference(run: str | Path) -> tuple[pd.DataFrame, dict[str, float]] | None:
    """The run's own evaluation (``scores.csv`` beside ``metrics.json`` in the run folder): its
    test scores and, per score, the threshold at 95% specificity (the operating point of
    ``sens_at_95_spec``); None when the run has not been evaluated."""
    run = Path(run)
    if not (run / "metrics.json").is_file() or not (run / "scores.csv").is_file():
        return None
    try:
        table = pd.read_csv(run / "scores.csv")
    except (OSError, ValueError) as exc:
        raise DataError(f"{run / 'scores.csv'}: damaged ({exc}); evaluate the run again "
                        f"(`ddad evaluate --run {run} --overwrite`)") from None
    if "label" not in table or set(table["label"].unique()) != {0, 1}:
        raise DataError(f"{run / 'scores.csv'}: no normal and abnormal test scores; evaluate "
                        f"the run again (`ddad evaluate --run {run} --overwrite`)")
    thresholds = {}
    for name in ("rec", "rec_ensemble", "intra", "inter"):
        if name in table and table[name].notna().all():
            thresholds[name] = operating_point(table["label"].to_numpy(), table[name].to_numpy(),
                                               FLAG_SPECIFICITY)[0]
    return table, thresholds


def score_images(run: str | Path, images: np.ndarray, ids: list[str],
                 device: str | None = "auto") -> pd.DataFrame:
    """Scores of unlabeled images by a finished run, one row per image.

    Beside each raw score ``S`` (higher = more anomalous) come, when the run has been
    evaluated, ``S_pct``: the percentage of the run's normal test images whose score is at most
    this one, and ``S_flag``: 1 where the score is above the threshold at 95% specificity of
    that evaluation (``frame.attrs["thresholds"]``), else 0. Without an evaluation the frame holds
    the raw scores only (``frame.attrs["thresholds"]`` is empty)."""
    read_config(run)
    if not is_finished(run):
        raise DataError(f"{run}: training has not finished (no model.pt)")
    model = DDAD.load(Path(run) / "model.pt", device=device)
    scores = model.score_samples(images)
    reference = normal_reference(run)
    frame = pd.DataFrame({"id": ids})
    thresholds: dict[str, float] = {}
    for name in ("rec", "rec_ensemble", "intra", "inter"):
        if name not in scores:
            continue
        values = scores[name]
        if not np.isfinite(values).all():
            raise DataError(f"{Path(run) / 'model.pt'}: gives scores that are not finite; the "
                            "model is damaged, train it again")
        frame[name] = values
        if reference is not None and name in reference[1]:
            table, cuts = reference
            normal = table.loc[table["label"] == 0, name].to_numpy()
            # compared as written, so that the CSV's numbers and its flags agree
            values = np.array([float(FLOAT_FORMAT % v) for v in values])
            # the share of normal test scores at or below each score (a "weak" percentile)
            frame[f"{name}_pct"] = 100.0 * np.searchsorted(np.sort(normal), values,
                                                           side="right") / len(normal)
            frame[f"{name}_flag"] = (values > cuts[name]).astype(int)
            thresholds[name] = cuts[name]
    frame.attrs["thresholds"] = thresholds
    return frame
