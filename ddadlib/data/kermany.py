"""The bundled real chest X-rays: 64x64 images from Kermany et al. (CC BY 4.0).

The bundle ``ddadlib/data/files/kermany64.npz`` holds every normal image of the pediatric chest
X-ray set of Kermany, Zhang, Goldbaum et al. (Mendeley Data v2, 2018) and a seeded sample of
whole pneumonia patients, resized to 64x64 (see ``NOTICE.md`` beside it for the licence and the
credit). The images are stored as lossless PNGs (smaller than deflated raw pixels), one after
the other in the array ``png`` with their ends in ``offsets``; ``id``, ``label``,
``patient_id`` and ``finding`` follow the source's ``labels.csv``.

:func:`build_bundle` makes the file from the 128-pixel copy of the set
(``scripts/build_kermany_bundle.py``); the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ddadlib.data.imaging import read_image, resize
from ddadlib.errors import DataError
from ddadlib.fileio import atomic_write

DATA_FILES = Path(__file__).resolve().parent / "files"
BUNDLE = DATA_FILES / "kermany64.npz"
NOTICE = DATA_FILES / "NOTICE.md"
BUNDLE_SIZE = 64
#: Pneumonia images to sample (whole patients are taken until at least this many).
N_PNEUMONIA = 1350
BUNDLE_SEED = 0
LICENCE = "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)"
CREDIT = (
    "Kermany D, Zhang K, Goldbaum M. Labeled Optical Coherence Tomography (OCT) and Chest "
    "X-Ray Images for Classification. Mendeley Data, v2, 2018, doi:10.17632/rscbjbr9sj.2; "
    "Kermany DS, Goldbaum M, Cai W, et al. Identifying Medical Diagnoses and Treatable "
    "Diseases by Image-Based Deep Learning. Cell 172(5):1122-1131, 2018"
)
MODIFICATIONS = (
    f"all normal images and a seeded sample of whole pneumonia patients (about "
    f"{N_PNEUMONIA:,} images) of the training set, resized to "
    f"{BUNDLE_SIZE}x{BUNDLE_SIZE} grayscale"
)
_COLUMNS = ("id", "label", "patient_id", "finding")
# The time stamp of every archive entry (zip's earliest), so that a rebuild gives the same bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def select_rows(
    labels: pd.DataFrame, n_pneumonia: int = N_PNEUMONIA, seed: int = BUNDLE_SEED
) -> pd.DataFrame:
    """The rows of the source's ``labels.csv`` that go into the bundle, in the file's order.

    All normal images; pneumonia patients in a seeded random order, whole, until at least
    ``n_pneumonia`` images are taken.
    """
    normal = labels[labels["label"] == 0]
    abnormal = labels[labels["label"] == 1]
    patients = np.array(sorted(abnormal["patient_id"].unique()))
    per_patient = abnormal.groupby("patient_id").size()
    taken, n = [], 0
    for p in patients[np.random.default_rng(seed).permutation(len(patients))]:
        if n >= n_pneumonia:
            break
        taken.append(p)
        n += int(per_patient[p])
    keep = normal.index.union(abnormal.index[abnormal["patient_id"].isin(taken)])
    return labels.loc[keep]


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def build_bundle(
    shared: str | Path, out: str | Path, n_pneumonia: int = N_PNEUMONIA, seed: int = BUNDLE_SEED
) -> Path:
    """Build the bundle at ``out`` from the folder ``shared`` (``labels.csv`` + images).

    Images are read and resized as ``ddad prepare folder`` does
    (:func:`ddadlib.data.imaging.resize`, Lanczos). Returns ``out``.
    """

    shared, out = Path(shared), Path(out)
    csv = shared / "labels.csv"
    if not csv.is_file():
        raise DataError(f"{shared}: no labels.csv (expected the kermany-cxr128 folder)")
    labels = pd.read_csv(
        csv, dtype={"filename": str, "patient_id": str, "finding": str}, keep_default_na=False
    )
    rows = select_rows(labels, n_pneumonia, seed)
    pngs = [_png(resize(read_image(shared / f), BUNDLE_SIZE)) for f in rows["filename"]]
    arrays = {
        "png": np.frombuffer(b"".join(pngs), dtype=np.uint8),
        "offsets": np.cumsum([0] + [len(b) for b in pngs], dtype=np.int64),
        "id": rows["filename"].to_numpy(dtype=str),
        "label": rows["label"].to_numpy(dtype=np.uint8),
        "patient_id": rows["patient_id"].to_numpy(dtype=str),
        "finding": rows["finding"].to_numpy(dtype=str),
    }

    def write(fh) -> None:
        # The layout of np.savez_compressed (one .npy per array, read by np.load), with each
        # entry's time stamp and compression set here rather than left to library defaults, so
        # that a rebuild gives the same bytes.
        with zipfile.ZipFile(fh, "w") as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w") as entry:
                    np.lib.format.write_array(entry, array, allow_pickle=False)

    atomic_write(out, write)
    return out


def bundle_sha256(path: str | Path = BUNDLE) -> str:
    """SHA-256 of the bundle file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_bundle(path: str | Path = BUNDLE) -> tuple[np.ndarray, pd.DataFrame]:
    """The bundle's images, (N, 64, 64) uint8, and a frame of ``id,label,patient_id,finding``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: the bundled chest X-rays are missing; reinstall ddadlib "
            "(or rebuild it with scripts/build_kermany_bundle.py)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            png, offsets = z["png"], z["offsets"]
            frame = pd.DataFrame({c: z[c] for c in _COLUMNS})
        images = np.stack(
            [
                np.asarray(Image.open(io.BytesIO(png[a:b].tobytes())), np.uint8)
                for a, b in itertools.pairwise(offsets)
            ]
        )
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read the bundled chest X-rays ({exc})") from None
    frame["label"] = frame["label"].astype(np.int64)
    return images, frame
