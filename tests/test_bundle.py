"""The bundled real chest X-rays (Kermany et al., CC BY 4.0): the file, its rebuild, its notice,
``ddad prepare kermany`` and ``ddad info``."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KERMANY, requires_kermany

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.imaging import read_image, resize
from ddadlib.data.kermany import BUNDLE, NOTICE, bundle_sha256, load_bundle, select_rows
from ddadlib.data.splits import ar_range, max_unlabeled, part_lists, split_sizes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("kermany64") / "data"
    assert main(["prepare", "kermany", "--out", str(out)]) == 0
    return PreparedDataset.load(out)


def test_bundle_is_small_and_holds_both_classes_by_patient(bundle):
    images, frame = bundle
    assert BUNDLE.stat().st_size < 8_000_000
    assert images.shape == (len(frame), 64, 64) and images.dtype == np.uint8
    counts = frame["label"].value_counts().to_dict()
    assert counts[0] == 1341 and 1300 <= counts[1] <= 1400
    assert frame["id"].is_unique and (frame["patient_id"] != "").all()
    assert (frame.groupby("patient_id")["label"].nunique() == 1).all()
    assert set(frame["finding"]) == {"NORMAL", "PNEUMONIA"}
    assert images.std() > 20  # real images, not blank ones


def test_pneumonia_sample_takes_whole_patients_with_a_seed():
    rows = pd.DataFrame(
        {
            "filename": [f"f{i}" for i in range(12)],
            "label": [0, 0] + [1] * 10,
            "patient_id": ["n0", "n1", "a", "a", "a", "b", "c", "c", "d", "e", "e", "e"],
        }
    )
    picked = select_rows(rows, n_pneumonia=4, seed=3)
    assert picked.index.is_monotonic_increasing
    assert {"n0", "n1"} <= set(picked["patient_id"])
    abnormal = picked[picked["label"] == 1]
    assert len(abnormal) >= 4
    for p in abnormal["patient_id"].unique():  # every sampled patient whole
        assert (abnormal["patient_id"] == p).sum() == (rows["patient_id"] == p).sum()
    assert picked.equals(select_rows(rows, n_pneumonia=4, seed=3))


@requires_kermany()
def test_script_rebuilds_the_bundle_byte_for_byte(tmp_path, bundle):
    out = tmp_path / "kermany64.npz"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_kermany_bundle.py"),
            "--shared",
            str(KERMANY),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == BUNDLE.read_bytes()
    # lossless: the stored pixels are the source's, resized as `ddad prepare folder` does
    images, frame = bundle
    for i in (0, 700, len(frame) - 1):
        assert np.array_equal(images[i], resize(read_image(KERMANY / frame["id"][i]), 64))


def test_notice_travels_with_the_bundle():
    notice = NOTICE.read_text()
    assert notice == (ROOT / "DATA_NOTICE.md").read_text()
    for words in (
        "Kermany",
        "Zhang",
        "Goldbaum",
        "Mendeley Data",
        "CC BY 4.0",
        "Cell 172(5):1122-1131",
        "64x64",
        "subset",
    ):
        assert words in notice
    readme = (ROOT / "README.md").read_text()
    licences = readme[readme.index("## Data licences") :]
    assert "CC BY 4.0" in licences and "DATA_NOTICE.md" in licences


def test_prepare_kermany_lets_m_500_at_every_ar(prepared):
    assert prepared.info["source"] == "kermany"
    s = split_sizes(prepared.split)
    assert s == {
        "normal": 541,
        "pool_normal": 500,
        "pool_abnormal": 1050,
        "test_normal": 300,
        "test_abnormal": 300,
    }
    assert ar_range(prepared.split, 500) == (0.0, 1.0)
    assert min(max_unlabeled(prepared.split, ar / 10) for ar in range(11)) == 500
    # patients stay on one side
    pid = dict(zip(prepared.manifest["id"], prepared.manifest["patient_id"]))
    sides = [
        {pid[i] for i in ids}
        for part, ids in part_lists(prepared.split).items()
        if not part.startswith("pool")
    ]
    pools = {
        pid[i]
        for part, ids in part_lists(prepared.split).items()
        if part.startswith("pool")
        for i in ids
    }
    sides.append(pools)
    assert sum(len(x) for x in sides) == len(set().union(*sides))


def test_dataset_json_records_licence_credit_and_bundle(prepared):
    about = json.loads((prepared.root / "dataset.json").read_text())["data"]
    assert about["licence"].startswith("CC BY 4.0")
    assert "Kermany" in about["credit"] and "Cell 172(5):1122-1131" in about["credit"]
    assert "64x64" in about["modifications"]
    assert about["bundle_sha256"] == bundle_sha256()


def test_info_shows_the_licence(prepared, capsys):
    assert main(["info", "--data", str(prepared.root), "--n-unlabeled", "500"]) == 0
    out = capsys.readouterr().out
    assert "source kermany" in out and "AR from 0 to 1" in out
    assert "CC BY 4.0" in out and "Kermany" in out


def test_prepare_kermany_smaller_size_and_bad_size(tmp_path, capsys):
    out = tmp_path / "k32"
    assert main(["prepare", "kermany", "--out", str(out), "--size", "32", "--seed", "1"]) == 0
    assert PreparedDataset.load(out).size == 32
    assert main(["prepare", "kermany", "--out", str(tmp_path / "k99"), "--size", "99"]) == 2
    assert "--size must be between 8 and 64" in capsys.readouterr().err
    assert not (tmp_path / "k99").exists()


def test_failed_prepare_removes_the_folder_it_created(class_folder, tmp_path, capsys):
    out = tmp_path / "new" / "data"
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(class_folder),
                "--out",
                str(out),
                "--size",
                "16",
                "--quiet",
                "--workers",
                "1",
                "--n-normal",
                "1000",
            ]
        )
        == 2
    )
    assert "cannot split" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    # a folder the user made stays
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main(["prepare", "kermany", "--out", str(mine), "--n-normal", "5000"]) == 2
    assert mine.is_dir()
