"""``ddad score``: scores a user can read (percentile among the run's normal test images, flag at
95% specificity) and the command's guards (issue 10, parts 3 and 4)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset
from ddadlib.runs.config import run_config
from ddadlib.runs.evaluate import evaluate_run
from ddadlib.runs.score import score_images
from ddadlib.runs.train import train_run

quiet = {"log": lambda s: None}
SCORES = ("rec", "rec_ensemble", "intra", "inter")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_synthetic):
    """The same finished run twice: evaluated, and not evaluated."""
    root = tmp_path_factory.mktemp("readout")
    cfg = run_config(
        tiny_synthetic, k=2, epochs=1, ar=0.5, n_unlabeled=10, seed=3, device="cpu", **quiet
    )
    train_run(root / "bare" / "run", cfg, progress=False, **quiet)
    shutil.copytree(root / "bare" / "run", root / "evaluated")
    evaluate_run(root / "evaluated", n_boot=10, figures=False, **quiet)
    return root / "evaluated", root / "bare" / "run"


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(g.integers(0, 255, (50, 50), dtype=np.uint8)).save(folder / f"x{i}.png")
    return folder


def test_operating_point_is_the_one_of_sens_at_95_spec():
    from ddadlib.scoring.metrics import operating_point, sensitivity_at_specificity

    g = np.random.default_rng(1)
    labels = np.r_[np.zeros(200), np.ones(100)].astype(int)
    scores = np.r_[g.normal(0, 1, 200), g.normal(1, 1, 100)]
    threshold, sens = operating_point(labels, scores)
    assert sens == sensitivity_at_specificity(labels, scores)
    assert np.sum(scores[labels == 0] > threshold) == 10  # 5% of 200: the most allowed
    assert np.mean(scores[labels == 1] > threshold) == sens
    # fewer than 20 normal images: only scores above all of them are flagged
    threshold, _ = operating_point(labels[190:], scores[190:])
    assert threshold == scores[190:200].max()


def test_scores_of_the_test_images_read_as_their_evaluation(runs, tiny_synthetic):
    run = runs[0]
    ds = PreparedDataset.load(tiny_synthetic)
    idx = np.concatenate([ds.part("test_normal"), ds.part("test_abnormal")])
    frame = score_images(run, ds.images[idx], [ds.ids[i] for i in idx], device="cpu")
    metrics = json.loads((run / "metrics.json").read_text())
    labels = ds.labels[idx]
    n0, n1 = (labels == 0).sum(), (labels == 1).sum()
    for name in SCORES:
        assert {f"{name}_pct", f"{name}_flag"} <= set(frame.columns)
        pct, flag = frame[f"{name}_pct"].to_numpy(), frame[f"{name}_flag"].to_numpy()
        assert ((0 <= pct) & (pct <= 100)).all() and set(np.unique(flag)) <= {0, 1}
        assert pct[labels == 0].max() == 100  # the highest normal test score is above all
        assert flag[labels == 0].sum() <= 0.05 * n0  # 95% specificity
        if name != "rec":  # rec in metrics is the mean over B's networks, here network 1
            sens = metrics[name]["sens_at_95_spec"]
            assert flag[labels == 1].sum() == round(sens * n1), name
    assert set(frame.attrs["thresholds"]) == set(SCORES)


def test_score_writes_pct_and_flag_columns(runs, images, tmp_path, capsys):
    csv = tmp_path / "s.csv"
    assert main(["score", "--run", str(runs[0]), "--images", str(images), "--out", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["id"] + [c for n in SCORES for c in (n, f"{n}_pct", f"{n}_flag")]
    out = capsys.readouterr().out
    assert "flagged at 95% specificity" in out


def test_score_of_a_run_not_evaluated_says_how_to_get_them(runs, images, tmp_path, capsys):
    csv = tmp_path / "s.csv"
    assert main(["score", "--run", str(runs[1]), "--images", str(images), "--out", str(csv)]) == 0
    assert list(pd.read_csv(csv).columns) == ["id", *SCORES]
    out = capsys.readouterr().out
    assert "not evaluated" in out and f"ddad evaluate --run {runs[1]}" in out


def test_score_out_that_is_a_folder_is_refused(runs, images, tmp_path, capsys):
    (tmp_path / "dir").mkdir()
    for extra in ([], ["--overwrite"]):
        assert (
            main(
                [
                    "score",
                    "--run",
                    str(runs[0]),
                    "--images",
                    str(images),
                    "--out",
                    str(tmp_path / "dir"),
                    *extra,
                ]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "is a folder" in err and len(err.strip().splitlines()) == 1


def test_score_does_not_follow_links_out_of_the_folder(runs, images, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(outside / "secret.png")
    (images / "link.png").symlink_to(outside / "secret.png")
    (images / "linked_dir").symlink_to(outside, target_is_directory=True)
    (images / "inside.png").symlink_to(images / "x0.png")  # a link within the folder is kept
    csv = tmp_path / "s.csv"
    assert main(["score", "--run", str(runs[0]), "--images", str(images), "--out", str(csv)]) == 0
    ids = list(pd.read_csv(csv)["id"])
    assert ids == ["inside.png", "x0.png", "x1.png", "x2.png"]
    assert "left out 2 symbolic link(s)" in capsys.readouterr().out


def test_image_above_pillows_limit_gives_one_line(runs, images, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 50 x 50 is over twice the limit
    assert (
        main(
            [
                "score",
                "--run",
                str(runs[0]),
                "--images",
                str(images),
                "--out",
                str(tmp_path / "s.csv"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    # stderr also carries the progress bar of the reading, unless TQDM_DISABLE is set
    errors = [line for line in err.splitlines() if "ddad score: error:" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert "x0.png" in errors[0] and "too large" in errors[0]


def test_sens_at_95_spec_is_exact_with_tied_scores():
    """The highest sensitivity of any threshold that flags at most 5% of the normal images (the
    ROC curve's dropped intermediate points once hid some of them where scores tie)."""
    from ddadlib.scoring.metrics import operating_point, sensitivity_at_specificity

    g = np.random.default_rng(0)
    for _ in range(300):
        n0, n1 = g.integers(5, 80, 2)
        labels = np.r_[np.zeros(n0), np.ones(n1)].astype(int)
        scores = np.round(np.r_[g.normal(0, 1, n0), g.normal(g.uniform(0, 2), 1, n1)], 1)
        best = max(
            np.mean(scores[labels == 1] >= t)
            for t in np.r_[np.unique(scores), np.inf]
            if np.sum(scores[labels == 0] >= t) <= 0.05 * n0 + 1e-9
        )
        assert sensitivity_at_specificity(labels, scores) == best
        threshold, sens = operating_point(labels, scores)
        assert np.mean(scores[labels == 1] > threshold) == sens
        assert np.sum(scores[labels == 0] > threshold) <= 0.05 * n0
