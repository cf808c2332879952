"""The training commands end to end: train, evaluate, score and the demo."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from reference_scores import inter_from_networks
from sklearn.metrics import roc_auc_score

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset


def test_train_evaluate_score(tiny_synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_synthetic),
                "--out",
                str(run),
                "--k",
                "2",
                "--epochs",
                "1",
                "--ar",
                "0.4",
                "--n-unlabeled",
                "10",
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (run / "model.pt").exists()
    assert main(["evaluate", "--run", str(run), "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    assert "inter" in out and "AUC" in out
    # the inter scores and AUC are those of |mu_A - mu_B| recomputed from the trained networks
    labels, inter = inter_from_networks(run)
    np.testing.assert_allclose(pd.read_csv(run / "scores.csv")["inter"], inter, rtol=1e-4)
    assert json.loads((run / "metrics.json").read_text())["inter"]["auc"] == pytest.approx(
        roc_auc_score(labels, inter), abs=0.01
    )
    imgs = tmp_path / "new"
    imgs.mkdir()
    g = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(g.integers(0, 255, (50, 50), dtype=np.uint8)).save(imgs / f"x{i}.png")
    csv = tmp_path / "scores.csv"
    assert main(["score", "--run", str(run), "--images", str(imgs), "--out", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert list(frame["id"]) == ["x0.png", "x1.png", "x2.png"]
    assert {"rec", "rec_ensemble", "intra", "inter"} <= set(frame.columns)
    # no silent overwrite
    assert main(["score", "--run", str(run), "--images", str(imgs), "--out", str(csv)]) == 2
    (imgs / "broken.png").write_bytes(b"\x89PNG not really")
    assert (
        main(["score", "--run", str(run), "--images", str(imgs), "--out", str(tmp_path / "s2.csv")])
        == 2
    )
    assert "broken.png" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", "synthetic", "--epochs", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    for name in ("rec", "rec_ensemble", "intra", "inter"):
        assert name in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"rec", "rec_ensemble", "intra", "inter"}
    for fig in ("histograms.png", "maps.png", "samples.png"):
        assert (out / fig).stat().st_size > 10_000
    assert PreparedDataset.load(out / "data").info["source"] == "synthetic"
    # running it again reuses the data and the trained run
    assert main(["demo", "--out", str(out), "--data", "synthetic", "--epochs", "1", "--quiet"]) == 0
    again = capsys.readouterr().out
    assert "prepared earlier" in again and "nothing trained" in again


def test_train_takes_the_latent_size(tiny_synthetic, tmp_path, capsys):
    run = tmp_path / "z4"
    args = ["train", "--data", str(tiny_synthetic), "--out", str(run), "--k", "2", "--epochs", "1"]
    args += ["--n-unlabeled", "10", "--quiet", "--device", "cpu"]
    with pytest.raises(SystemExit) as stop:  # argparse's one-line error
        main(args + ["--latent", "0"])
    assert stop.value.code == 2 and "--latent" in capsys.readouterr().err and not run.exists()
    assert main(args + ["--latent", "4"]) == 0
    assert json.loads((run / "config.json").read_text())["latent"] == 4
