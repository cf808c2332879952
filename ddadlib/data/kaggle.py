"""Read an unpacked Kaggle download of RSNA Pneumonia or VinBigData into image records.

The readers only read the CSV files and check that the images they list exist; no image is
decoded. Each returns a ``list[ImageRecord]`` sorted by ``id``, where ``id`` is the image's path
relative to the download folder with forward slashes.

RSNA Pneumonia Detection Challenge (``rsna-pneumonia-detection-challenge``)
    * ``ROOT/stage_2_detailed_class_info.csv``: columns ``patientId,class``;
    * ``ROOT/stage_2_train_labels.csv``: columns ``patientId,x,y,width,height,Target``; rows with
      ``Target`` 1 carry a box (top-left ``x, y`` and ``width, height`` in pixels of the
      1024 x 1024 image), rows with ``Target`` 0 have empty coordinates;
    * images ``ROOT/stage_2_train_images/<patientId>.dcm``, one per patient.

    A patient with several boxes has several rows in *both* CSV files (the class file repeats
    its row), so rows are grouped by ``patientId``: one record per patient, with all its boxes
    (``Box(x, y, width, height, "Lung Opacity")``). Class ``Normal`` is label 0 and
    ``Lung Opacity`` label 1; ``No Lung Opacity / Not Normal`` (abnormal, but not pneumonia) is
    left out, as in the DDAD protocol. Of the 26,684 training images, 8,851 are Normal and
    6,012 Lung Opacity (and 11,821 are left out). ``patient_id`` is the ``patientId`` and
    ``finding`` the class name.

VinBigData Chest X-ray Abnormalities Detection (``vinbigdata-chest-xray-abnormalities-detection``)
    * ``ROOT/train.csv``: columns ``image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max``,
      one row per radiologist and box (three radiologists read each image); ``No finding`` rows
      have ``class_id`` 14 and empty coordinates;
    * images ``ROOT/train/<image_id>.dicom``.

    An image whose rows all have ``class_id`` 14 is normal (label 0); any other image is
    abnormal (label 1). Every row with ``class_id`` other than 14 gives a box
    ``Box(x_min, y_min, x_max - x_min, y_max - y_min, class_name)`` (each radiologist's box is
    kept, so boxes of different readers overlap). ``finding`` is the sorted unique class names of
    the image's findings joined by ``";"`` (``"No finding"`` for a normal image; a dissenting
    ``No finding`` row on an abnormal image is not listed). There are no patient ids in the
    download, so ``patient_id`` is ``None``. Of the 15,000 training images, 10,606 are normal
    and 4,394 abnormal.

Problems with the download (folder or CSV missing, a column missing, an unknown label, a CSV
without rows, conflicting rows, images listed but missing on disk) raise
:class:`~ddadlib.errors.DataError` naming the file and the problem.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pandas as pd

from ddadlib.data.records import Box, ImageRecord
from ddadlib.errors import DataError

__all__ = [
    "rsna_records",
    "vinbigdata_records",
    "RSNA_CLASSES",
    "VINBIGDATA_CLASSES",
    "VINBIGDATA_NO_FINDING_ID",
]

RSNA_NAME = "rsna-pneumonia-detection-challenge"
RSNA_CLASS_CSV = "stage_2_detailed_class_info.csv"
RSNA_LABELS_CSV = "stage_2_train_labels.csv"
RSNA_IMAGE_DIR = "stage_2_train_images"
#: RSNA class name -> label (``None``: left out).
RSNA_CLASSES: dict[str, int | None] = {
    "Normal": 0,
    "Lung Opacity": 1,
    "No Lung Opacity / Not Normal": None,
}
RSNA_BOX_LABEL = "Lung Opacity"

VINBIGDATA_NAME = "vinbigdata-chest-xray-abnormalities-detection"
VINBIGDATA_CSV = "train.csv"
VINBIGDATA_IMAGE_DIR = "train"
VINBIGDATA_NO_FINDING_ID = 14
#: VinBigData class id -> class name, as in ``train.csv``.
VINBIGDATA_CLASSES: dict[int, str] = {
    0: "Aortic enlargement",
    1: "Atelectasis",
    2: "Calcification",
    3: "Cardiomegaly",
    4: "Consolidation",
    5: "ILD",
    6: "Infiltration",
    7: "Lung Opacity",
    8: "Nodule/Mass",
    9: "Other lesion",
    10: "Pleural effusion",
    11: "Pleural thickening",
    12: "Pneumothorax",
    13: "Pulmonary fibrosis",
    14: "No finding",
}

_MAX_NAMED = 5  # how many offending items an error message names


# --------------------------------------------------------------------------------------------
# RSNA


def rsna_records(root: Path) -> list[ImageRecord]:
    """Records of the RSNA Pneumonia training images labelled Normal (0) or Lung Opacity (1)."""
    root = _check_root(root, RSNA_NAME)
    class_csv = root / RSNA_CLASS_CSV
    labels_csv = root / RSNA_LABELS_CSV
    classes = _read_csv(class_csv, ["patientId", "class"], RSNA_NAME)
    labels = _read_csv(labels_csv, ["patientId", "x", "y", "width", "height", "Target"], RSNA_NAME)

    # One class per patient (the class file repeats a patient's row once per box).
    patient_class: dict[str, str] = OrderedDict()
    for line, pid, cls in zip(_lines(classes), classes["patientId"], classes["class"]):
        if not pid:
            raise DataError(f"{class_csv}: line {line}: empty patientId")
        if cls not in RSNA_CLASSES:
            raise DataError(
                f"{class_csv}: line {line}: unknown class {cls!r} for patient {pid} "
                f"(known: {', '.join(repr(c) for c in RSNA_CLASSES)})"
            )
        old = patient_class.setdefault(pid, cls)
        if old != cls:
            raise DataError(
                f"{class_csv}: patient {pid} has conflicting classes {old!r} and {cls!r}"
            )

    # Boxes per patient from the Target 1 rows.
    targets = _numbers(labels, "Target", labels_csv)
    bad = [(ln, t) for ln, t in zip(_lines(labels), targets) if t not in (0.0, 1.0)]
    if bad:
        raise DataError(
            f"{labels_csv}: line {bad[0][0]}: unknown Target value "
            f"{labels['Target'].iloc[bad[0][0] - 2]!r} (expected 0 or 1)"
            + (f"; {len(bad)} such rows" if len(bad) > 1 else "")
        )
    coords = {c: _numbers(labels, c, labels_csv) for c in ("x", "y", "width", "height")}
    patient_boxes: dict[str, list[Box]] = OrderedDict()
    for i, (line, pid) in enumerate(zip(_lines(labels), labels["patientId"])):
        if not pid:
            raise DataError(f"{labels_csv}: line {line}: empty patientId")
        boxes = patient_boxes.setdefault(pid, [])
        if targets[i] != 1.0:
            continue
        x, y, w, h = (coords[c][i] for c in ("x", "y", "width", "height"))
        if any(pd.isna(v) for v in (x, y, w, h)):
            raise DataError(
                f"{labels_csv}: line {line}: patient {pid} has Target 1 but no box "
                "(x, y, width and height must all be numbers)"
            )
        if w < 0 or h < 0:
            raise DataError(
                f"{labels_csv}: line {line}: patient {pid} has a box with negative size "
                f"(width {w}, height {h})"
            )
        boxes.append(Box(float(x), float(y), float(w), float(h), RSNA_BOX_LABEL))

    # The two files must describe the same patients, consistently.
    only_classes = [p for p in patient_class if p not in patient_boxes]
    only_labels = [p for p in patient_boxes if p not in patient_class]
    if only_classes or only_labels:
        parts = []
        if only_classes:
            parts.append(
                f"{len(only_classes)} patient(s) in {RSNA_CLASS_CSV} but not in "
                f"{RSNA_LABELS_CSV} (e.g. {_some(only_classes)})"
            )
        if only_labels:
            parts.append(
                f"{len(only_labels)} patient(s) in {RSNA_LABELS_CSV} but not in "
                f"{RSNA_CLASS_CSV} (e.g. {_some(only_labels)})"
            )
        raise DataError(f"{root}: the two RSNA CSV files do not match: " + "; ".join(parts))

    records: list[ImageRecord] = []
    for pid, cls in patient_class.items():
        label = RSNA_CLASSES[cls]
        if label is None:
            continue
        boxes = patient_boxes[pid]
        if label == 1 and not boxes:
            raise DataError(
                f"{labels_csv}: patient {pid} is 'Lung Opacity' in {RSNA_CLASS_CSV} "
                "but has no Target 1 row with a box"
            )
        if label == 0 and boxes:
            raise DataError(
                f"{labels_csv}: patient {pid} is 'Normal' in {RSNA_CLASS_CSV} "
                f"but has {len(boxes)} Target 1 row(s) with a box"
            )
        rel = f"{RSNA_IMAGE_DIR}/{pid}.dcm"
        records.append(
            ImageRecord(
                id=rel,
                path=root / RSNA_IMAGE_DIR / f"{pid}.dcm",
                label=label,
                patient_id=pid,
                finding=cls,
                boxes=tuple(boxes),
            )
        )
    if not records:
        raise DataError(f"{class_csv}: no patient with class 'Normal' or 'Lung Opacity'")
    _check_images(records, class_csv)
    records.sort(key=lambda r: r.id)
    return records


# --------------------------------------------------------------------------------------------
# VinBigData


def vinbigdata_records(root: Path) -> list[ImageRecord]:
    """Records of the VinBigData training images: normal (0) or abnormal (1), with all boxes."""
    root = _check_root(root, VINBIGDATA_NAME)
    csv = root / VINBIGDATA_CSV
    cols = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
    df = _read_csv(csv, cols, VINBIGDATA_NAME)

    class_ids = _numbers(df, "class_id", csv)
    coords = {c: _numbers(df, c, csv) for c in ("x_min", "y_min", "x_max", "y_max")}
    findings: dict[str, set[str]] = OrderedDict()
    boxes: dict[str, list[Box]] = {}
    for i, (line, image_id, name) in enumerate(zip(_lines(df), df["image_id"], df["class_name"])):
        if not image_id:
            raise DataError(f"{csv}: line {line}: empty image_id")
        cid = class_ids[i]
        raw_id = df["class_id"].iloc[i]
        if pd.isna(cid) or cid != int(cid) or int(cid) not in VINBIGDATA_CLASSES:
            raise DataError(
                f"{csv}: line {line}: unknown class_id {raw_id!r} for image {image_id} "
                f"(known: 0..{max(VINBIGDATA_CLASSES)})"
            )
        cid = int(cid)
        if name != VINBIGDATA_CLASSES[cid]:
            raise DataError(
                f"{csv}: line {line}: class_name {name!r} does not match class_id {cid} "
                f"(expected {VINBIGDATA_CLASSES[cid]!r}) for image {image_id}"
            )
        image_findings = findings.setdefault(image_id, set())
        image_boxes = boxes.setdefault(image_id, [])
        if cid == VINBIGDATA_NO_FINDING_ID:
            continue
        x0, y0, x1, y1 = (coords[c][i] for c in ("x_min", "y_min", "x_max", "y_max"))
        if any(pd.isna(v) for v in (x0, y0, x1, y1)):
            raise DataError(
                f"{csv}: line {line}: image {image_id} has finding {name!r} but no box "
                "(x_min, y_min, x_max and y_max must all be numbers)"
            )
        if x1 < x0 or y1 < y0:
            raise DataError(
                f"{csv}: line {line}: image {image_id} has a box with x_max < x_min or "
                f"y_max < y_min ({x0}, {y0}, {x1}, {y1})"
            )
        image_findings.add(name)
        image_boxes.append(Box(float(x0), float(y0), float(x1 - x0), float(y1 - y0), name))

    records = []
    for image_id, names in findings.items():
        label = 1 if names else 0
        rel = f"{VINBIGDATA_IMAGE_DIR}/{image_id}.dicom"
        records.append(
            ImageRecord(
                id=rel,
                path=root / VINBIGDATA_IMAGE_DIR / f"{image_id}.dicom",
                label=label,
                patient_id=None,
                finding=";".join(sorted(names)) if names else VINBIGDATA_CLASSES[14],
                boxes=tuple(boxes[image_id]),
            )
        )
    _check_images(records, csv)
    records.sort(key=lambda r: r.id)
    return records


# --------------------------------------------------------------------------------------------
# helpers


def _check_root(root, name: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: {name} download folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected the unpacked {name} download)")
    return root


def _read_csv(path: Path, required: list[str], name: str) -> pd.DataFrame:
    """A CSV as strings (empty cells as ""), with its required columns checked."""
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found (expected in the unpacked {name} download)")
    try:
        df = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the CSV file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: cannot parse the CSV file ({e})") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read the CSV file ({e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(df.columns) if len(df.columns) else 'none'})"
        )
    if len(df) == 0:
        raise DataError(f"{path}: the CSV file has no rows")
    df = df[required].copy()
    for c in required:
        df[c] = df[c].astype(str).str.strip()
    return df.reset_index(drop=True)


def _lines(df: pd.DataFrame) -> range:
    """The CSV line number of each row (the header is line 1)."""
    return range(2, len(df) + 2)


def _numbers(df: pd.DataFrame, column: str, path: Path) -> list[float]:
    """A column as floats: NaN for empty cells; a DataError for text that is not a number."""
    raw = df[column]
    values = pd.to_numeric(raw.where(raw != ""), errors="coerce")
    bad = [i for i, (r, v) in enumerate(zip(raw, values)) if r != "" and pd.isna(v)]
    if bad:
        i = bad[0]
        raise DataError(
            f"{path}: line {i + 2}: {column} is {raw.iloc[i]!r}, not a number"
            + (f"; {len(bad)} such rows" if len(bad) > 1 else "")
        )
    return [float(v) for v in values]


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    return shown + (", ..." if len(items) > _MAX_NAMED else "")


def _check_images(records: list[ImageRecord], csv: Path) -> None:
    missing = [r for r in records if not r.path.is_file()]
    if missing:
        raise DataError(
            f"{csv}: {len(missing)} of {len(records)} listed image file(s) are missing on disk: "
            f"{_some([str(r.path) for r in missing])}"
        )
