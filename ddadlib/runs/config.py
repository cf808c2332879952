"""Run folders: what ``ddad train`` writes and ``ddad evaluate`` / ``ddad score`` read.

A run folder holds

- ``config.json``: every setting, the drawn Du ids, the seed, device, precision, library
  versions and git commit; written once the data has been checked, just before training;
- ``checkpoints/A.ckpt``, ``checkpoints/B.ckpt``: training state, so an interrupted run resumes;
- ``model.pt``: the trained model (:meth:`ddadlib.detectors.DDAD.save`), written last: its
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

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.splits import draw_unlabeled, max_unlabeled, split_sizes
from ddadlib.detectors import DDAD
from ddadlib.devices import pick_device, pick_precision
from ddadlib.errors import DataError
from ddadlib.paper import (
    PAPER_BATCH_SIZE,
    PAPER_BETAS,
    PAPER_EPOCHS,
    PAPER_K,
    PAPER_LR,
    PAPER_UNLABELED,
    TABLE_AR,
)
from ddadlib.provenance import provenance

Log = Callable[[str], None]
RUN_FORMAT = 1
#: Config keys that do not define the run (they may differ when it is resumed or reused).
VOLATILE = ("provenance", "created", "data_path")
#: Config keys that define module B (it does not depend on Du).
MODULE_B_KEYS = (
    "data_fingerprint",
    "size",
    "dn_size",
    "backbone",
    "k",
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "device",
    "precision",
)


#: Marks fingerprints that cover the pixels; older runs recorded one of the manifest only.
FINGERPRINT_PREFIX = "px-"
#: Files that the run commands write into a run folder (their killed writes leave temp files).
RUN_FILES = (
    "config.json",
    "train_log.json",
    "model.pt",
    "metrics.json",
    "scores.csv",
    "evaluation.json",
    "histograms.png",
    "maps.png",
)
LOCK_FILE = ".ddad.lock"
#: Keys that every run config holds.
CONFIG_KEYS = (
    "format",
    "data_path",
    "data_fingerprint",
    "size",
    "backbone",
    "k",
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "device",
    "precision",
    "du_ids",
)
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
            h.update(np.ascontiguousarray(array[start : start + 1024]).tobytes())
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


def run_config(
    data: str | Path,
    *,
    backbone: str = "ae",
    k: int = PAPER_K,
    epochs: int = PAPER_EPOCHS,
    ar: float = TABLE_AR,
    n_unlabeled: int | None = None,
    seed: int = 0,
    batch_size: int = PAPER_BATCH_SIZE,
    lr: float = PAPER_LR,
    device: str | None = "auto",
    precision: str | None = "auto",
    log: Log = print,
) -> dict[str, Any]:
    """The full config of a run on a prepared dataset, with Du drawn; fails at once (a
    :class:`DataError`) when the pools cannot supply M images at ``ar``."""
    DDAD(backbone=backbone, k=k, epochs=epochs, batch_size=batch_size, lr=lr)._check_params()
    ds = PreparedDataset.load(data, mmap=True)
    sizes = split_sizes(ds.split)
    dev = pick_device(device)
    cfg: dict[str, Any] = {
        "format": RUN_FORMAT,
        "data_path": str(Path(data).resolve()),
        "data_fingerprint": dataset_fingerprint(ds),
        "size": ds.size,
        "dn_size": sizes["normal"],
        "test_size": [sizes["test_normal"], sizes["test_abnormal"]],
        "backbone": backbone,
        "k": k if backbone != "fanogan" else 1,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "betas": list(PAPER_BETAS),
        "seed": seed,
        "device": dev.type,
        "precision": pick_precision(precision, dev),
    }
    if backbone == "fanogan":
        cfg.update(ar=None, n_unlabeled=0, du_ids=[])
        log("f-AnoGAN trains on Dn only: no unlabeled images are drawn")
    else:
        if n_unlabeled is None:
            n_unlabeled = default_unlabeled(ds.split, ar)
            log(
                f"M = {n_unlabeled:,} unlabeled images at AR {ar} "
                f"({'the paper' if n_unlabeled == PAPER_UNLABELED else 'the most the pools allow'}"
                f"; --n-unlabeled to change)"
            )
        cfg.update(
            ar=ar, n_unlabeled=n_unlabeled, du_ids=draw_unlabeled(ds.split, n_unlabeled, ar, seed)
        )
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
        raise DataError(f"{path}: damaged or not a ddadlib run config (no {', '.join(missing)})")
    return cfg


def has_trained(run: Path) -> bool:
    """Whether ``run`` holds anything that training produced (a checkpoint or a model)."""
    return (
        (run / "model.pt").exists()
        or (run / "train_log.json").exists()
        or any((run / "checkpoints").glob("*.ckpt"))
    )
