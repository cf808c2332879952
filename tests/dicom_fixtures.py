"""Helpers for tests: small synthetic DICOM files and fake Kaggle download folders.

Import from test files as ``from dicom_fixtures import ...`` (the tests folder must be on
``sys.path``, see ``pythonpath`` in ``pyproject.toml``).

* :func:`pattern_image` - a non-square test image (gradient plus a bright square near the
  top-left corner) so that orientation, flips and inversion show after decoding;
* :func:`write_dicom` - write an array as a DICOM file (MONOCHROME1/2, RGB, 8/12/16 bits,
  rescale, window, multi-frame; explicit/implicit little endian, JPEG baseline, JPEG 2000, RLE);
* :func:`make_rsna_download`, :func:`make_vinbigdata_download` - fake unpacked Kaggle downloads
  with the real CSV columns and row repetition; they return the records a reader should give.
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from pathlib import Path

import numpy as np

from ddadlib.data.records import Box, ImageRecord

__all__ = [
    "SHAPE",
    "pattern_image",
    "bright_square",
    "write_dicom",
    "jpeg2000_encoder_available",
    "make_rsna_download",
    "make_vinbigdata_download",
    "RSNA_CLASS_COLUMNS",
    "RSNA_LABEL_COLUMNS",
    "VINBIGDATA_COLUMNS",
]

#: Default image shape (rows, columns): small and non-square.
SHAPE = (40, 48)

RSNA_CLASS_COLUMNS = ["patientId", "class"]
RSNA_LABEL_COLUMNS = ["patientId", "x", "y", "width", "height", "Target"]
VINBIGDATA_COLUMNS = [
    "image_id",
    "class_name",
    "class_id",
    "rad_id",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
]

_TRANSFER_SYNTAXES = {
    "explicit_le": "1.2.840.10008.1.2.1",
    "implicit_le": "1.2.840.10008.1.2",
    "jpeg_baseline": "1.2.840.10008.1.2.4.50",
    "jpeg2000": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless only
    "rle": "1.2.840.10008.1.2.5",
}
_CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
_SQUARE = (slice(6, 16), slice(8, 20))  # the bright square of pattern_image (rows, cols)


def pattern_image(shape: tuple[int, int] = SHAPE, max_value: int = 4095) -> np.ndarray:
    """A display-oriented test image with values 0..``max_value`` (uint8 or uint16).

    A horizontal gradient from 0 (left) to about ``max_value / 2`` (right), plus a small vertical
    gradient, and a square at ``max_value`` in rows 6..15, columns 8..19 (near the top-left
    corner): a flipped, transposed or inverted decode is easy to tell apart.
    """
    h, w = shape
    if h < 20 or w < 24:
        raise ValueError("pattern_image needs at least 20 x 24 pixels")
    cols = np.linspace(0.0, 0.5, w)[None, :]
    rows = np.linspace(0.0, 0.1, h)[:, None]
    img = (cols + rows) * max_value
    img[_SQUARE] = max_value
    dtype = np.uint8 if max_value <= 255 else np.uint16
    return np.rint(img).astype(dtype)


def bright_square() -> tuple[slice, slice]:
    """The (rows, columns) slices of the bright square of :func:`pattern_image`."""
    return _SQUARE


def jpeg2000_encoder_available() -> bool:
    """Whether pydicom can encode JPEG 2000 here (needs pylibjpeg-openjpeg)."""
    try:
        from pydicom.pixels import get_encoder
        from pydicom.uid import JPEG2000Lossless

        return bool(get_encoder(JPEG2000Lossless).is_available)
    except Exception:  # noqa: BLE001
        return False


def write_dicom(
    path: str | Path,
    array: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | tuple[list[float], list[float]] | None = None,
    transfer_syntax: str = "explicit_le",
    patient_id: str = "ANON",
    preamble: bool = True,
    jpeg_quality: int = 95,
) -> Path:
    """Write ``array`` as a small DICOM file at ``path`` and return the path.

    ``array``: (H, W) grayscale, (F, H, W) multi-frame grayscale, or (H, W, 3) with
    ``photometric="RGB"``; uint8 gives 8 bits allocated, anything else 16 (signed when the dtype
    is signed). ``bits_stored`` defaults to 8 / 16. ``rescale``: (slope, intercept).
    ``window``: (centre, width), either numbers or lists for multi-valued windows.
    ``transfer_syntax``: one of ``explicit_le``, ``implicit_le``, ``jpeg_baseline`` (8-bit
    grayscale, encoded with Pillow), ``jpeg2000`` (lossless, pydicom + pylibjpeg-openjpeg),
    ``rle``. ``preamble=False`` writes the bare data set without preamble and file meta.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    if transfer_syntax not in _TRANSFER_SYNTAXES:
        raise ValueError(f"unknown transfer_syntax {transfer_syntax!r}")
    ts = UID(_TRANSFER_SYNTAXES[transfer_syntax])

    rgb = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422")
    if rgb:
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError("colour images must be (H, W, 3)")
        frames, rows, cols = 1, arr.shape[0], arr.shape[1]
    elif arr.ndim == 2:
        frames, (rows, cols) = 1, arr.shape
    elif arr.ndim == 3:
        frames, rows, cols = arr.shape
    else:
        raise ValueError(f"array must be 2-D or 3-D, got shape {arr.shape}")

    if arr.dtype == np.uint8:
        bits_allocated, signed = 8, False
    else:
        signed = np.issubdtype(arr.dtype, np.signedinteger)
        arr = arr.astype(np.int16 if signed else np.uint16)
        bits_allocated = 16
    bits_stored = bits_stored or bits_allocated
    if not signed and int(arr.max(initial=0)) >= 2**bits_stored:
        raise ValueError(f"values up to {arr.max()} do not fit in {bits_stored} bits")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_CR_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Synthetic"
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if arr.ndim == 3 and not rgb:
        ds.NumberOfFrames = frames
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window

    if transfer_syntax in ("explicit_le", "implicit_le"):
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
        ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    elif transfer_syntax == "jpeg_baseline":
        if arr.dtype != np.uint8 or arr.ndim != 2:
            raise ValueError("jpeg_baseline needs a 2-D uint8 array")
        from PIL import Image
        from pydicom.encaps import encapsulate

        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=jpeg_quality)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.LossyImageCompression = "01"
    else:  # jpeg2000, rle: pydicom's own encoders (compress() sets the transfer syntax)
        meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
        ds.compress(ts, arr, generate_instance_uid=False)

    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        # the bare data set: no 128-byte preamble, no 'DICM', no file meta
        implicit = meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        del ds.file_meta
        ds.save_as(path, implicit_vr=implicit, little_endian=True)
    return path


# --------------------------------------------------------------------------------------------
# fake Kaggle downloads


def _image_variant(i: int) -> dict:
    """Alternate photometric interpretation and bit depth between images."""
    return {
        "photometric": ("MONOCHROME2", "MONOCHROME1")[i % 2],
        "bits_stored": (12, 16)[(i // 2) % 2],
    }


def _write_variant_image(path: Path, shape, i: int, patient_id: str) -> None:
    v = _image_variant(i)
    max_value = 2 ** v["bits_stored"] - 1
    img = pattern_image(shape, max_value)
    # i in binary along the right end of the middle row, so no two images are exact duplicates
    bits = [(i >> b) & 1 for b in range(10)]
    img[shape[0] // 2, -10:] = np.array(bits[::-1], dtype=img.dtype) * max_value
    if v["photometric"] == "MONOCHROME1":
        img = (max_value - img.astype(np.int64)).astype(np.uint16)
    write_dicom(
        path,
        img,
        photometric=v["photometric"],
        bits_stored=v["bits_stored"],
        patient_id=patient_id,
    )


def _random_box(rng: random.Random, shape) -> tuple[float, float, float, float]:
    h, w = shape
    bw = rng.randint(4, w // 3)
    bh = rng.randint(4, h // 3)
    x = rng.randint(0, w - bw - 1)
    y = rng.randint(0, h - bh - 1)
    return float(x), float(y), float(bw), float(bh)


def _write_csv(path: Path, columns: list[str], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def make_rsna_download(
    root: str | Path,
    n_normal: int = 3,
    n_opacity: int = 3,
    n_other: int = 2,
    *,
    boxes_per_opacity: int | tuple[int, ...] = (1, 2, 3),
    shape: tuple[int, int] = SHAPE,
    seed: int = 0,
    write_images: bool = True,
) -> dict[str, ImageRecord]:
    """A fake unpacked ``rsna-pneumonia-detection-challenge`` download under ``root``.

    Writes ``stage_2_detailed_class_info.csv``, ``stage_2_train_labels.csv`` (one row per box
    for Lung Opacity patients, repeated in both files; one Target 0 row with empty coordinates
    otherwise) and ``stage_2_train_images/<patientId>.dcm`` for every patient, including the
    ``No Lung Opacity / Not Normal`` ones. Patients are written in shuffled order.
    ``boxes_per_opacity``: a number, or a tuple cycled over the Lung Opacity patients.

    Returns the records a reader should give (Normal and Lung Opacity only), keyed by id.
    """
    root = Path(root)
    rng = random.Random(seed)
    img_dir = root / "stage_2_train_images"
    img_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(boxes_per_opacity, int):
        boxes_per_opacity = (boxes_per_opacity,)

    patients: list[tuple[str, str]] = []
    for cls, n in (
        ("Normal", n_normal),
        ("Lung Opacity", n_opacity),
        ("No Lung Opacity / Not Normal", n_other),
    ):
        patients += [(str(uuid.UUID(int=rng.getrandbits(128), version=4)), cls) for _ in range(n)]
    rng.shuffle(patients)

    class_rows, label_rows = [], []
    expected: dict[str, ImageRecord] = {}
    n_op = 0
    for i, (pid, cls) in enumerate(patients):
        boxes: list[Box] = []
        if cls == "Lung Opacity":
            k = boxes_per_opacity[n_op % len(boxes_per_opacity)]
            n_op += 1
            for _ in range(k):
                x, y, w, h = _random_box(rng, shape)
                boxes.append(Box(x, y, w, h, "Lung Opacity"))
                label_rows.append([pid, x, y, w, h, 1])
                class_rows.append([pid, cls])
        else:
            label_rows.append([pid, "", "", "", "", 0])
            class_rows.append([pid, cls])
        if write_images:
            _write_variant_image(img_dir / f"{pid}.dcm", shape, i, pid)
        if cls != "No Lung Opacity / Not Normal":
            rid = f"stage_2_train_images/{pid}.dcm"
            expected[rid] = ImageRecord(
                id=rid,
                path=root / rid,
                label=1 if cls == "Lung Opacity" else 0,
                patient_id=pid,
                finding=cls,
                boxes=tuple(boxes),
            )
    _write_csv(root / "stage_2_detailed_class_info.csv", RSNA_CLASS_COLUMNS, class_rows)
    _write_csv(root / "stage_2_train_labels.csv", RSNA_LABEL_COLUMNS, label_rows)
    return dict(sorted(expected.items()))


_VIN_FINDINGS = [
    (0, "Aortic enlargement"),
    (3, "Cardiomegaly"),
    (8, "Nodule/Mass"),
    (10, "Pleural effusion"),
    (11, "Pleural thickening"),
    (13, "Pulmonary fibrosis"),
]


def make_vinbigdata_download(
    root: str | Path,
    n_normal: int = 3,
    n_abnormal: int = 3,
    *,
    radiologists: int = 3,
    shape: tuple[int, int] = SHAPE,
    seed: int = 0,
    write_images: bool = True,
) -> dict[str, ImageRecord]:
    """A fake unpacked ``vinbigdata-chest-xray-abnormalities-detection`` download under ``root``.

    Writes ``train.csv`` (columns image_id, class_name, class_id, rad_id, x_min, y_min, x_max,
    y_max; ``radiologists`` rows of "No finding" per normal image; for abnormal images each
    radiologist gives one or two boxes, except that on every other abnormal image the first
    radiologist says "No finding") and ``train/<image_id>.dicom``. Rows are shuffled.

    Returns the records a reader should give, keyed by id.
    """
    root = Path(root)
    rng = random.Random(seed)
    img_dir = root / "train"
    img_dir.mkdir(parents=True, exist_ok=True)
    images = [("normal", f"{rng.getrandbits(128):032x}") for _ in range(n_normal)]
    images += [("abnormal", f"{rng.getrandbits(128):032x}") for _ in range(n_abnormal)]
    rng.shuffle(images)

    rows: list[list] = []
    expected: dict[str, ImageRecord] = {}
    n_ab = 0
    for i, (kind, image_id) in enumerate(images):
        rads = [f"R{rng.randint(1, 17)}" for _ in range(radiologists)]
        boxes: list[Box] = []
        if kind == "normal":
            rows += [[image_id, "No finding", 14, r, "", "", "", ""] for r in rads]
        else:
            for j, r in enumerate(rads):
                if j == 0 and n_ab % 2 == 1:
                    rows.append([image_id, "No finding", 14, r, "", "", "", ""])
                    continue
                for _ in range(rng.randint(1, 2)):
                    cid, name = rng.choice(_VIN_FINDINGS)
                    x, y, w, h = _random_box(rng, shape)
                    # real coordinates have decimals; keep them exactly representable
                    x, y = x + 0.5, y + 0.25
                    rows.append([image_id, name, cid, r, x, y, x + w, y + h])
                    boxes.append(Box(x, y, w, h, name))
            n_ab += 1
        if write_images:
            _write_variant_image(img_dir / f"{image_id}.dicom", shape, i, "")
        rid = f"train/{image_id}.dicom"
        names = sorted({b.label for b in boxes})
        expected[rid] = ImageRecord(
            id=rid,
            path=root / rid,
            label=1 if kind == "abnormal" else 0,
            patient_id=None,
            finding=";".join(names) if names else "No finding",
            boxes=tuple(boxes),
        )
    # interleave the images' rows at random, keeping each image's rows in their relative order
    # (the reader keeps CSV order, and the expected records list boxes in that order)
    keys = [rng.random() for _ in rows]
    by_image: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by_image.setdefault(r[0], []).append(k)
    for idx in by_image.values():
        for k, key in zip(idx, sorted(keys[k] for k in idx)):
            keys[k] = key
    rows = [r for _, r in sorted(zip(keys, rows), key=lambda kr: kr[0])]
    _write_csv(root / "train.csv", VINBIGDATA_COLUMNS, rows)
    return dict(sorted(expected.items()))
