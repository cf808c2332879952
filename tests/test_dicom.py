"""Tests of ddadlib.data.dicom: decoding DICOM files into displayed 8-bit grayscale images."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_fixtures import (
    bright_square,
    jpeg2000_encoder_available,
    pattern_image,
    write_dicom,
)

from ddadlib.data.dicom import is_dicom, read_dicom
from ddadlib.errors import DataError


def _minmax(img: np.ndarray) -> np.ndarray:
    """What read_dicom should give for a plain MONOCHROME2 image without LUTs."""
    a = img.astype(np.float64)
    return np.rint((a - a.min()) * 255.0 / (a.max() - a.min())).astype(np.uint8)


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def _check_orientation(out: np.ndarray) -> None:
    """Bright square near the top-left, gradient growing to the right, shape (40, 48)."""
    assert out.shape == (40, 48) and out.dtype == np.uint8
    rows, cols = bright_square()
    assert out[rows, cols].min() >= 250
    assert out[30, 2] < out[30, 45]
    assert out[35, 40] < 160  # not inverted: outside the square is at most half bright


# ----------------------------------------------------------------------------- basics


@pytest.mark.parametrize("bits", [12, 16])
def test_monochrome2_bits(tmp_path, bits):
    img = pattern_image(max_value=2**bits - 1)
    out = read_dicom(write_dicom(tmp_path / "a.dcm", img, bits_stored=bits))
    _check_orientation(out)
    assert _diff(out, _minmax(img)) == 0
    assert out.min() == 0 and out.max() == 255


def test_eight_bit(tmp_path):
    img = pattern_image(max_value=255)
    out = read_dicom(write_dicom(tmp_path / "a.dcm", img))
    _check_orientation(out)
    assert _diff(out, _minmax(img)) == 0


@pytest.mark.parametrize("bits", [12, 16])
def test_monochrome1_is_inverted(tmp_path, bits):
    top = 2**bits - 1
    img = pattern_image(max_value=top)
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", img, bits_stored=bits))
    stored = (top - img.astype(np.int64)).astype(np.uint16)
    m1 = read_dicom(
        write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", bits_stored=bits)
    )
    _check_orientation(m1)
    assert _diff(m1, m2) <= 1  # rounding ties only


def test_str_path_accepted(tmp_path):
    p = write_dicom(tmp_path / "a.dcm", pattern_image())
    assert np.array_equal(read_dicom(str(p)), read_dicom(p))


def test_constant_image_is_zero(tmp_path):
    img = np.full((40, 48), 1234, dtype=np.uint16)
    out = read_dicom(write_dicom(tmp_path / "c.dcm", img, bits_stored=12))
    assert out.shape == (40, 48) and out.dtype == np.uint8
    assert not out.any()
    out1 = read_dicom(
        write_dicom(tmp_path / "c1.dcm", img, bits_stored=12, photometric="MONOCHROME1")
    )
    assert out1.shape == (40, 48)
    assert len(np.unique(out1)) == 1


# ----------------------------------------------------------------------------- LUTs


def test_rescale_positive_slope_keeps_image(tmp_path):
    img = pattern_image()
    out = read_dicom(write_dicom(tmp_path / "r.dcm", img, bits_stored=12, rescale=(2.0, -1024.0)))
    assert _diff(out, _minmax(img)) == 0


def test_rescale_negative_slope_inverts(tmp_path):
    img = pattern_image()
    out = read_dicom(write_dicom(tmp_path / "r.dcm", img, bits_stored=12, rescale=(-1.0, 4095.0)))
    assert _diff(out, 255 - _minmax(img)) <= 1


def test_window_applied(tmp_path):
    img = pattern_image()  # 0..4095
    out = read_dicom(write_dicom(tmp_path / "w.dcm", img, bits_stored=12, window=(1000, 500)))
    low, high = img <= 740, img >= 1260
    assert low.any() and high.any()
    assert (out[low] == 0).all()
    assert (out[high] == 255).all()
    mid = (img > 800) & (img < 1200)
    assert mid.any()
    assert ((out[mid] > 0) & (out[mid] < 255)).all()
    # linear inside the window: monotonic in the stored value
    order = np.argsort(img[mid], kind="stable")
    assert (np.diff(out[mid][order].astype(int)) >= 0).all()


def test_window_in_rescaled_units(tmp_path):
    img = pattern_image()
    # rescaled = 2 * stored - 1000; the window is in rescaled units: 1000 +- 250
    out = read_dicom(
        write_dicom(tmp_path / "w.dcm", img, bits_stored=12, rescale=(2, -1000), window=(1000, 500))
    )
    rescaled = 2 * img.astype(np.int64) - 1000
    assert (out[rescaled <= 740] == 0).all()
    assert (out[rescaled >= 1260] == 255).all()


def test_multi_valued_window_uses_first(tmp_path):
    img = pattern_image()
    one = read_dicom(write_dicom(tmp_path / "a.dcm", img, bits_stored=12, window=(1000, 500)))
    two = read_dicom(
        write_dicom(tmp_path / "b.dcm", img, bits_stored=12, window=([1000, 3000], [500, 2000]))
    )
    assert np.array_equal(one, two)


def test_voi_lut_sequence_applied(tmp_path):
    import pydicom
    from pydicom.dataset import Dataset

    img = pattern_image()
    p = write_dicom(tmp_path / "v.dcm", img, bits_stored=12, window=(1000, 500))
    ds = pydicom.dcmread(p)
    # a step LUT: stored values below 2048 -> 0, from 2048 on -> 1000; preferred over the window
    item = Dataset()
    item.LUTDescriptor = [2, 2047, 16]
    item.LUTData = [0, 1000]
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = [item]
    ds.save_as(p, enforce_file_format=True)
    out = read_dicom(p)
    assert set(np.unique(out)) == {0, 255}
    assert (out[img < 2047] == 0).all()
    assert (out[img > 2048] == 255).all()


# ----------------------------------------------------------------------------- encodings


def test_jpeg_baseline(tmp_path):
    img = pattern_image(max_value=255)
    out = read_dicom(write_dicom(tmp_path / "j.dcm", img, transfer_syntax="jpeg_baseline"))
    _check_orientation(out)
    assert np.abs(out.astype(int) - _minmax(img).astype(int)).mean() < 3
    assert _diff(out, _minmax(img)) <= 30  # JPEG ringing at the square's edges


@pytest.mark.skipif(
    not jpeg2000_encoder_available(), reason="pylibjpeg-openjpeg is needed to encode JPEG 2000"
)
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_jpeg2000(tmp_path, photometric):
    img = pattern_image()
    stored = img if photometric == "MONOCHROME2" else (4095 - img).astype(np.uint16)
    out = read_dicom(
        write_dicom(
            tmp_path / "j2k.dcm",
            stored,
            photometric=photometric,
            bits_stored=12,
            transfer_syntax="jpeg2000",
        )
    )
    _check_orientation(out)
    assert _diff(out, _minmax(img)) <= 1  # lossless


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_rle(tmp_path, bits):
    img = pattern_image(max_value=2**bits - 1)
    out = read_dicom(write_dicom(tmp_path / "r.dcm", img, bits_stored=bits, transfer_syntax="rle"))
    _check_orientation(out)
    assert _diff(out, _minmax(img)) == 0


def test_implicit_vr_and_no_preamble(tmp_path):
    img = pattern_image()
    want = _minmax(img)
    p = write_dicom(tmp_path / "i.dcm", img, bits_stored=12, transfer_syntax="implicit_le")
    assert _diff(read_dicom(p), want) == 0
    bare = write_dicom(tmp_path / "bare", img, bits_stored=12, preamble=False)
    assert not is_dicom(bare)  # no extension, no magic
    assert _diff(read_dicom(bare), want) == 0


def test_multiframe_takes_first_frame(tmp_path):
    first = pattern_image()
    second = (4095 - first).astype(np.uint16)
    stack = np.stack([first, second, first // 2])
    for ts in ("explicit_le", "rle"):
        out = read_dicom(
            write_dicom(tmp_path / f"mf_{ts}.dcm", stack, bits_stored=12, transfer_syntax=ts)
        )
        assert _diff(out, _minmax(first)) == 0


def test_rgb_to_gray(tmp_path):
    gray = pattern_image(max_value=255)
    rgb = np.stack([gray, gray, gray], axis=-1)
    out = read_dicom(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    assert out.shape == (40, 48)
    _check_orientation(out)
    assert _diff(out, _minmax(gray)) <= 1


def test_signed_pixels(tmp_path):
    img = pattern_image().astype(np.int16) - 2048
    out = read_dicom(write_dicom(tmp_path / "s.dcm", img, bits_stored=12))
    _check_orientation(out)
    assert _diff(out, _minmax(img)) == 0


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothere.dcm.*not found"):
        read_dicom(tmp_path / "nothere.dcm")


def test_not_dicom(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not a DICOM file\n" * 20)
    with pytest.raises(DataError, match="notes.dcm.*not a DICOM"):
        read_dicom(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.dcm"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="empty.dcm"):
        read_dicom(p)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_pixel_data(tmp_path, keep):
    p = write_dicom(tmp_path / "full.dcm", pattern_image(), bits_stored=12)
    data = p.read_bytes()
    q = tmp_path / "cut.dcm"
    q.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match="cut.dcm"):
        read_dicom(q)


def test_truncated_header(tmp_path):
    p = write_dicom(tmp_path / "full.dcm", pattern_image(), bits_stored=12)
    q = tmp_path / "head.dcm"
    q.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match="head.dcm.*(pixel data|truncated|corrupt)"):
        read_dicom(q)


def test_truncated_jpeg(tmp_path):
    p = write_dicom(
        tmp_path / "j.dcm", pattern_image(max_value=255), transfer_syntax="jpeg_baseline"
    )
    data = p.read_bytes()
    q = tmp_path / "jcut.dcm"
    q.write_bytes(data[: len(data) - 400])
    with pytest.raises(DataError, match="jcut.dcm"):
        read_dicom(q)


def test_no_pixel_data(tmp_path):
    import pydicom

    p = write_dicom(tmp_path / "np.dcm", pattern_image(), bits_stored=12)
    ds = pydicom.dcmread(p)
    del ds.PixelData
    ds.save_as(p, enforce_file_format=True)
    with pytest.raises(DataError, match="np.dcm.*no pixel data"):
        read_dicom(p)


def test_missing_decoder_names_syntax_and_package(tmp_path, monkeypatch):
    import ddadlib.data.dicom as dicom_mod

    p = write_dicom(
        tmp_path / "j.dcm", pattern_image(max_value=255), transfer_syntax="jpeg_baseline"
    )

    class _Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg-libjpeg"]

    monkeypatch.setattr(dicom_mod, "get_decoder", lambda uid: _Unavailable())
    with pytest.raises(DataError) as e:
        read_dicom(p)
    msg = str(e.value)
    assert "j.dcm" in msg and "JPEG Baseline" in msg and "pylibjpeg-libjpeg" in msg


def test_unsupported_transfer_syntax(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    p = write_dicom(tmp_path / "x.dcm", pattern_image(), bits_stored=12)
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2
    ds.PixelData = encapsulate([ds.PixelData])
    ds.save_as(p, enforce_file_format=True)
    with pytest.raises(DataError, match="x.dcm.*transfer syntax"):
        read_dicom(p)


# ----------------------------------------------------------------------------- is_dicom


def test_is_dicom(tmp_path):
    img = pattern_image()
    assert is_dicom(write_dicom(tmp_path / "a.dcm", img))
    assert is_dicom(tmp_path / "b.DICOM")  # by extension, need not exist
    noext = write_dicom(tmp_path / "c", img)
    assert is_dicom(noext)  # by the magic
    assert is_dicom(str(noext))
    png = tmp_path / "d.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    assert not is_dicom(png)
    assert not is_dicom(tmp_path / "missing")
    assert not is_dicom(tmp_path)  # a folder
