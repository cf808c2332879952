"""Decode a DICOM file into the 8-bit grayscale image a radiologist would see on screen.

:func:`read_dicom` reads a file with pydicom and turns its stored values into display values:

1. the pixel data is decoded through pydicom's pixel-data plugins, so compressed transfer
   syntaxes work when their decoder is installed (JPEG baseline and JPEG-LS through
   ``pylibjpeg-libjpeg`` or Pillow, JPEG 2000 through ``pylibjpeg-openjpeg``, RLE natively);
   of a multi-frame file only the first frame is used, and colour images are converted to gray;
2. the modality LUT (or Rescale Slope / Intercept) is applied, then the VOI LUT or the window
   centre / width when the file has one (of several windows, the first);
3. the result is scaled to 0..255 by its minimum and maximum (a constant image gives all 0);
4. a ``MONOCHROME1`` image (low values bright) is inverted, so that bone is bright in the
   output whatever the file's photometric interpretation.

Any problem (not a DICOM file, truncated file, no pixel data, missing decoder) raises
:class:`~ddadlib.errors.DataError` with a message that names the file and the problem.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    get_decoder,
    pixel_array,
)
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ddadlib.errors import DataError

__all__ = ["read_dicom", "is_dicom", "DICOM_SUFFIXES"]

#: File name endings taken as DICOM without looking inside the file.
DICOM_SUFFIXES = (".dcm", ".dicom")

_MAGIC_OFFSET = 128
_MAGIC = b"DICM"

# Which packages a transfer syntax's decoder needs, by the transfer syntax UID's prefix
# (RLE and deflate are decoded by pydicom itself).
_DECODER_PACKAGES = (
    ("1.2.840.10008.1.2.4.9", "pylibjpeg pylibjpeg-openjpeg"),  # JPEG 2000 (.90 - .93)
    ("1.2.840.10008.1.2.4.20", "pylibjpeg pylibjpeg-openjpeg"),  # HTJ2K (.201 - .203)
    ("1.2.840.10008.1.2.4.", "pylibjpeg pylibjpeg-libjpeg"),  # JPEG, JPEG-LS (.50 - .81)
)


def is_dicom(path: str | Path) -> bool:
    """Whether ``path`` looks like a DICOM file.

    True for a name ending in ``.dcm`` or ``.dicom`` (any case), or for a readable file with the
    ``DICM`` magic after its 128-byte preamble. Nothing is decoded.
    """
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with p.open("rb") as f:
            f.seek(_MAGIC_OFFSET)
            return f.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


def read_dicom(path: str | Path) -> np.ndarray:
    """The image of the DICOM file ``path`` as displayed: a 2-D ``uint8`` array (rows, columns).

    See the module docstring for the steps. Raises :class:`DataError` naming the file and the
    problem for anything that cannot be read or decoded.
    """
    p = Path(path)
    ds = _read_dataset(p)
    frame = _decode_first_frame(p, ds)
    values = _to_display_values(p, ds, frame)
    out = _scale_to_uint8(values)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "MONOCHROME1":
        out = 255 - out
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------
# steps


def _read_dataset(p: Path):
    if not p.exists():
        raise DataError(f"{p}: DICOM file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty, not a DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(p)
            except InvalidDicomError:
                # No preamble / file meta: some old files are still DICOM datasets.
                ds = pydicom.dcmread(p, force=True)
                if "PixelData" not in ds:
                    raise DataError(
                        f"{p}: not a DICOM file (no 'DICM' marker at byte 128 and no "
                        "DICOM data set with pixel data found)"
                    ) from None
            # dcmread reads lazily in places; touch the pixel data element so that a truncated
            # file fails here with a clear message.
            _ = ds.get("PixelData")
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{p}: cannot read the file ({e})") from e
    except Exception as e:  # noqa: BLE001 - pydicom raises many kinds for broken files
        raise DataError(
            f"{p}: not a readable DICOM file, it may be truncated or corrupt "
            f"({type(e).__name__}: {e})"
        ) from e
    return ds


def _transfer_syntax(p: Path, ds):
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax:
        return tsyntax
    # A file read without file meta: infer the encoding from how pydicom parsed it.
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        raise DataError(f"{p}: the file has no transfer syntax UID (0002,0010)")
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _missing_decoder_message(p: Path, tsyntax, detail: str = "") -> str:
    name = getattr(tsyntax, "name", "") or str(tsyntax)
    packages = next(
        (pk for prefix, pk in _DECODER_PACKAGES if str(tsyntax).startswith(prefix)), None
    )
    msg = f"{p}: no decoder available for transfer syntax {name} ({tsyntax})"
    if packages:
        msg += f"; install {' and '.join(packages.split())} (pip install {packages})"
    if detail:
        msg += f" [{detail}]"
    return msg


def _decode_first_frame(p: Path, ds) -> np.ndarray:
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = (
            f"only {other[0]}, which is not supported"
            if other
            else "no pixel data (no (7FE0,0010) element; the file may be truncated)"
        )
        raise DataError(f"{p}: the DICOM file has {what}")
    if ds.PixelData is None or len(ds.PixelData) == 0:
        raise DataError(f"{p}: the DICOM file's pixel data is empty")
    for kw in ("Rows", "Columns", "BitsAllocated"):
        if kw not in ds or ds[kw].value in (None, ""):
            raise DataError(f"{p}: the DICOM file has pixel data but no {kw} element")

    tsyntax = _transfer_syntax(p, ds)
    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        if getattr(ds, "file_meta", None) is None:
            ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = tsyntax
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        detail = "pydicom has no decoder for it"
        raise DataError(_missing_decoder_message(p, tsyntax, detail)) from None
    if not decoder.is_available:
        detail = "; ".join(decoder.missing_dependencies)
        raise DataError(_missing_decoder_message(p, tsyntax, detail))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = pixel_array(ds, index=0)
    except Exception as e:  # noqa: BLE001 - plugins raise many kinds for broken data
        raise DataError(
            f"{p}: cannot decode the pixel data (transfer syntax "
            f"{getattr(tsyntax, 'name', tsyntax)}): {type(e).__name__}: {e}"
        ) from e

    arr = np.asarray(arr)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{p}: cannot apply the palette colour LUT ({e})") from e
        samples = 3
    if samples > 1 or arr.ndim == 3:
        if arr.ndim != 3:
            raise DataError(
                f"{p}: SamplesPerPixel is {samples} but the decoded frame has shape {arr.shape}"
            )
        arr = _rgb_to_gray(arr)
    if arr.ndim != 2:
        raise DataError(f"{p}: the decoded frame has shape {arr.shape}, expected 2-D")
    if arr.size == 0:
        raise DataError(f"{p}: the image is empty (shape {arr.shape})")
    return arr


def _rgb_to_gray(arr: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an (H, W, 3+) array, as float."""
    rgb = arr[..., :3].astype(np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


def _to_display_values(p: Path, ds, frame: np.ndarray) -> np.ndarray:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples > 1 or photometric == "PALETTE COLOR":
        # LUTs and windows are defined for grayscale stored values only.
        return frame.astype(np.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = apply_modality_lut(frame, ds)
            if _has_voi(ds):
                arr = apply_voi_lut(arr, ds, index=0, prefer_lut=True)
    except Exception as e:  # noqa: BLE001 - bad LUT / window values
        raise DataError(
            f"{p}: cannot apply the modality LUT / VOI LUT / window of the file "
            f"({type(e).__name__}: {e})"
        ) from e
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{p}: the rescaled pixel values are not all finite")
    return arr


def _has_voi(ds) -> bool:
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        return True
    wc, ww = ds.get("WindowCenter"), ds.get("WindowWidth")
    return wc is not None and ww is not None and wc != "" and ww != ""


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    scaled = (arr - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
