import pytest

from ddadlib.errors import DataError
from ddadlib.folder import folder_records


def test_subfolders_map_normal_names(class_folder):
    records, how = folder_records(class_folder)
    assert len(records) == 50
    labels = {r.id.split("/")[0]: r.label for r in records}
    assert labels == {"Normal": 0, "No Finding": 0, "PNEUMONIA": 1}
    assert "PNEUMONIA/ -> 1 (abnormal, 20 images)" in how
    assert "Normal/ -> 0 (normal, 20 images)" in how
    assert any(r.id == "No Finding/sub/m03.png" for r in records)


def test_labels_csv_wins(csv_folder):
    records, how = folder_records(csv_folder)
    assert "labels.csv" in how
    assert len(records) == 73
    r = next(r for r in records if r.id == "img/a04.png")
    assert (r.label, r.patient_id) == (0, "pat1")


@pytest.mark.parametrize("content, message", [
    ("file,label\nimg/a00.png,0\n", "missing column.*filename.*found: file, label"),
    ("filename,label\nimg/a00.png,2\n", r"line 2: label '2'.*not 0 \(normal\) or 1"),
    ("filename,label\nimg/a00.png,yes\nimg/a01.png,1\n", "label 'yes'"),
    ("filename,label\nimg/zz.png,1\nimg/a00.png,0\n", r"1 listed image file\(s\) not found.*zz.png"),
    ("filename,label\n", "no rows"),
    ("", "empty"),
    ("filename,label\nimg/a00.png,0\nimg/a00.png,0\n", "more than once"),
])
def test_labels_csv_errors_name_the_file(csv_folder, tmp_path, content, message):
    f = tmp_path / "bad_labels.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        folder_records(csv_folder, labels=f)
    assert "bad_labels.csv" in str(err.value)


def test_missing_root_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        folder_records(tmp_path / "absent")
    (tmp_path / "empty" / "normal").mkdir(parents=True)
    with pytest.raises(DataError, match="no labels.csv and no class subfolders"):
        folder_records(tmp_path / "empty")
    with pytest.raises(DataError, match="labels file not found"):
        folder_records(tmp_path, labels=tmp_path / "nope.csv")
