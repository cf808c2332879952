"""Prepared datasets: the one on-disk format that every later command reads.

A prepared dataset is a folder holding

- ``images.npy``: uint8 array (N, S, S), every image already grayscale and resized;
- ``manifest.csv``: one row per image, in the order of ``images.npy``, with columns
  ``id,label,patient_id,finding,md5,orig_height,orig_width,boxes`` (boxes as JSON, in the
  coordinates of the resized image), and any source-specific columns after them (the synthetic
  set adds ``severity``);
- ``masks.npy`` (optional): bool array (N, S, S) of pixel masks, for the synthetic set;
- ``split.json``: Dn, the unlabeled pools and Dt (see :mod:`ddadlib.data.splits`);
- ``dataset.json``: how it was made (source, size, seed, options, library versions, git
  commit); written
  last, so its presence marks a finished dataset;
- ``skipped.csv`` (optional): files that could not be decoded, with the reason.

A dataset is written into ``.incoming/`` inside the folder and swapped in only when complete, so
a write that fails midway (full disk, kill, Ctrl-C) leaves the dataset that was there before.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ddadlib.data.records import Box
from ddadlib.data.splits import format_sizes, group_images, group_names, part_lists, validate_split
from ddadlib.errors import DataError, DiskFullError
from ddadlib.fileio import atomic_save_npy, atomic_write_bytes, atomic_write_json

MANIFEST_COLUMNS = [
    "id",
    "label",
    "patient_id",
    "finding",
    "md5",
    "orig_height",
    "orig_width",
    "boxes",
]
DATASET_FILES = (
    "images.npy",
    "masks.npy",
    "manifest.csv",
    "split.json",
    "dataset.json",
    "skipped.csv",
)
FORMAT_VERSION = 1
#: The folder inside a dataset where a new version is written before it is swapped in.
STAGING = ".incoming"


def boxes_to_json(boxes: Iterable[Box]) -> str:
    """Boxes as a compact JSON list of [x, y, w, h, label]."""
    return json.dumps(
        [[round(b.x, 2), round(b.y, 2), round(b.w, 2), round(b.h, 2), b.label] for b in boxes],
        separators=(",", ":"),
    )


def boxes_from_json(text: str) -> list[Box]:
    """The inverse of :func:`boxes_to_json` (empty text gives no boxes)."""
    if not isinstance(text, str) or not text:
        return []
    return [
        Box(float(x), float(y), float(w), float(h), str(label))
        for x, y, w, h, label in json.loads(text)
    ]


def is_prepared(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished prepared dataset."""
    return (Path(folder) / "dataset.json").is_file()


def write_dataset(
    out: str | Path,
    images: np.ndarray,
    manifest: pd.DataFrame,
    split: dict,
    info: dict,
    masks: np.ndarray | None = None,
    skipped: pd.DataFrame | None = None,
) -> Path:
    """Write a prepared dataset into ``out`` (which the caller has checked may be written).

    The files go to ``out/.incoming/`` first; only when all of them are written do they replace
    the dataset in ``out`` (see :func:`settle_dataset`), so a failure midway keeps the old one.
    """
    out = Path(out)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be uint8 (N, S, S), got {images.dtype} {images.shape}")
    if len(manifest) != len(images):
        raise ValueError("manifest and images differ in length")
    extra = [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    manifest = manifest.reindex(columns=MANIFEST_COLUMNS + extra)
    settle_dataset(out)
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        atomic_save_npy(staging / "images.npy", images)
        if masks is not None:
            atomic_save_npy(staging / "masks.npy", masks.astype(bool))
        atomic_write_bytes(staging / "manifest.csv", manifest.to_csv(index=False).encode())
        if skipped is not None and len(skipped):
            atomic_write_bytes(staging / "skipped.csv", skipped.to_csv(index=False).encode())
        atomic_write_json(staging / "split.json", split)
        info = {
            "format": FORMAT_VERSION,
            **info,
            "n_images": len(images),
            "size": int(images.shape[1]),
        }
        atomic_write_json(staging / "dataset.json", info)
        names = [name for name in DATASET_FILES if (staging / name).is_file()]
        atomic_write_json(staging / ".complete", names)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, DiskFullError):  # name the dataset's folder, not the staging one
            raise DiskFullError(out / Path(exc.filename).name, exc.needed, exc.written) from None
        raise
    settle_dataset(out)
    return out


def settle_dataset(out: str | Path) -> None:
    """Finish what a :func:`write_dataset` into ``out`` left: swap in a complete new version
    from ``out/.incoming/`` (also after a kill during the swap), or drop an incomplete one.

    The swap removes the old ``dataset.json`` first and moves the new one in last, so at no
    moment does ``out`` look like a finished dataset with files of two versions.
    """
    out = Path(out)
    staging = out / STAGING
    if not staging.is_dir():
        return
    try:
        names = json.loads((staging / ".complete").read_text())
    except (OSError, ValueError):
        shutil.rmtree(staging, ignore_errors=True)  # never finished: the old dataset stands
        return
    if (staging / "dataset.json").is_file():  # else the swap had finished already
        (out / "dataset.json").unlink(missing_ok=True)
        for name in DATASET_FILES:
            if name == "dataset.json":
                continue
            if name not in names:
                (out / name).unlink(missing_ok=True)
            elif (staging / name).is_file():
                os.replace(staging / name, out / name)
        os.replace(staging / "dataset.json", out / "dataset.json")
    shutil.rmtree(staging, ignore_errors=True)


@dataclass
class PreparedDataset:
    """A prepared dataset in memory (see the module docstring for the files).

    ``images`` is (N, S, S) uint8; ``labels`` (N,) int; ``ids`` the manifest ids; ``masks`` is
    None unless the source has pixel masks.
    """

    root: Path
    images: np.ndarray
    manifest: pd.DataFrame
    split: dict
    info: dict
    masks: np.ndarray | None = None

    @classmethod
    def load(cls, root: str | Path, mmap: bool = False) -> PreparedDataset:
        """Load a prepared dataset folder; a clear :class:`DataError` if it is not one."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: no such folder (prepare one with `ddad prepare`)")
        if not is_prepared(root):
            raise DataError(
                f"{root}: not a prepared dataset (no dataset.json); "
                "run `ddad prepare` first, or finish an interrupted run"
            )
        mode = "r" if mmap else None
        try:
            info = json.loads((root / "dataset.json").read_text())
            images = np.load(root / "images.npy", mmap_mode=mode)
            manifest = pd.read_csv(
                root / "manifest.csv",
                dtype={"id": str, "patient_id": str, "finding": str, "md5": str, "boxes": str},
                keep_default_na=False,
            )
            split = json.loads((root / "split.json").read_text())
            masks = (
                np.load(root / "masks.npy", mmap_mode=mode)
                if (root / "masks.npy").is_file()
                else None
            )
        except FileNotFoundError as exc:
            raise DataError(
                f"{root}: incomplete dataset, {Path(exc.filename).name} is missing"
            ) from None
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise DataError(f"{root}: cannot read the dataset ({exc})") from None
        _check_arrays(root, images, manifest, info, masks)
        _check_split(root, manifest, split)
        return cls(root, images, manifest, split, info, masks)

    @property
    def ids(self) -> list[str]:
        return self.manifest["id"].tolist()

    @property
    def labels(self) -> np.ndarray:
        return self.manifest["label"].to_numpy(dtype=np.int64)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def indices(self, ids: Iterable[str]) -> np.ndarray:
        """Row indices of the given ids (a :class:`DataError` for an unknown id)."""
        pos = {id_: i for i, id_ in enumerate(self.manifest["id"])}
        try:
            return np.array([pos[i] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise DataError(f"{self.root}: image {exc.args[0]!r} is not in manifest.csv") from None

    def part(self, name: str) -> np.ndarray:
        """Row indices of a split part: one of :data:`ddadlib.data.splits.PARTS`."""

        parts = part_lists(self.split)
        if name not in parts:
            raise KeyError(f"unknown part {name!r}; one of {sorted(parts)}")
        return self.indices(parts[name])

    def boxes(self, index: int) -> list[Box]:
        """The boxes of image ``index`` in the resized image's pixel coordinates."""
        return boxes_from_json(self.manifest["boxes"].iloc[index])

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (
            f"PreparedDataset({str(self.root)!r}, {len(self):,} images of "
            f"{self.size}x{self.size}, source={self.info.get('source')!r}; "
            f"{format_sizes(self.split)})"
        )


def _check_arrays(
    root: Path, images: np.ndarray, manifest: pd.DataFrame, info: dict, masks: np.ndarray | None
) -> None:
    """images.npy (and masks.npy) must be what write_dataset writes, one image per manifest row."""
    size = info.get("size")
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise DataError(
            f"{root / 'images.npy'}: expected a uint8 array of N x S x S images, "
            f"found {images.dtype} of shape {images.shape}"
        )
    if len(images) != len(manifest):
        raise DataError(
            f"{root / 'images.npy'}: holds {len(images):,} images but manifest.csv "
            f"has {len(manifest):,} rows"
        )
    if size is not None and images.shape[1] != size:
        raise DataError(
            f"{root / 'images.npy'}: images are {images.shape[1]}x{images.shape[2]} "
            f"but dataset.json says {size}x{size}"
        )
    if masks is not None and (masks.dtype != np.bool_ or masks.shape != images.shape):
        raise DataError(
            f"{root / 'masks.npy'}: expected a bool array of shape {images.shape}, "
            f"found {masks.dtype} of shape {masks.shape}"
        )


def _check_split(root: Path, manifest: pd.DataFrame, split: dict) -> None:
    """split.json must fit manifest.csv: known ids, disjoint parts, labels that match their part
    and no patient or identical image on both sides of train and test."""

    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DataError(f"{root / 'manifest.csv'}: lacks the columns {', '.join(missing)}")
    try:
        part_lists(split)
    except DataError as exc:
        raise DataError(f"{root / 'split.json'}: {exc}") from None
    labels = pd.to_numeric(manifest["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        row = int(np.flatnonzero(~labels.isin([0, 1]).to_numpy())[0])
        raise DataError(
            f"{root / 'manifest.csv'}: row {row + 2} has label "
            f"{manifest['label'].iloc[row]!r}, not 0 or 1"
        )
    ids = manifest["id"]
    if ids.duplicated().any():
        raise DataError(
            f"{root / 'manifest.csv'}: image id {ids[ids.duplicated()].iloc[0]!r} appears twice"
        )
    patients, md5s = manifest["patient_id"].tolist(), manifest["md5"].tolist()
    groups = group_images(patients, md5s)
    validate_split(
        split,
        ids.tolist(),
        labels.to_numpy(dtype=np.int64),
        groups,
        where=str(root / "split.json"),
        names=group_names(patients, md5s, groups),
    )
