"""Run folders: config, reuse, refusal, module B reuse across ARs, evaluation outputs."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from reference_scores import inter_from_networks
from sklearn.metrics import roc_auc_score

from ddadlib.detectors import DDAD, load_detector
from ddadlib.errors import DataError
from ddadlib.runs.config import RunConfig, run_config
from ddadlib.runs.evaluate import evaluate_run
from ddadlib.runs.train import train_run

quiet = dict(log=lambda s: None)


def test_config_records_everything(tiny_runs):
    parent, _ = tiny_runs
    cfg = RunConfig.read(parent / "ar0.5").to_dict()
    for key in (
        "backbone",
        "k",
        "epochs",
        "batch_size",
        "lr",
        "seed",
        "ar",
        "n_unlabeled",
        "du_ids",
        "device",
        "precision",
        "data_fingerprint",
        "provenance",
    ):
        assert key in cfg, key
    assert len(cfg["du_ids"]) == 20 and cfg["device"] == "cpu" and cfg["precision"] == "fp32"
    assert {"torch", "numpy", "scikit-learn"} <= set(cfg["provenance"]["versions"])
    assert "git_commit" in cfg["provenance"]
    log = json.loads((parent / "ar0.5" / "train_log.json").read_text())
    assert len(log["modules"]["A"]["losses"]) == 2


def test_module_b_is_trained_once_across_ars(tiny_runs):
    parent, logs = tiny_runs
    assert not any("reusing the one trained" in line for line in logs[0.5])
    assert any("reusing the one trained" in line and "ar0.5" in line for line in logs[1.0])
    a = DDAD.load(parent / "ar0.5" / "model.pt", device="cpu")
    b = DDAD.load(parent / "ar1.0" / "model.pt", device="cpu")
    for ma, mb in zip(a.module_b_, b.module_b_):
        for (n, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
            assert torch.equal(va, vb), n
    wa = a.module_a_[0].state_dict()["encoder.0.0.weight"]
    wb = b.module_a_[0].state_dict()["encoder.0.0.weight"]
    assert not torch.equal(wa, wb)  # module A saw different Du


def test_finished_run_is_reused_and_other_config_refused(tiny_synthetic, tiny_runs):
    parent, _ = tiny_runs
    lines = []
    cfg = run_config(
        tiny_synthetic, k=2, epochs=2, ar=0.5, n_unlabeled=20, seed=1, device="cpu", **quiet
    )
    before = (parent / "ar0.5" / "model.pt").stat().st_mtime_ns
    train_run(parent / "ar0.5", cfg, progress=False, log=lines.append)
    assert "nothing trained" in lines[-1]
    assert (parent / "ar0.5" / "model.pt").stat().st_mtime_ns == before
    other = run_config(
        tiny_synthetic, k=2, epochs=3, ar=0.5, n_unlabeled=20, seed=1, device="cpu", **quiet
    )
    with pytest.raises(DataError, match=r"another config \(epochs: 2 -> 3\)"):
        train_run(parent / "ar0.5", other, progress=False, **quiet)


def test_unmeetable_ar_fails_before_training(tiny_synthetic, tmp_path, capsys):
    from ddadlib.cli import main

    rc = main(
        [
            "train",
            "--data",
            str(tiny_synthetic),
            "--out",
            str(tmp_path / "run"),
            "--ar",
            "0.9",
            "--n-unlabeled",
            "60",
            "--epochs",
            "1",
            "--quiet",
        ]
    )
    assert rc == 2
    assert "the AR must be between 0.5 and 0.5" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_default_m_is_the_most_the_pools_allow(tiny_synthetic):
    lines = []
    cfg = run_config(tiny_synthetic, k=2, epochs=1, ar=0.6, log=lines.append)
    # pools of 30 + 30: at AR 0.6, 51 images (int(51 * 0.6) = 30 abnormal + 21 normal)
    assert cfg.n_unlabeled == 51 and "the most the pools allow" in lines[0]


def test_folder_that_is_not_a_run_is_refused(tiny_synthetic, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    cfg = run_config(tiny_synthetic, k=2, epochs=1, ar=0.5, n_unlabeled=10, **quiet)
    with pytest.raises(DataError, match="not a ddadlib run"):
        train_run(tmp_path / "x", cfg, progress=False, **quiet)


def test_evaluate_writes_metrics_scores_and_figures(tiny_runs, tmp_path):
    parent, _ = tiny_runs
    run = parent / "ar0.5"
    metrics = evaluate_run(run, n_boot=50, **quiet)
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved) == {"rec", "rec_ensemble", "intra", "inter"} and saved == metrics
    scores = pd.read_csv(run / "scores.csv")
    for name, m in saved.items():
        assert {"auc", "ap", "auc_ci", "sens_at_95_spec", "pixel_auc"} <= set(m), name
    # the inter scores are |mu_A - mu_B| of the trained networks, not some other number
    labels, inter = inter_from_networks(run)
    assert list(labels) == list(scores["label"])
    np.testing.assert_allclose(scores["inter"], inter, rtol=1e-4, atol=1e-7)
    assert saved["inter"]["auc"] == pytest.approx(roc_auc_score(labels, inter), abs=0.02)
    assert "auc_std" in saved["rec"] and len(saved["rec"]["auc_members"]) == 2
    assert list(scores.columns[:6]) == ["id", "label", "rec", "rec_ensemble", "intra", "inter"]
    assert len(scores) == 24 and scores["label"].sum() == 12
    assert (run / "histograms.png").stat().st_size > 10_000
    assert (run / "maps.png").stat().st_size > 10_000
    # a second call does not recompute or overwrite
    lines = []
    before = (run / "metrics.json").stat().st_mtime_ns
    evaluate_run(run, n_boot=50, log=lines.append)
    assert "already evaluated" in lines[0]
    assert (run / "metrics.json").stat().st_mtime_ns == before


def test_unfinished_run_cannot_be_evaluated(tiny_synthetic, tmp_path):
    cfg = run_config(tiny_synthetic, k=2, epochs=1, ar=0.5, n_unlabeled=10, **quiet)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(DataError, match="not finished"):
        evaluate_run(tmp_path / "r", **quiet)


def test_fanogan_run_has_rec_only(tiny_synthetic, tmp_path):
    lines = []
    cfg = run_config(
        tiny_synthetic, backbone="fanogan", epochs=1, seed=0, device="cpu", log=lines.append
    )
    assert cfg.du_ids == () and "Dn only" in lines[0]
    model = train_run(tmp_path / "fa", cfg, progress=False, **quiet)
    assert model.module_a_ is None
    metrics = evaluate_run(tmp_path / "fa", n_boot=20, **quiet)
    assert set(metrics) == {"rec"}
    scores = pd.read_csv(tmp_path / "fa" / "scores.csv")
    assert scores["rec"].notna().all() and scores["inter"].isna().all()
    again = load_detector(tmp_path / "fa" / "model.pt", device="cpu")
    ds_scores = again.score_samples(np.zeros((2, 32, 32), np.uint8))
    assert set(ds_scores) == {"rec"} and ds_scores["rec"].shape == (1, 2)


def test_interrupted_run_resumes_from_its_checkpoints(tiny_synthetic, tmp_path, monkeypatch):
    cfg = run_config(
        tiny_synthetic, k=2, epochs=2, ar=0.5, n_unlabeled=10, seed=3, device="cpu", **quiet
    )
    import ddadlib.detectors as detectors

    real_train = detectors.train_ensembles

    def stop_before_module_a(jobs, **kwargs):
        # module B finishes (and leaves its checkpoint), then the run is stopped before A ends
        real_train([job for job in jobs if job.cfg.module == "B"], **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(detectors, "train_ensembles", stop_before_module_a)
    with pytest.raises(KeyboardInterrupt):
        train_run(tmp_path / "r", cfg, progress=False, **quiet)
    assert (tmp_path / "r" / "checkpoints" / "B.ckpt").exists()
    assert not (tmp_path / "r" / "model.pt").exists()
    monkeypatch.setattr(detectors, "train_ensembles", real_train)
    lines = []
    train_run(tmp_path / "r", cfg, progress=False, log=lines.append)
    assert any("resuming" in line for line in lines)
    assert json.loads((tmp_path / "r" / "train_log.json").read_text())["resumed"] is True
    # a finished run is its model.pt: the checkpoints (weights and Adam states) are removed
    assert (tmp_path / "r" / "model.pt").exists() and not (tmp_path / "r" / "checkpoints").exists()
    log = json.loads((tmp_path / "r" / "train_log.json").read_text())
    assert log["modules"]["B"]["resumed_from_epoch"] == 2  # B was not trained again
    assert log["modules"]["A"]["resumed_from_epoch"] == 0


def test_evaluate_on_another_dataset_writes_beside_the_run(tiny_runs, tmp_path):
    from ddadlib.data.prepare import prepare_synthetic

    parent, _ = tiny_runs
    other = prepare_synthetic(
        tmp_path / "other32",
        size=32,
        n_normal=10,
        n_test=8,
        n_unlabeled=4,
        seed=9,
        log=lambda s: None,
    )
    metrics = evaluate_run(parent / "ar1.0", other, n_boot=20, figures=False, **quiet)
    (out,) = (parent / "ar1.0").glob("eval-other32-*")  # named and keyed by its fingerprint
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert len(pd.read_csv(out / "scores.csv")) == 16
    assert json.loads((out / "evaluation.json").read_text())["test"] == [8, 8]


def test_interrupted_fanogan_run_resumes_to_the_same_model(tiny_synthetic, tmp_path, monkeypatch):
    """f-AnoGAN runs resume through the shared checkpoints like the autoencoders (issue 11)."""
    import ddadlib.models.fanogan as fanogan

    cfg = run_config(tiny_synthetic, backbone="fanogan", epochs=2, seed=0, device="cpu", **quiet)
    real_step, calls = fanogan._critic_step, [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == stop_at:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    stop_at = None
    monkeypatch.setattr(fanogan, "_critic_step", counted)
    whole = train_run(tmp_path / "whole", cfg, progress=False, **quiet)
    stop_at, calls[0] = calls[0] // 2 + 1, 0  # the first critic step of the second GAN epoch
    with pytest.raises(KeyboardInterrupt):
        train_run(tmp_path / "cut", cfg, progress=False, **quiet)
    assert (tmp_path / "cut" / "checkpoints" / "fanogan.ckpt").exists()
    assert not (tmp_path / "cut" / "model.pt").exists()
    stop_at = None
    lines = []
    resumed = train_run(tmp_path / "cut", cfg, progress=False, log=lines.append)
    assert any("resuming" in line for line in lines)
    a, b = whole.module_b_[0].state_dict(), resumed.module_b_[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
