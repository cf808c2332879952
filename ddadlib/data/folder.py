"""Folder datasets: a user's own images, labelled by a CSV file or by class subfolders."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ddadlib.data.imaging import IMAGE_EXTENSIONS
from ddadlib.data.records import ImageRecord
from ddadlib.errors import DataError

#: Subfolder names (compared in lower case, with spaces and dashes as underscores) read as normal.
NORMAL_FOLDER_NAMES = ("normal", "0", "no_finding")
#: Subfolder names read as abnormal (compared likewise): the findings of the common public chest
#: X-ray sets (Kermany, ChestX-ray14, VinBigData, the COVID-19 radiography set, Shenzhen TB).
#: Any other name is refused until ``normal_names`` or ``abnormal_names`` says what it holds.
FINDING_FOLDER_NAMES = (
    "1",
    "abnormal",
    "anomaly",
    "disease",
    "pneumonia",
    "bacteria",
    "bacterial",
    "virus",
    "viral",
    "viral_pneumonia",
    "bacterial_pneumonia",
    "covid",
    "covid19",
    "covid_19",
    "tuberculosis",
    "tb",
    "opacity",
    "lung_opacity",
    "atelectasis",
    "cardiomegaly",
    "effusion",
    "pleural_effusion",
    "infiltration",
    "infiltrate",
    "mass",
    "nodule",
    "nodule_mass",
    "pneumothorax",
    "consolidation",
    "edema",
    "emphysema",
    "fibrosis",
    "pulmonary_fibrosis",
    "pleural_thickening",
    "hernia",
    "aortic_enlargement",
    "calcification",
    "ild",
    "other_lesion",
    "lesion",
    "fracture",
)


def _normalise(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def folder_records(
    root: str | Path,
    labels: str | Path | None = None,
    patient_regex: str | None = None,
    normal_names: Sequence[str] = (),
    abnormal_names: Sequence[str] = (),
) -> tuple[list[ImageRecord], str]:
    """The images of a folder dataset and a sentence saying how their labels were found.

    A labels file wins when present (``labels`` or ``ROOT/labels.csv``): columns ``filename``
    (a path relative to ``root``, inside it) and ``label`` (0 normal, 1 abnormal), optional
    ``patient_id`` and ``finding``. Otherwise each subfolder of ``root`` is a class:
    :data:`NORMAL_FOLDER_NAMES` and ``normal_names`` are normal, :data:`FINDING_FOLDER_NAMES`
    and ``abnormal_names`` abnormal; any other subfolder is an error that names it.

    ``patient_regex`` derives each image's patient id from its path relative to ``root`` (see
    :func:`patient_ids_from_names`); a file it does not match is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    labels_path = Path(labels) if labels is not None else root / "labels.csv"
    if labels is not None and not labels_path.is_file():
        raise DataError(f"{labels_path}: labels file not found")
    if labels_path.is_file():
        if normal_names or abnormal_names:
            raise DataError(
                f"{labels_path}: --normal-names / --abnormal-names name class "
                "subfolders, but the labels come from this file; leave them out"
            )
        records = _records_from_csv(root, labels_path)
        how = f"labels from {labels_path}"
        if patient_regex is not None and any(r.patient_id for r in records):
            raise DataError(
                f"{labels_path}: has patient ids already; --patient-regex is for "
                "folders without them (leave one of the two out)"
            )
    else:
        records, how = _records_from_subfolders(root, normal_names, abnormal_names)
    if patient_regex is not None:
        patients = patient_ids_from_names([r.id for r in records], patient_regex, str(root))
        records = [dataclasses.replace(r, patient_id=p) for r, p in zip(records, patients)]
        how += f"; patient ids from --patient-regex '{patient_regex}'"
    return records, how


def patient_ids_from_names(ids: Sequence[str], pattern: str, where: str) -> list[str]:
    """The patient id in each image path (relative to the root, ``/`` between folders).

    ``pattern`` is searched in the path (:func:`re.search`); the patient id is its named group
    ``patient`` when it has one, else its first group, else the whole match. A path that it does
    not match, or where that group is empty, is an error naming the file.
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise DataError(
            f"--patient-regex {pattern!r} is not a valid regular expression ({exc})"
        ) from None
    group: str | int = "patient" if "patient" in rx.groupindex else (1 if rx.groups else 0)
    out, bad = [], []
    for id_ in ids:
        m = rx.search(id_)
        value = m.group(group) if m else None
        if not value:
            bad.append(id_)
        out.append(value or "")
    if bad:
        raise DataError(
            f"{where}: --patient-regex {pattern!r} finds no patient id in "
            f"{len(bad):,} of {len(ids):,} file names (e.g. {', '.join(bad[:3])}); "
            "every file needs one (the regex is searched in the path below the root)"
        )
    return out


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
        raise DataError(
            f"{csv}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(table.columns) or 'none'})"
        )
    if table.empty:
        raise DataError(f"{csv}: the labels file has no rows")
    bad = table[~table["label"].str.strip().isin(["0", "1"])]
    if len(bad):
        row = bad.index[0] + 2  # 1-based, after the header line
        raise DataError(
            f"{csv}: line {row}: label {bad['label'].iloc[0]!r} for "
            f"{bad['filename'].iloc[0]!r} is not 0 (normal) or 1 (abnormal)"
            + (f"; {len(bad)} such rows in all" if len(bad) > 1 else "")
        )
    dup = table["filename"][table["filename"].duplicated()]
    if len(dup):
        raise DataError(f"{csv}: {dup.iloc[0]!r} is listed more than once")
    records, absent = [], []
    for line, row in enumerate(table.itertuples(index=False), start=2):
        name = Path(row.filename)
        # Only files below the root: an entry must not make us read anything else.
        if name.is_absolute() or ".." in name.parts:
            raise DataError(
                f"{csv}: line {line}: filename {row.filename!r} points outside "
                f"{root} (an absolute path or '..'); list paths relative to the root "
                "folder, inside it"
            )
        path = root / name
        if not path.is_file():
            absent.append(row.filename)
            continue
        id_ = name.as_posix()
        records.append(
            ImageRecord(
                id=id_,
                path=path,
                label=int(row.label),
                patient_id=(getattr(row, "patient_id", "") or None),
                finding=getattr(row, "finding", "") or "",
            )
        )
    if absent:
        raise DataError(
            f"{csv}: {len(absent):,} listed image file(s) not found under {root} "
            f"(e.g. {', '.join(absent[:3])})"
        )
    return sorted(records, key=lambda r: r.id)


def _records_from_subfolders(
    root: Path, normal_names: Sequence[str] = (), abnormal_names: Sequence[str] = ()
) -> tuple[list[ImageRecord], str]:
    normal = {_normalise(n) for n in normal_names}
    abnormal = {_normalise(n) for n in abnormal_names}
    both = normal & abnormal
    if both:
        raise DataError(f"{root}: {', '.join(sorted(both))} given as both normal and abnormal")
    classes, unknown, undecodable = [], [], []
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for sub in subs:
        files = sorted(
            p
            for p in sub.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            continue
        for f in files:
            try:
                f.relative_to(root).as_posix().encode("utf-8")
            except UnicodeEncodeError:
                undecodable.append(f.relative_to(root).as_posix())
        key = _normalise(sub.name)
        if key in normal or (key in NORMAL_FOLDER_NAMES and key not in abnormal):
            classes.append((sub, 0, files))
        elif key in abnormal or key in FINDING_FOLDER_NAMES:
            classes.append((sub, 1, files))
        else:
            unknown.append(sub.name)
    if undecodable:
        shown = ", ".join(
            n.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            for n in undecodable[:3]
        )
        raise DataError(
            f"{root}: {len(undecodable):,} file name(s) are not valid UTF-8 (e.g. "
            f"{shown}); rename them (manifest.csv and split.json store names as "
            "UTF-8)"
        )
    if unknown:
        names = ", ".join(f"{n}/" for n in unknown)
        raise DataError(
            f"{root}: subfolder(s) {names} are neither a normal name "
            f"({', '.join(NORMAL_FOLDER_NAMES)}) nor a known finding; say what they hold with "
            f"--normal-names {','.join(unknown)} or --abnormal-names {','.join(unknown)}"
        )
    missing = sorted((normal | abnormal) - {_normalise(s.name) for s, _, _ in classes})
    if missing:
        raise DataError(
            f"{root}: no subfolder with images is named {', '.join(missing)} "
            "(given in --normal-names / --abnormal-names)"
        )
    records, mapping = [], []
    for sub, label, files in classes:
        mapping.append(
            f"{sub.name}/ -> {label} ({'normal' if label == 0 else 'abnormal'}, "
            f"{len(files):,} images)"
        )
        records += [
            ImageRecord(id=f.relative_to(root).as_posix(), path=f, label=label, finding=sub.name)
            for f in files
        ]
    if not records:
        raise DataError(
            f"{root}: no labels.csv and no class subfolders with images "
            f"({', '.join(IMAGE_EXTENSIONS)})"
        )
    return records, "class subfolders: " + "; ".join(mapping)


def image_files(folder: Path) -> tuple[list[Path], int]:
    """The image files under ``folder`` (sorted), without following symbolic links out of it;
    also how many links were left out (``ddad score`` reads them)."""
    root = folder.resolve()
    files, skipped = [], 0
    for dirpath, dirnames, filenames in os.walk(folder):  # does not descend into linked folders
        skipped += sum(1 for d in dirnames if (Path(dirpath) / d).is_symlink())
        for name in filenames:
            p = Path(dirpath) / name
            if p.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if p.is_symlink() and not p.resolve().is_relative_to(root):
                skipped += 1
                continue
            if p.is_file():
                files.append(p)
    return sorted(files), skipped
