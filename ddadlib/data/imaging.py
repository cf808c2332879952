"""Reading image files (PNG, JPEG, DICOM, ...) as 8-bit grayscale and resizing them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddadlib.errors import DataError

#: File extensions that folder datasets read (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
#: The image sizes a dataset may be prepared at. Below 16 px nothing of a chest X-ray is left;
#: above 1024 px the images outgrow memory (10,000 images of 1024 x 1024 are 10 GB) and the
#: networks, built for the paper's 64 px, get no better.
MIN_SIZE, MAX_SIZE = 16, 1024


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a 2-D uint8 grayscale array at its own resolution.

    DICOM files go through :func:`ddadlib.data.dicom.read_dicom` (pydicom); everything else through
    Pillow. 16-bit and float PNG/TIFF are scaled to 8 bit by their min and max; a float image
    with a NaN or infinite pixel is refused (a :class:`DataError` naming the file).
    """
    # imported here, not at the top: pydicom loads only when an image is read (not for `ddad --help`)
    from ddadlib.data.dicom import is_dicom, read_dicom

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if is_dicom(path):
        return read_dicom(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(im, dtype=np.float64)
                bad = int(np.count_nonzero(~np.isfinite(arr)))
                if bad:
                    raise DataError(
                        f"{path}: {bad:,} of {arr.size:,} pixels are NaN or "
                        "infinite; fix or remove the image"
                    )
                return _to_uint8(arr)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA").convert("RGB")
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as an image ({exc})") from None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D uint8 image to ``size`` x ``size`` with antialiasing (Lanczos).

    The whole image is squashed to a square (no crop), as the paper's preprocessing does.
    """
    if image.shape == (size, size):
        return image
    im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(im.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def pixel_md5(image: np.ndarray) -> str:
    """MD5 of an image's pixels and shape: equal digests mean exactly the same image."""
    h = hashlib.md5(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()
