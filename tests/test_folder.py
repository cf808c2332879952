import pytest

from ddadlib.data.folder import folder_records
from ddadlib.errors import DataError


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


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,label\nimg/a00.png,0\n", "missing column.*filename.*found: file, label"),
        ("filename,label\nimg/a00.png,2\n", r"line 2: label '2'.*not 0 \(normal\) or 1"),
        ("filename,label\nimg/a00.png,yes\nimg/a01.png,1\n", "label 'yes'"),
        (
            "filename,label\nimg/zz.png,1\nimg/a00.png,0\n",
            r"1 listed image file\(s\) not found.*zz.png",
        ),
        ("filename,label\n", "no rows"),
        ("", "empty"),
        ("filename,label\nimg/a00.png,0\nimg/a00.png,0\n", "more than once"),
    ],
)
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


def test_unknown_subfolder_is_refused_with_the_mapping_to_pass(class_folder):
    from conftest import write_png

    write_png(class_folder / "healthy" / "h0.png", 900)
    with pytest.raises(
        DataError,
        match=r"subfolder\(s\) healthy/ are neither a normal name.*"
        r"--normal-names healthy or --abnormal-names healthy",
    ):
        folder_records(class_folder)
    records, how = folder_records(class_folder, normal_names=["healthy"])
    assert {r.label for r in records if r.id.startswith("healthy/")} == {0}
    assert "healthy/ -> 0 (normal, 1 images)" in how
    records, _ = folder_records(class_folder, abnormal_names=["Healthy", "normal"])
    assert {r.id.split("/")[0]: r.label for r in records}["Normal"] == 1
    with pytest.raises(DataError, match="healthy given as both normal and abnormal"):
        folder_records(class_folder, normal_names=["healthy"], abnormal_names=["healthy"])
    with pytest.raises(DataError, match="no subfolder with images is named helthy"):
        folder_records(class_folder, normal_names=["healthy", "helthy"])


def test_known_finding_names_are_abnormal(tmp_path):
    from conftest import write_png

    for i, name in enumerate(("NORMAL", "PNEUMONIA", "Viral Pneumonia", "COVID", "Effusion")):
        write_png(tmp_path / "r" / name / "x.png", i)
    records, _ = folder_records(tmp_path / "r")
    assert {r.finding: r.label for r in records} == {
        "NORMAL": 0,
        "PNEUMONIA": 1,
        "Viral Pneumonia": 1,
        "COVID": 1,
        "Effusion": 1,
    }


@pytest.mark.parametrize("entry", ["../outside.png", "{abs}"])
def test_labels_csv_entries_outside_the_root_are_refused(csv_folder, entry):
    from conftest import write_png

    outside = write_png(csv_folder.parent / "outside.png", 3)  # exists: only the path is wrong
    entry = entry.format(abs=outside)
    (csv_folder / "labels.csv").write_text(f"filename,label\nimg/a00.png,0\n{entry},1\n")
    with pytest.raises(
        DataError,
        match=rf"labels.csv: line 3: filename '{entry}' points outside "
        rf"{csv_folder}",
    ):
        folder_records(csv_folder)


def test_non_utf8_file_name_is_a_clear_error(class_folder, capsys, tmp_path):
    import os

    from ddadlib.cli import main

    png = class_folder / "Normal" / "n00.png"
    os.rename(png, os.path.join(os.fsencode(png.parent), b"caf\xe9.png"))
    with pytest.raises(
        DataError,
        match=r"1 file name\(s\) are not valid UTF-8 "
        r"\(e.g. Normal/caf\\xe9.png\); rename them",
    ):
        folder_records(class_folder)
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(class_folder),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("ddad prepare: error: ") and err.count("\n") == 1


KERMANY_REGEX = r"(person\d+|(?:NORMAL2-)?IM-\d+)"


def test_patient_regex_on_kermany_names(tmp_path):
    from conftest import write_png

    from ddadlib.data.folder import patient_ids_from_names

    names = [
        "PNEUMONIA/person123_bacteria_456.jpeg",
        "PNEUMONIA/person123_virus_9.jpeg",
        "NORMAL/IM-0001-0001.jpeg",
        "NORMAL/NORMAL2-IM-0012-0001.jpeg",
    ]
    want = ["person123", "person123", "IM-0001", "NORMAL2-IM-0012"]
    assert patient_ids_from_names(names, KERMANY_REGEX, "k") == want
    assert patient_ids_from_names(names, r"(?P<patient>person\d+|(?:NORMAL2-)?IM-\d+)", "k") == want
    assert patient_ids_from_names(["a/00001992_002.png"], r"(\d{8})_\d{3}\.png$", "x") == [
        "00001992"
    ]
    for name in names:
        write_png(tmp_path / "k" / name, len(name), size=16)
    records, how = folder_records(tmp_path / "k", patient_regex=KERMANY_REGEX)
    assert sorted(r.patient_id for r in records) == sorted(want)
    assert "patient ids from --patient-regex" in how
    write_png(tmp_path / "k" / "NORMAL" / "odd.jpeg", 1, size=16)
    with pytest.raises(
        DataError,
        match=r"k: --patient-regex .* finds no patient id in 1 of 5 "
        r"file names \(e.g. NORMAL/odd.jpeg\)",
    ):
        folder_records(tmp_path / "k", patient_regex=KERMANY_REGEX)
    with pytest.raises(DataError, match=r"--patient-regex '\(' is not a valid regular"):
        folder_records(tmp_path / "k", patient_regex="(")


def test_patient_regex_and_csv_patient_ids_do_not_mix(csv_folder):
    with pytest.raises(DataError, match="has patient ids already; --patient-regex"):
        folder_records(csv_folder, patient_regex=r"(a\d)")
    with pytest.raises(DataError, match="--normal-names / --abnormal-names name class subfolders"):
        folder_records(csv_folder, normal_names=["healthy"])


@pytest.mark.parametrize(
    "regex, name, patient",
    [
        (KERMANY_REGEX, "PNEUMONIA/person123_bacteria_456.jpeg", "person123"),
        (r"(\d{8})_\d{3}\.png$", "images/00001992_002.png", "00001992"),
        (r"(patient\d+)/", "train/patient00001/study1/view1_frontal.jpg", "patient00001"),
        (r"/(p\d{8})/", "files/p10/p10000032/s50414267/02aa804e.jpg", "p10000032"),
    ],
)
def test_the_readme_regexes(regex, name, patient):
    from pathlib import Path

    from ddadlib.data.folder import patient_ids_from_names

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"`'{regex.replace('|', chr(92) + '|')}'`" in readme
    assert patient_ids_from_names([name], regex, "x") == [patient]
