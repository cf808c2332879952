"""Tests of ddadlib.data.kaggle: records from fake RSNA Pneumonia and VinBigData downloads."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import bright_square, make_rsna_download, make_vinbigdata_download

from ddadlib.data.dicom import read_dicom
from ddadlib.data.kaggle import rsna_records, vinbigdata_records
from ddadlib.data.records import Box
from ddadlib.errors import DataError


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ----------------------------------------------------------------------------- RSNA


@pytest.fixture
def rsna(tmp_path):
    root = tmp_path / "rsna-pneumonia-detection-challenge"
    expected = make_rsna_download(
        root, n_normal=4, n_opacity=5, n_other=3, boxes_per_opacity=(1, 2, 3)
    )
    return root, expected


def test_rsna_records(rsna):
    root, expected = rsna
    records = rsna_records(root)
    assert records == list(expected.values())
    assert [r.id for r in records] == sorted(r.id for r in records)
    assert Counter(r.label for r in records) == {0: 4, 1: 5}


def test_rsna_leaves_out_not_normal_and_dedups(rsna):
    root, _ = rsna
    header, rows = _read_rows(root / "stage_2_detailed_class_info.csv")
    others = {pid for pid, cls in rows if cls == "No Lung Opacity / Not Normal"}
    assert len(others) == 3
    assert len(rows) > 12  # repeated rows for patients with several boxes
    records = rsna_records(root)
    assert len(records) == 9
    assert len({r.patient_id for r in records}) == 9
    assert not others & {r.patient_id for r in records}


def test_rsna_record_fields(rsna):
    root, _ = rsna
    records = rsna_records(Path(str(root)))
    _, label_rows = _read_rows(root / "stage_2_train_labels.csv")
    boxes_by_patient = Counter(r[0] for r in label_rows if r[5] == "1")
    for r in records:
        assert r.id == f"stage_2_train_images/{r.patient_id}.dcm"
        assert r.path == root / "stage_2_train_images" / f"{r.patient_id}.dcm"
        assert r.path.is_file()
        if r.label == 1:
            assert r.finding == "Lung Opacity"
            assert len(r.boxes) == boxes_by_patient[r.patient_id] >= 1
            assert all(b.label == "Lung Opacity" for b in r.boxes)
            assert all(b.x + b.w <= 48 and b.y + b.h <= 40 for b in r.boxes)
        else:
            assert r.finding == "Normal" and r.boxes == ()
    assert {len(r.boxes) for r in records if r.label == 1} == {1, 2, 3}


def test_rsna_box_values(tmp_path):
    root = tmp_path / "r"
    make_rsna_download(root, n_normal=1, n_opacity=1, n_other=0, boxes_per_opacity=1)
    header, rows = _read_rows(root / "stage_2_train_labels.csv")
    rows = [r if r[5] == "0" else [r[0], "264.0", "152.5", "213.0", "379.0", "1"] for r in rows]
    _write_rows(root / "stage_2_train_labels.csv", header, rows)
    (op,) = [r for r in rsna_records(root) if r.label == 1]
    assert op.boxes == (Box(264.0, 152.5, 213.0, 379.0, "Lung Opacity"),)


def test_rsna_images_decode(rsna):
    root, _ = rsna
    rows, cols = bright_square()
    for r in rsna_records(root):  # mixed MONOCHROME1/2 and 12/16 bits
        img = read_dicom(r.path)
        assert img.shape == (40, 48)
        assert img[rows, cols].min() >= 250 and img[35, 40] < 160


def test_rsna_missing_root(tmp_path):
    with pytest.raises(DataError, match="nothere.*not found"):
        rsna_records(tmp_path / "nothere")


@pytest.mark.parametrize("name", ["stage_2_detailed_class_info.csv", "stage_2_train_labels.csv"])
def test_rsna_missing_csv(rsna, name):
    root, _ = rsna
    (root / name).unlink()
    with pytest.raises(DataError, match=name.replace(".", r"\.") + ".*not found"):
        rsna_records(root)


def test_rsna_missing_column(rsna):
    root, _ = rsna
    path = root / "stage_2_train_labels.csv"
    header, rows = _read_rows(path)
    _write_rows(path, ["patientId", "x", "y", "w", "height", "Target"], rows)
    with pytest.raises(DataError) as e:
        rsna_records(root)
    msg = str(e.value)
    assert "stage_2_train_labels.csv" in msg and "width" in msg
    assert "found: patientId, x, y, w" in msg


def test_rsna_unknown_class(rsna):
    root, _ = rsna
    path = root / "stage_2_detailed_class_info.csv"
    header, rows = _read_rows(path)
    rows[-1][1] = "Pneumonia"
    _write_rows(path, header, rows)
    with pytest.raises(DataError, match=r"stage_2_detailed_class_info\.csv.*'Pneumonia'"):
        rsna_records(root)


def test_rsna_unknown_target(rsna):
    root, _ = rsna
    path = root / "stage_2_train_labels.csv"
    header, rows = _read_rows(path)
    rows[0][5] = "2"
    _write_rows(path, header, rows)
    with pytest.raises(DataError, match=r"stage_2_train_labels\.csv.*Target"):
        rsna_records(root)


def test_rsna_conflicting_classes(rsna):
    root, expected = rsna
    path = root / "stage_2_detailed_class_info.csv"
    header, rows = _read_rows(path)
    pid = next(r.patient_id for r in expected.values() if r.label == 0)
    rows.append([pid, "Lung Opacity"])
    _write_rows(path, header, rows)
    with pytest.raises(DataError, match=rf"stage_2_detailed_class_info\.csv.*{pid}.*conflicting"):
        rsna_records(root)


def test_rsna_missing_images(rsna):
    root, expected = rsna
    gone = list(expected.values())[:2]
    for r in gone:
        r.path.unlink()
    with pytest.raises(DataError) as e:
        rsna_records(root)
    msg = str(e.value)
    assert "2 of 9" in msg and gone[0].path.name in msg and gone[1].path.name in msg


def test_rsna_left_out_images_may_be_missing(rsna):
    root, _ = rsna
    _, rows = _read_rows(root / "stage_2_detailed_class_info.csv")
    for pid, cls in rows:
        if cls == "No Lung Opacity / Not Normal":
            (root / "stage_2_train_images" / f"{pid}.dcm").unlink(missing_ok=True)
    assert len(rsna_records(root)) == 9


def test_rsna_no_rows(rsna):
    root, _ = rsna
    (root / "stage_2_detailed_class_info.csv").write_text("patientId,class\n")
    with pytest.raises(DataError, match="no rows"):
        rsna_records(root)


def test_rsna_opacity_without_box(rsna):
    root, expected = rsna
    path = root / "stage_2_train_labels.csv"
    header, rows = _read_rows(path)
    pid = next(r.patient_id for r in expected.values() if r.label == 1)
    rows = [[pid, "", "", "", "", "0"] if r[0] == pid else r for r in rows]
    _write_rows(path, header, rows)
    with pytest.raises(DataError, match=pid):
        rsna_records(root)


# ----------------------------------------------------------------------------- VinBigData


@pytest.fixture
def vin(tmp_path):
    root = tmp_path / "vinbigdata"
    expected = make_vinbigdata_download(root, n_normal=5, n_abnormal=4)
    return root, expected


def test_vinbigdata_records(vin):
    root, expected = vin
    records = vinbigdata_records(root)
    assert records == list(expected.values())
    assert [r.id for r in records] == sorted(r.id for r in records)
    assert Counter(r.label for r in records) == {0: 5, 1: 4}


def test_vinbigdata_normal_rule_and_fields(vin):
    root, _ = vin
    _, rows = _read_rows(root / "train.csv")
    class_ids: dict[str, set[str]] = {}
    for r in rows:
        class_ids.setdefault(r[0], set()).add(r[2])
    assert len(class_ids) == 9
    assert all(sum(r[0] == i for r in rows) >= 3 for i in class_ids)  # >= 3 radiologists
    # some abnormal image has a dissenting "No finding" radiologist
    assert any("14" in ids and len(ids) > 1 for ids in class_ids.values())
    for rec in vinbigdata_records(root):
        image_id = rec.id.removeprefix("train/").removesuffix(".dicom")
        assert rec.id == f"train/{image_id}.dicom"
        assert rec.path == root / "train" / f"{image_id}.dicom"
        assert rec.patient_id is None
        box_rows = [r for r in rows if r[0] == image_id and r[2] != "14"]
        if class_ids[image_id] == {"14"}:
            assert rec.label == 0 and rec.finding == "No finding" and rec.boxes == ()
        else:
            assert rec.label == 1
            assert rec.finding == ";".join(sorted({r[1] for r in box_rows}))
            assert "No finding" not in rec.finding
            assert len(rec.boxes) == len(box_rows)
            for b, r in zip(rec.boxes, box_rows):
                x0, y0, x1, y1 = map(float, r[4:8])
                assert b == Box(x0, y0, x1 - x0, y1 - y0, r[1])


def test_vinbigdata_images_decode(vin):
    root, _ = vin
    rows, cols = bright_square()
    for r in vinbigdata_records(root):
        img = read_dicom(r.path)
        assert img.shape == (40, 48) and img.dtype == np.uint8
        assert img[rows, cols].min() >= 250 and img[35, 40] < 160


def test_vinbigdata_missing_csv(vin):
    root, _ = vin
    (root / "train.csv").unlink()
    with pytest.raises(DataError, match=r"train\.csv.*not found"):
        vinbigdata_records(root)


def test_vinbigdata_missing_column(vin):
    root, _ = vin
    path = root / "train.csv"
    header, rows = _read_rows(path)
    _write_rows(path, header[:4] + ["xmin"] + header[5:], rows)
    with pytest.raises(DataError) as e:
        vinbigdata_records(root)
    msg = str(e.value)
    assert "train.csv" in msg and "x_min" in msg and "xmin" in msg


def test_vinbigdata_unknown_class(vin):
    root, _ = vin
    path = root / "train.csv"
    header, rows = _read_rows(path)
    rows[0][2] = "15"
    _write_rows(path, header, rows)
    with pytest.raises(DataError, match=r"train\.csv.*line 2.*class_id '15'"):
        vinbigdata_records(root)


def test_vinbigdata_class_name_mismatch(vin):
    root, _ = vin
    path = root / "train.csv"
    header, rows = _read_rows(path)
    i = next(i for i, r in enumerate(rows) if r[2] == "14")
    rows[i][1] = "Normal"
    _write_rows(path, header, rows)
    with pytest.raises(DataError, match=rf"train\.csv.*line {i + 2}.*'Normal'"):
        vinbigdata_records(root)


def test_vinbigdata_finding_without_box(vin):
    root, _ = vin
    path = root / "train.csv"
    header, rows = _read_rows(path)
    i = next(i for i, r in enumerate(rows) if r[2] != "14")
    rows[i][4:8] = ["", "", "", ""]
    _write_rows(path, header, rows)
    with pytest.raises(DataError, match=rf"train\.csv.*line {i + 2}"):
        vinbigdata_records(root)


def test_vinbigdata_missing_image(vin):
    root, expected = vin
    gone = next(iter(expected.values()))
    gone.path.unlink()
    with pytest.raises(DataError) as e:
        vinbigdata_records(root)
    assert "1 of 9" in str(e.value) and gone.path.name in str(e.value)


def test_vinbigdata_no_rows_and_empty(vin):
    root, _ = vin
    path = root / "train.csv"
    header, _ = _read_rows(path)
    _write_rows(path, header, [])
    with pytest.raises(DataError, match=r"train\.csv.*no rows"):
        vinbigdata_records(root)
    path.write_text("")
    with pytest.raises(DataError, match=r"train\.csv.*empty"):
        vinbigdata_records(root)


def test_vinbigdata_root_is_file(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("x\n")
    with pytest.raises(DataError, match="not a folder"):
        vinbigdata_records(f)
