import numpy as np
import pytest

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.prepare import prepare_synthetic
from ddadlib.data.splits import draw_unlabeled, split_sizes
from ddadlib.errors import DataError

SMALL = dict(n_normal=30, n_test=10, n_unlabeled=24, log=lambda s: None)


def test_synthetic_dataset_layout(tmp_path):
    ds = PreparedDataset.load(prepare_synthetic(tmp_path / "s", seed=2, **SMALL))
    assert split_sizes(ds.split) == {
        "normal": 30,
        "pool_normal": 24,
        "pool_abnormal": 24,
        "test_normal": 10,
        "test_abnormal": 10,
    }
    assert ds.images.shape == (98, 64, 64) and ds.masks.shape == (98, 64, 64)
    has_mask = ds.masks.reshape(len(ds), -1).any(axis=1)
    assert np.array_equal(has_mask, ds.labels == 1)
    abnormal = ds.manifest[ds.manifest["label"] == 1]
    assert set(abnormal["finding"]) >= {"opacity", "nodule", "effusion", "cardiomegaly"}
    assert (abnormal["severity"] > 0).all() and (abnormal["boxes"] != "[]").all()
    # ids and order say nothing about the label
    assert not np.array_equal(ds.labels, np.sort(ds.labels))
    assert ds.info["source"] == "synthetic"
    prov = ds.info["provenance"]
    assert prov["versions"]["numpy"] == np.__version__ and "git_commit" in prov


def test_same_seed_same_files(tmp_path):
    a = prepare_synthetic(tmp_path / "a", seed=5, **SMALL)
    b = prepare_synthetic(tmp_path / "b", seed=5, **SMALL)
    c = prepare_synthetic(tmp_path / "c", seed=6, **SMALL)
    for name in ("images.npy", "masks.npy", "manifest.csv", "split.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "images.npy").read_bytes() != (c / "images.npy").read_bytes()


def test_ar_fixes_the_pools(tmp_path, capsys):
    assert (
        main(
            [
                "prepare",
                "synthetic",
                "--out",
                str(tmp_path / "s"),
                "--n-normal",
                "20",
                "--n-test",
                "5",
                "--n-unlabeled",
                "30",
                "--ar",
                "0.3",
                "--size",
                "32",
            ]
        )
        == 0
    )
    ds = PreparedDataset.load(tmp_path / "s")
    s = split_sizes(ds.split)
    assert (s["pool_normal"], s["pool_abnormal"]) == (21, 9)
    assert len(draw_unlabeled(ds.split, 30, 0.3)) == 30
    with pytest.raises(DataError, match="AR must be between 0.3 and 0.3"):
        draw_unlabeled(ds.split, 30, 0.5)


def test_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "synthetic", "--out", str(tmp_path / "s"), "--ar", "1.5"])
    assert exc.value.code == 2
    assert "--ar: must be between 0 and 1" in capsys.readouterr().err
    assert main(["prepare", "synthetic", "--out", str(tmp_path / "s"), "--size", "16"]) == 2
    assert "--size must be between 32 and 1024" in capsys.readouterr().err
