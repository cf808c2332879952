"""Folder datasets: a user's own images, labelled by a CSV file or by class subfolders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ddadlib.errors import DataError
from ddadlib.imaging import IMAGE_EXTENSIONS
from ddadlib.records import ImageRecord

#: Subfolder names (compared in lower case, with spaces and dashes as underscores) read as normal.
NORMAL_FOLDER_NAMES = ("normal", "0", "no_finding")


def _is_normal_name(name: str) -> bool:
    return name.lower().replace(" ", "_").replace("-", "_") in NORMAL_FOLDER_NAMES


def folder_records(
    root: str | Path, labels: str | Path | None = None
) -> tuple[list[ImageRecord], str]:
    """The images of a folder dataset and a sentence saying how their labels were found.

    A labels file wins when present (``labels`` or ``ROOT/labels.csv``): columns ``filename``
    (relative to ``root``) and ``label`` (0 normal, 1 abnormal), optional ``patient_id`` and
    ``finding``. Otherwise each subfolder of ``root`` is a class: ``normal``, ``0`` and
    ``no_finding`` (any case) are normal, every other subfolder is abnormal.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    labels_path = Path(labels) if labels is not None else root / "labels.csv"
    if labels is not None and not labels_path.is_file():
        raise DataError(f"{labels_path}: labels file not found")
    if labels_path.is_file():
        return _records_from_csv(root, labels_path), f"labels from {labels_path}"
    return _records_from_subfolders(root)


def _records_from_csv(root: Path, csv: Path) -> list[ImageRecord]:
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv}: the labels file is empty") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv}: cannot read the labels file ({exc})") from None
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in ("filename", "label") if c not in table.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {', '.join(missing)} "
                        f"(found: {', '.join(table.columns) or 'none'})")
    if table.empty:
        raise DataError(f"{csv}: the labels file has no rows")
    bad = table[~table["label"].str.strip().isin(["0", "1"])]
    if len(bad):
        row = bad.index[0] + 2  # 1-based, after the header line
        raise DataError(f"{csv}: line {row}: label {bad['label'].iloc[0]!r} for "
                        f"{bad['filename'].iloc[0]!r} is not 0 (normal) or 1 (abnormal)"
                        + (f"; {len(bad)} such rows in all" if len(bad) > 1 else ""))
    dup = table["filename"][table["filename"].duplicated()]
    if len(dup):
        raise DataError(f"{csv}: {dup.iloc[0]!r} is listed more than once")
    records, absent = [], []
    for row in table.itertuples(index=False):
        path = Path(row.filename)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            absent.append(row.filename)
            continue
        try:
            id_ = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            id_ = str(row.filename)
        records.append(ImageRecord(
            id=id_, path=path, label=int(row.label),
            patient_id=(getattr(row, "patient_id", "") or None),
            finding=getattr(row, "finding", "") or "",
        ))
    if absent:
        raise DataError(f"{csv}: {len(absent):,} listed image file(s) not found under {root} "
                        f"(e.g. {', '.join(absent[:3])})")
    return sorted(records, key=lambda r: r.id)


def _records_from_subfolders(root: Path) -> tuple[list[ImageRecord], str]:
    records = []
    mapping = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            continue
        label = 0 if _is_normal_name(sub.name) else 1
        mapping.append(f"{sub.name}/ -> {label} ({'normal' if label == 0 else 'abnormal'}, "
                       f"{len(files):,} images)")
        records += [ImageRecord(id=f.relative_to(root).as_posix(), path=f, label=label,
                                finding=sub.name) for f in files]
    if not records:
        raise DataError(f"{root}: no labels.csv and no class subfolders with images "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    return records, "class subfolders: " + "; ".join(mapping)
