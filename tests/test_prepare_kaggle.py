"""``ddad prepare rsna`` / ``vinbigdata`` / ``folder`` on small DICOM files in the Kaggle layouts."""

import json

import pandas as pd
import pytest
from conftest import write_png
from dicom_fixtures import (
    SHAPE,
    bright_square,
    make_rsna_download,
    make_vinbigdata_download,
    pattern_image,
    write_dicom,
)

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.splits import part_lists, split_sizes


@pytest.fixture
def rsna(tmp_path):
    root = tmp_path / "rsna"
    expected = make_rsna_download(root, n_normal=14, n_opacity=10, n_other=4)
    return root, expected


def test_prepare_rsna(rsna, tmp_path, capsys):
    root, expected = rsna
    out = tmp_path / "rsna64"
    assert (
        main(
            [
                "prepare",
                "rsna",
                "--root",
                str(root),
                "--out",
                str(out),
                "--quiet",
                "--n-normal",
                "6",
                "--n-test",
                "3",
                "--size",
                "32",
            ]
        )
        == 0
    )
    assert "24 images (14 normal, 10 abnormal)" in capsys.readouterr().out
    ds = PreparedDataset.load(out)
    assert sorted(ds.ids) == sorted(expected)
    assert split_sizes(ds.split) == {
        "normal": 6,
        "pool_normal": 5,
        "pool_abnormal": 7,
        "test_normal": 3,
        "test_abnormal": 3,
    }
    assert all(i.startswith("stage_2_train_images/") and i.endswith(".dcm") for i in ds.ids)
    # every image displays the same pattern: MONOCHROME1 inverted, 12/16 bit scaled to 8 bit
    rows, cols = bright_square()
    h, w = SHAPE
    r = slice(rows.start * 32 // h + 1, rows.stop * 32 // h - 1)
    c = slice(cols.start * 32 // w + 1, cols.stop * 32 // w - 1)
    assert (ds.images[:, r, c].mean(axis=(1, 2)) > 200).all()
    assert (ds.images[:, -3:, :4].mean(axis=(1, 2)) < 60).all()
    # boxes scaled from the original (40 x 48) image to 32 x 32
    for i, id_ in enumerate(ds.ids):
        want = [b.scaled(32 / w, 32 / h) for b in expected[id_].boxes]
        got = ds.boxes(i)
        assert len(got) == len(want)
        for g, e in zip(sorted(got, key=lambda b: b.x), sorted(want, key=lambda b: b.x)):
            assert (g.x, g.y, g.w, g.h) == pytest.approx((e.x, e.y, e.w, e.h), abs=0.01)
            assert g.label == "Lung Opacity"
    assert ds.info["source"] == "rsna"


def test_prepare_vinbigdata_with_authors_split_file(tmp_path):
    root = tmp_path / "vin"
    expected = make_vinbigdata_download(root, n_normal=10, n_abnormal=8)
    ids = sorted(expected)
    normal = [i for i in ids if expected[i].label == 0]
    abnormal = [i for i in ids if expected[i].label == 1]
    stem = lambda i: i.split("/")[-1].replace(".dicom", ".png")  # noqa: E731
    split = {
        "train": {
            "0": [stem(i) for i in normal[:4]],
            "unlabeled": {
                "0": [stem(i) for i in normal[4:8]],
                "1": [stem(i) for i in abnormal[:5]],
            },
        },
        "test": {"0": [stem(i) for i in normal[8:]], "1": [stem(i) for i in abnormal[5:]]},
    }
    split_file = tmp_path / "vin_split.json"
    split_file.write_text(json.dumps(split))
    out = tmp_path / "vin64"
    assert (
        main(
            [
                "prepare",
                "vinbigdata",
                "--root",
                str(root),
                "--out",
                str(out),
                "--quiet",
                "--split",
                str(split_file),
            ]
        )
        == 0
    )
    ds = PreparedDataset.load(out)
    assert ds.split["train"]["0"] == normal[:4]
    assert ds.split["test"]["1"] == abnormal[5:]
    i = ds.ids.index(abnormal[0])
    assert len(ds.boxes(i)) == len(expected[abnormal[0]].boxes)
    assert ds.manifest["finding"].iloc[ds.ids.index(normal[0])] == "No finding"


def test_corrupt_dicom_in_a_download_is_skipped_and_reported(rsna, tmp_path, capsys):
    root, expected = rsna
    victim = sorted(expected)[0]
    (root / victim).write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    out = tmp_path / "o"
    assert (
        main(
            [
                "prepare",
                "rsna",
                "--root",
                str(root),
                "--out",
                str(out),
                "--quiet",
                "--n-normal",
                "5",
                "--n-test",
                "3",
                "--size",
                "16",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "skipped 1 of 24 images" in captured.out and victim in captured.out
    assert pd.read_csv(out / "skipped.csv")["id"].tolist() == [victim]
    assert len(PreparedDataset.load(out)) == 23
    # the same with --on-error fail stops and names the file
    assert (
        main(
            [
                "prepare",
                "rsna",
                "--root",
                str(root),
                "--out",
                str(tmp_path / "p"),
                "--quiet",
                "--n-normal",
                "5",
                "--n-test",
                "3",
                "--on-error",
                "fail",
            ]
        )
        == 2
    )
    assert victim.split("/")[-1] in capsys.readouterr().err


def test_paper_sizes_are_the_default_and_too_small_downloads_say_so(rsna, tmp_path, capsys):
    root, _ = rsna
    assert (
        main(["prepare", "rsna", "--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    )
    err = capsys.readouterr().err
    assert "Dn 3,851 normal and a test set of 1,000 per class" in err
    assert not (tmp_path / "o" / "dataset.json").exists()


def test_missing_csv_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "prepare",
                "vinbigdata",
                "--root",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "train.csv" in capsys.readouterr().err


def test_folder_of_dicom_and_png(tmp_path, capsys):
    root = tmp_path / "mixed"
    img = pattern_image()
    for i in range(8):
        write_dicom(root / "normal" / f"n{i}.dcm", img, photometric="MONOCHROME2")
        write_dicom(
            root / "abnormal" / f"a{i}.dicom",
            img.max() - img,
            photometric="MONOCHROME1",
            transfer_syntax="rle" if i % 2 else "explicit_le",
        )
    out = tmp_path / "o"
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(root),
                "--out",
                str(out),
                "--quiet",
                "--n-normal",
                "1",
                "--n-test",
                "2",
            ]
        )
        == 2
    )
    # all sixteen files show the same picture: exact duplicates, one group that no split can cut
    assert "the largest group holds 16 images" in capsys.readouterr().err
    for i in range(8):
        write_png(root / "normal" / f"p{i}.png", i)
        write_png(root / "abnormal" / f"q{i}.png", 50 + i)
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(root),
                "--out",
                str(out),
                "--quiet",
                "--n-normal",
                "1",
                "--n-test",
                "2",
            ]
        )
        == 0
    )
    ds = PreparedDataset.load(out)
    assert len(ds) == 32 and ds.info["n_groups"] == 17
    dcm = [i for i in ds.ids if i.endswith((".dcm", ".dicom"))]
    assert (ds.images[ds.indices(dcm)] == ds.images[ds.indices(dcm[:1])]).all()
    parts = {p: set(ids) for p, ids in part_lists(ds.split).items()}
    holding = {p for p, ids in parts.items() if ids & set(dcm)}
    assert holding <= {"pool_normal", "pool_abnormal"}


def test_data_prep_scripts_forward_to_the_cli(tmp_path):
    import subprocess
    import sys

    for kind in ("rsna", "vinbigdata", "folder"):
        res = subprocess.run(
            [sys.executable, f"data_prep/prepare_{kind}.py", "--help"],
            capture_output=True,
            text=True,
            cwd=str(Path_root()),
        )
        assert res.returncode == 0 and f"ddad prepare {kind}" in res.stdout


def Path_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
