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

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.splits import draw_unlabeled, split_sizes
from ddadlib.detectors import HYPERPARAMETERS, detector_for, make_detector
from ddadlib.devices import pick_device, pick_precision
from ddadlib.errors import DataError
from ddadlib.models.backbones import LATENT
from ddadlib.paper import (
    BACKBONE_TITLES,
    PAPER_BATCH_SIZE,
    PAPER_EPOCHS,
    PAPER_K,
    PAPER_LR,
    PAPER_UNLABELED,
    TABLE_AR,
)
from ddadlib.presets import table_unlabeled
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
    "betas",
    "seed",
    "latent",
    "device",
    "precision",
)
#: Settings added after runs were first written: a config without one took its default, and a
#: config at the default leaves it out, so that runs made before keep their ``config.json``.
LATER_KEYS = {"latent": LATENT}


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
    *(k for k in HYPERPARAMETERS if k not in LATER_KEYS),
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


def config_changes(old: RunConfig, new: RunConfig, ds: PreparedDataset) -> list[str]:
    """:meth:`RunConfig.differences` of ``new`` from ``old``, the run recorded on ``ds``, where
    an older form of the same dataset's fingerprint is no difference."""
    if old.data_fingerprint != new.data_fingerprint:
        new = new.replace(data_fingerprint=recorded_fingerprint(ds, old.data_fingerprint))
    return old.differences(new)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Every setting of a run: what ``config.json`` holds (:meth:`to_dict` / :meth:`from_dict`).

    ``betas`` (and ``lr``, ``batch_size``) are the optimiser's settings as the detector trains
    them (:meth:`ddadlib.detectors.DDAD.optimiser_settings`). ``du_ids``: the drawn Du (empty for
    a detector that does not use it). ``provenance``, ``created`` and ``data_path`` do not define
    the run (:data:`VOLATILE`): a run may be resumed or reused where they differ."""

    format: int = RUN_FORMAT
    data_path: str
    data_fingerprint: str
    size: int
    dn_size: int | None = None
    test_size: tuple[int, int] | None = None
    backbone: str
    k: int
    epochs: int
    batch_size: int
    lr: float
    betas: tuple[float, float] = (0.5, 0.999)  # what every run before this field was written used
    seed: int
    latent: int = LATENT
    device: str
    precision: str
    ar: float | None = None
    n_unlabeled: int | None = None
    du_ids: tuple[str, ...] = ()
    provenance: dict = field(default_factory=dict, compare=False)
    created: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (lists for tuples), in ``config.json``'s order; a setting of
        :data:`LATER_KEYS` at its default is left out."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if LATER_KEYS.get(f.name, out) != v:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "config") -> RunConfig:
        """A config from its JSON form, also as older ddadlib versions wrote it (keys they did
        not write take the value those runs used); a :class:`DataError` naming ``source``
        when a key that every run config holds is missing or malformed."""
        missing = [k for k in CONFIG_KEYS if k not in d] if isinstance(d, dict) else CONFIG_KEYS
        if missing:
            raise DataError(
                f"{source}: damaged or not a ddadlib run config (no {', '.join(missing)})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        for key in ("test_size", "betas", "du_ids"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        if not isinstance(values.get("du_ids"), tuple) or not isinstance(
            values.get("provenance", {}), dict
        ):
            raise DataError(f"{source}: damaged run config (du_ids or provenance malformed)")
        return cls(**values)

    @classmethod
    def read(cls, run: str | Path) -> RunConfig:
        """A run folder's ``config.json`` (a :class:`DataError` naming the folder when absent
        or damaged)."""
        path = Path(run) / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{run}: not a ddadlib run folder (no config.json)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: damaged ({exc})") from None
        return cls.from_dict(d, path)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def defining(self) -> dict[str, Any]:
        """The settings that define the run (all but :data:`VOLATILE`), in JSON form."""
        return {k: v for k, v in self.to_dict().items() if k not in VOLATILE}

    def differences(self, other: RunConfig) -> list[str]:
        """The defining settings in which ``other`` differs from this config, as
        ``key: this -> other``."""
        a, b = self.defining(), other.defining()
        out = []
        for key in dict.fromkeys([*a, *b]):
            va, vb = a.get(key, LATER_KEYS.get(key)), b.get(key, LATER_KEYS.get(key))
            if va != vb:
                if isinstance(va, list) and len(va) > 8:
                    va, vb = f"<{len(va)} ids>", f"<{len(vb or [])} ids>"
                out.append(f"{key}: {va} -> {vb}")
        return out

    def module_b(self) -> dict[str, Any]:
        """The settings that define module B (:data:`MODULE_B_KEYS`; it does not depend on Du)."""
        d = self.to_dict()
        return {k: d.get(k, LATER_KEYS.get(k)) for k in MODULE_B_KEYS}


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
    latent: int = LATENT,
    device: str | None = "auto",
    precision: str | None = "auto",
    log: Log = print,
) -> RunConfig:
    """The full config of a run on a prepared dataset, with Du drawn; fails at once (a
    :class:`DataError`) when the pools cannot supply M images at ``ar``."""
    kind = detector_for(backbone)
    k = k if kind.ensemble else 1
    model = make_detector(
        backbone, k=k, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, latent=latent
    )
    ds = PreparedDataset.load(data, mmap=True)
    sizes = split_sizes(ds.split)
    dev = pick_device(device)
    if kind.uses_unlabeled:
        if n_unlabeled is None:
            n_unlabeled = table_unlabeled(ds.split, ar)
            log(
                f"M = {n_unlabeled:,} unlabeled images at AR {ar} "
                f"({'the paper' if n_unlabeled == PAPER_UNLABELED else 'the most the pools allow'}"
                f"; --n-unlabeled to change)"
            )
        du_ids = tuple(draw_unlabeled(ds.split, n_unlabeled, ar, seed))
    else:
        ar, n_unlabeled, du_ids = None, 0, ()
        log(
            f"{BACKBONE_TITLES.get(backbone, backbone)} trains on Dn only: no unlabeled images are drawn"
        )
    optimiser = model.optimiser_settings()
    return RunConfig(
        data_path=str(Path(data).resolve()),
        data_fingerprint=dataset_fingerprint(ds),
        size=ds.size,
        dn_size=sizes["normal"],
        test_size=(sizes["test_normal"], sizes["test_abnormal"]),
        backbone=backbone,
        k=k,
        epochs=epochs,
        batch_size=optimiser["batch_size"],
        lr=optimiser["lr"],
        betas=tuple(optimiser["betas"]),
        seed=seed,
        latent=latent,
        device=dev.type,
        precision=pick_precision(precision, dev),
        ar=ar,
        n_unlabeled=n_unlabeled,
        du_ids=du_ids,
        provenance=provenance(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
