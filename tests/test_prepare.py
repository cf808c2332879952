import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import write_png

from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.prepare import default_sizes, prepare_folder
from ddadlib.data.splits import group_images, part_lists, split_sizes, validate_split
from ddadlib.errors import DataError


def test_prepare_folder_writes_a_loadable_dataset(csv_folder, tmp_path):
    out = tmp_path / "prepared"
    prepare_folder(csv_folder, out, size=32, n_normal=12, n_test=6, seed=0, log=lambda s: None)
    ds = PreparedDataset.load(out)
    assert ds.images.shape == (73, 32, 32) and ds.images.dtype == np.uint8
    assert ds.masks is None
    assert split_sizes(ds.split) == {
        "normal": 12,
        "pool_normal": 25,
        "pool_abnormal": 24,
        "test_normal": 6,
        "test_abnormal": 6,
    }
    assert list(ds.manifest.columns[:3]) == ["id", "label", "patient_id"]
    assert ds.info["source"] == "folder" and ds.info["size"] == 32
    assert ds.info["counts"] == {"normal": 43, "abnormal": 30}
    # patients and exact duplicates never cross parts
    groups = group_images(ds.manifest["patient_id"].tolist(), ds.manifest["md5"].tolist())
    validate_split(ds.split, ds.ids, ds.labels, groups)
    dups = ds.manifest[ds.manifest["id"].isin(["img/a07.png", "img/dup0.png", "img/dup2.png"])]
    assert dups["md5"].nunique() == 1
    assert not (out / ".partial").exists()


def test_images_are_resized_copies_of_the_files(csv_folder, tmp_path):
    from PIL import Image

    out = tmp_path / "p"
    prepare_folder(csv_folder, out, size=24, n_normal=12, n_test=6, log=lambda s: None)
    ds = PreparedDataset.load(out)
    i = ds.ids.index("img/b03.png")
    ref = np.asarray(
        Image.open(csv_folder / "img" / "b03.png").resize((24, 24), Image.Resampling.LANCZOS)
    )
    assert np.array_equal(ds.images[i], ref)
    assert (ds.manifest["orig_height"].iloc[i], ds.manifest["orig_width"].iloc[i]) == (40, 48)


def test_same_inputs_and_seed_write_the_same_split(class_folder, tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        prepare_folder(class_folder, out, size=16, seed=seed, log=lambda s: None)
    assert (a / "split.json").read_bytes() == (b / "split.json").read_bytes()
    assert (a / "split.json").read_bytes() != (c / "split.json").read_bytes()
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()


def test_default_sizes_are_stated_and_used(class_folder, tmp_path):
    assert default_sizes([0] * 1341 + [1] * 3875) == {"n_normal": 503, "n_test": 335}
    lines = []
    prepare_folder(class_folder, tmp_path / "d", size=16, log=lines.append)
    assert any(
        "Dn 12 normal; pools 13 normal + 15 abnormal; test 5 normal + 5 abnormal" in line
        for line in lines
    )


def test_refuses_to_overwrite_without_flag(csv_folder, tmp_path):
    out = tmp_path / "p"
    kw = dict(size=16, n_normal=12, n_test=6, log=lambda s: None)
    prepare_folder(csv_folder, out, **kw)
    before = (out / "split.json").read_bytes()
    with pytest.raises(DataError, match="already holds a prepared dataset.*--overwrite"):
        prepare_folder(csv_folder, out, seed=9, **kw)
    assert (out / "split.json").read_bytes() == before
    prepare_folder(csv_folder, out, seed=9, overwrite=True, **kw)
    assert (out / "split.json").read_bytes() != before


def test_corrupt_image_fails_naming_the_file_and_keeps_progress(csv_folder, tmp_path):
    bad = csv_folder / "img" / "b05.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    out = tmp_path / "p"
    kw = dict(size=16, n_normal=12, n_test=6, log=lambda s: None, workers=1)
    with pytest.raises(DataError, match=r"(?s)1 of 73 images could not be decoded.*b05\.png"):
        prepare_folder(csv_folder, out, **kw)
    assert not (out / "dataset.json").exists()
    assert list((out / ".partial").glob("chunk_*.npz"))
    # fixed file: the rerun retries it and finishes
    write_png(bad, 505, bright=30)
    prepare_folder(csv_folder, out, **kw)
    assert len(PreparedDataset.load(out)) == 73


def test_skip_mode_reports_and_saves_skipped_files(csv_folder, tmp_path):
    (csv_folder / "img" / "b05.png").write_bytes(b"garbage")
    out, lines = tmp_path / "p", []
    prepare_folder(
        csv_folder, out, size=16, n_normal=12, n_test=6, on_error="skip", log=lines.append
    )
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["id"].tolist() == ["img/b05.png"]
    assert "b05.png" in skipped["error"].iloc[0]
    assert any("skipped 1 of 73" in line for line in lines)
    ds = PreparedDataset.load(out)
    assert len(ds) == 72 and ds.info["n_skipped"] == 1


def test_resume_reuses_decoded_chunks(tmp_path, monkeypatch):
    import ddadlib.data.prepare as prep

    root = tmp_path / "many"
    for i in range(20):
        write_png(root / "normal" / f"{i}.png", i)
        write_png(root / "pneumonia" / f"{i}.png", 100 + i)
    monkeypatch.setattr(prep, "CHUNK", 8)

    class Interrupted(Exception):
        pass

    calls = []
    resumed = False
    real = prep._decode_chunk

    def flaky(paths, size):
        calls.append(len(paths))
        if len(calls) == 3 and not resumed:
            raise Interrupted
        return real(paths, size)

    monkeypatch.setattr(prep, "_decode_chunk", flaky)
    out = tmp_path / "p"
    with pytest.raises(Interrupted):
        prepare_folder(root, out, size=16, workers=1, log=lambda s: None)
    assert len(list((out / ".partial").glob("chunk_*.npz"))) == 2
    calls.clear()
    resumed = True
    prepare_folder(root, out, size=16, workers=1, log=lambda s: None)
    assert calls == [8, 8, 8]  # only the three chunks not done before
    assert len(PreparedDataset.load(out)) == 40


def test_parallel_decoding_matches_serial(class_folder, tmp_path):
    import ddadlib.data.prepare as prep

    prep_kw = dict(size=16, log=lambda s: None)
    prepare_folder(class_folder, tmp_path / "serial", workers=1, **prep_kw)
    old = prep.CHUNK
    prep.CHUNK = 7
    try:
        prepare_folder(class_folder, tmp_path / "parallel", workers=2, **prep_kw)
    finally:
        prep.CHUNK = old
    a = np.load(tmp_path / "serial" / "images.npy")
    b = np.load(tmp_path / "parallel" / "images.npy")
    assert np.array_equal(a, b)


def test_split_file_is_used_as_is(csv_folder, tmp_path):
    normal = [f"a{i:02d}.png" for i in list(range(0, 6)) + list(range(9, 12))]
    pool0 = [f"a{i:02d}.png" for i in range(6, 9)] + ["dup0.png", "dup1.png", "dup2.png"]
    split = {
        "train": {
            "0": normal,
            "unlabeled": {
                "0": pool0 + [f"a{i:02d}.png" for i in range(12, 30)],
                "1": [f"b{i:02d}.png" for i in range(10, 30)],
            },
        },
        "test": {
            "0": [f"a{i:02d}.png" for i in range(30, 39)],
            "1": [f"b{i:02d}.png" for i in range(10)],
        },
    }
    f = tmp_path / "authors_split.json"
    f.write_text(json.dumps(split))
    out = tmp_path / "p"
    prepare_folder(csv_folder, out, size=16, split_file=f, log=lambda s: None)
    ds = PreparedDataset.load(out)
    assert ds.split["test"]["1"][0] == "img/b00.png"
    assert split_sizes(ds.split)["normal"] == 9
    # a patient (pat0: a00-a02) split between Dn and the test set is refused
    split["test"]["0"].append("a00.png")
    split["train"]["0"].remove("a00.png")
    f.write_text(json.dumps(split))
    with pytest.raises(
        DataError,
        match=r"authors_split.json: patient 'pat0' has images in both "
        r"training \('img/a01.png' in normal\) and test",
    ):
        prepare_folder(csv_folder, tmp_path / "q", size=16, split_file=f, log=lambda s: None)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        PreparedDataset.load(tmp_path / "nothing")
    with pytest.raises(DataError, match="not a prepared dataset"):
        PreparedDataset.load(tmp_path)


def _side_of(split):
    side = {}
    for part, ids in part_lists(split).items():
        for i in ids:
            side[i] = part
    return side


def test_nih_style_folder_with_patients_of_both_labels(nih_folder, tmp_path, capsys):
    """The issue's ChestX-ray14 case: 8 of 40 patients have a normal and a pneumonia visit."""
    from ddadlib.cli import main

    out = tmp_path / "data"
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(nih_folder),
                "--out",
                str(out),
                "--quiet",
                "--size",
                "16",
                "--n-normal",
                "10",
                "--n-test",
                "6",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "8 patient/duplicate groups hold both normal and abnormal images" in printed
    ds = PreparedDataset.load(out)
    assert split_sizes(ds.split) == {
        "normal": 10,
        "pool_normal": 16,
        "pool_abnormal": 30,
        "test_normal": 6,
        "test_abnormal": 6,
    }
    side = _side_of(ds.split)
    parts = ds.manifest.assign(part=ds.manifest["id"].map(side)).groupby("patient_id")["part"]
    mixed = ds.manifest.groupby("patient_id")["label"].nunique() == 2
    for patient, held in parts.agg(set).items():
        assert (
            held <= {"test_normal", "test_abnormal"}
            or "test_normal" not in held
            and "test_abnormal" not in held
        ), (patient, held)
        if mixed[patient]:
            assert "normal" not in held  # never in Dn
    places = {frozenset(parts.get_group(p)) for p in mixed[mixed].index}
    # with this seed, mixed patients land both in the test set (both classes) and in the pools
    assert frozenset({"test_normal", "test_abnormal"}) in places
    assert frozenset({"pool_normal", "pool_abnormal"}) in places


def test_split_file_may_hold_a_patient_of_both_labels_in_test_or_pools(nih_folder, tmp_path):
    manifest = pd.read_csv(nih_folder / "labels.csv", dtype=str)
    by_patient = manifest.groupby("patient_id")["filename"].agg(list)
    mixed = [p for p, g in manifest.groupby("patient_id")["label"] if g.nunique() == 2]
    clean0 = [p for p, g in manifest.groupby("patient_id")["label"] if set(g) == {"0"}]
    clean1 = [p for p, g in manifest.groupby("patient_id")["label"] if set(g) == {"1"}]
    parts = {"normal": [], "pool": [], "test": []}
    for p in clean0[:8]:
        parts["normal"] += by_patient[p]
    for p in clean0[8:12] + clean1[:8] + mixed[:4]:
        parts["test"] += by_patient[p]
    for p in clean0[12:] + clean1[8:] + mixed[4:]:
        parts["pool"] += by_patient[p]

    def write(parts):
        def cls(names, label):
            return [n for n in names if n.startswith("NORMAL" if label == 0 else "PNEUMONIA")]

        split = {
            "train": {
                "0": parts["normal"],
                "unlabeled": {"0": cls(parts["pool"], 0), "1": cls(parts["pool"], 1)},
            },
            "test": {"0": cls(parts["test"], 0), "1": cls(parts["test"], 1)},
        }
        f = tmp_path / "split.json"
        f.write_text(json.dumps(split))
        return f

    out = tmp_path / "ok"
    prepare_folder(nih_folder, out, size=16, split_file=write(parts), log=lambda s: None)
    side = _side_of(PreparedDataset.load(out).split)
    assert {side[n] for n in by_patient[mixed[0]]} == {"test_normal", "test_abnormal"}
    assert {side[n] for n in by_patient[mixed[-1]]} == {"pool_normal", "pool_abnormal"}
    # a patient with images in the pools and the test set: named, with both sides
    moved = dict(parts, test=parts["test"] + [by_patient[mixed[-1]][0]])
    moved["pool"] = [n for n in parts["pool"] if n != by_patient[mixed[-1]][0]]
    with pytest.raises(
        DataError,
        match=rf"split.json: patient '{mixed[-1]}' has images in both "
        r"training \(.* in pool_abnormal\) and test \(",
    ):
        prepare_folder(
            nih_folder, tmp_path / "q", size=16, split_file=write(moved), log=lambda s: None
        )
    # a patient with a pneumonia visit may not give its normal visit to Dn
    normal_visit = by_patient[mixed[-1]][0]
    to_dn = dict(
        parts,
        normal=parts["normal"] + [normal_visit],
        pool=[n for n in parts["pool"] if n != normal_visit],
    )
    with pytest.raises(
        DataError,
        match=rf"patient '{mixed[-1]}' has image '{normal_visit}' in "
        r"Dn \(normal\) and an abnormal image",
    ):
        prepare_folder(
            nih_folder, tmp_path / "r", size=16, split_file=write(to_dn), log=lambda s: None
        )


def test_sizes_that_cannot_be_met_name_the_largest(nih_folder, tmp_path):
    # 24 normal images belong to patients without a pneumonia visit; Dn can hold no more
    with pytest.raises(
        DataError,
        match=r"Dn cannot hold exactly 25 normal images.*the largest "
        r"Dn that can be met with --seed 0 is (\d+)",
    ):
        prepare_folder(
            nih_folder, tmp_path / "a", size=16, n_normal=25, n_test=4, log=lambda s: None
        )


def test_one_class_fails_before_decoding(tmp_path, monkeypatch):
    import ddadlib.data.prepare as prep

    root = tmp_path / "only"
    for i in range(6):
        write_png(root / "NORMAL" / f"{i}.png", i, size=16)
    monkeypatch.setattr(prep, "decode_records", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(
        DataError,
        match=rf"{root}: no abnormal images \(label 1\) among the 6 "
        "images",
    ):
        prepare_folder(root, tmp_path / "o", size=16, log=lambda s: None)
    assert not (tmp_path / "o" / ".partial").exists()


def test_no_patient_ids_is_said(class_folder, csv_folder, tmp_path):
    lines = []
    prepare_folder(class_folder, tmp_path / "a", size=16, log=lines.append)
    assert any(
        line.startswith(f"warning: {class_folder}: no patient ids") and "--patient-regex" in line
        for line in lines
    )
    lines.clear()
    prepare_folder(csv_folder, tmp_path / "b", size=16, n_normal=12, n_test=6, log=lines.append)
    assert not any("no patient ids" in line for line in lines)


def test_patient_regex_groups_a_subfolder_dataset(nih_folder, tmp_path):
    """ChestX-ray14 names (00001992_002.png): the patient is the number before the visit."""
    root = tmp_path / "nolabels"
    shutil.copytree(nih_folder, root)
    (root / "labels.csv").unlink()
    out = tmp_path / "o"
    lines = []
    prepare_folder(
        root,
        out,
        size=16,
        n_normal=10,
        n_test=6,
        patient_regex=r"(\d{8})_\d{3}\.png$",
        log=lines.append,
    )
    assert not any("no patient ids" in line for line in lines)
    ds = PreparedDataset.load(out)
    assert ds.manifest["patient_id"].nunique() == 40
    assert ds.info["options"]["patient_regex"] == r"(\d{8})_\d{3}\.png$"
    labels = pd.read_csv(nih_folder / "labels.csv", dtype=str).set_index("filename")
    got = ds.manifest.set_index("id")["patient_id"]
    assert got.to_dict() == labels["patient_id"].to_dict()
    groups = group_images(ds.manifest["patient_id"].tolist(), ds.manifest["md5"].tolist())
    validate_split(ds.split, ds.ids, ds.labels, groups)
