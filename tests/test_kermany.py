"""``ddad prepare folder`` on the real chest X-rays in ../shared/data (skipped where absent)."""

import pandas as pd
import pytest

from conftest import KERMANY, requires_kermany
from ddadlib.cli import main
from ddadlib.dataset import PreparedDataset
from ddadlib.splits import _part_lists, split_sizes

pytestmark = requires_kermany()


@pytest.fixture(scope="module")
def kermany(tmp_path_factory):
    out = tmp_path_factory.mktemp("kermany") / "prepared"
    assert main(["prepare", "folder", "--root", str(KERMANY), "--out", str(out), "--quiet",
                 "--n-normal", "741", "--n-test", "300", "--seed", "0"]) == 0
    return PreparedDataset.load(out)


def test_sizes_and_labels(kermany):
    assert len(kermany) == 5216 and kermany.images.shape[1:] == (64, 64)
    assert split_sizes(kermany.split) == {"normal": 741, "pool_normal": 300,
                                          "pool_abnormal": 3575, "test_normal": 300,
                                          "test_abnormal": 300}


def test_patients_and_duplicates_stay_in_one_part(kermany):
    labels = pd.read_csv(KERMANY / "labels.csv", dtype=str)
    part_of = {}
    for part, ids in _part_lists(kermany.split).items():
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
