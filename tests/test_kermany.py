"""``ddad prepare folder`` on the real chest X-rays in ../shared/data (skipped where absent)."""

import pandas as pd
import pytest
from conftest import KERMANY, requires_kermany

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.splits import part_lists, split_sizes

pytestmark = requires_kermany()


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    out = tmp_path_factory.mktemp("kermany") / "prepared"
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(KERMANY),
                "--out",
                str(out),
                "--quiet",
                "--n-normal",
                "741",
                "--n-test",
                "300",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    return PreparedDataset.load(out)


def test_sizes_and_labels(kermany):
    assert len(kermany) == 5216 and kermany.images.shape[1:] == (64, 64)
    assert split_sizes(kermany.split) == {
        "normal": 741,
        "pool_normal": 300,
        "pool_abnormal": 3575,
        "test_normal": 300,
        "test_abnormal": 300,
    }


def test_patients_and_duplicates_stay_in_one_part(kermany):
    labels = pd.read_csv(KERMANY / "labels.csv", dtype=str)
    part_of = {}
    for part, ids in part_lists(kermany.split).items():
        for i in ids:
            part_of[i] = "pools" if part.startswith("pool") else part
    labels["part"] = labels["filename"].map(part_of)
    assert labels["part"].notna().all()
    assert (labels.groupby("patient_id")["part"].nunique() == 1).all()
    dup = labels[labels["md5"].duplicated(keep=False)]
    assert dup["md5"].nunique() == 15
    assert (dup.groupby("md5")["part"].nunique() == 1).all()
    # our own pixel digests find the same duplicate groups as the file's md5 column
    ours = kermany.manifest.set_index("id")["md5"]
    for _, grp in dup.groupby("md5"):
        assert ours[grp["filename"]].nunique() == 1


def test_images_look_like_the_files(kermany):
    import numpy as np
    from PIL import Image

    i = kermany.ids.index("NORMAL/IM-0115-0001.png")
    ref = Image.open(KERMANY / "NORMAL" / "IM-0115-0001.png").convert("L")
    ref = np.asarray(ref.resize((64, 64), Image.Resampling.LANCZOS))
    assert np.array_equal(kermany.images[i], ref)


KERMANY_REGEX = r"(person\d+|(?:NORMAL2-)?IM-\d+)"


def test_patient_regex_finds_the_patient_ids_of_labels_csv():
    from ddadlib.data.folder import patient_ids_from_names

    labels = pd.read_csv(KERMANY / "labels.csv", dtype=str)
    got = patient_ids_from_names(labels["filename"].tolist(), KERMANY_REGEX, str(KERMANY))
    assert got == labels["patient_id"].tolist()  # all 5,216 names, 2,846 patients


def test_class_subfolders_with_patient_regex(tmp_path, capsys):
    """Subfolder mode on 40 real images (symlinks, no labels.csv), patients from the names."""
    labels = pd.read_csv(KERMANY / "labels.csv", dtype=str)
    # the first 20 of each class in name order: patients with several images among them
    picked = pd.concat(
        [labels[labels["label"] == c].sort_values("filename").head(20) for c in ("0", "1")]
    )
    root = tmp_path / "kermany"
    for name in picked["filename"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(KERMANY / name)
    out = tmp_path / "o"
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(root),
                "--out",
                str(tmp_path / "plain"),
                "--quiet",
                "--size",
                "32",
                "--n-normal",
                "8",
                "--n-test",
                "5",
            ]
        )
        == 0
    )
    assert f"warning: {root}: no patient ids" in capsys.readouterr().out
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
                "--size",
                "32",
                "--n-normal",
                "8",
                "--n-test",
                "5",
                "--patient-regex",
                KERMANY_REGEX,
            ]
        )
        == 0
    )
    assert "no patient ids" not in capsys.readouterr().out
    ds = PreparedDataset.load(out)
    want = picked.set_index("filename")["patient_id"]
    assert ds.manifest.set_index("id")["patient_id"].to_dict() == want.to_dict()
    assert want.nunique() < len(want)  # some patients have several images here
    side = {
        i: ("test" if part.startswith("test") else "training")
        for part, ids in part_lists(ds.split).items()
        for i in ids
    }
    by_patient = ds.manifest.assign(side=ds.manifest["id"].map(side)).groupby("patient_id")
    assert (by_patient["side"].nunique() == 1).all()
