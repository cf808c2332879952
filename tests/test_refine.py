"""The journal's refinement (DDAD-ASR): ASR-Net, the synthetic anomalies, its training (seeded,
resumable), the Refiner behind the detector protocol, `ddad refine` into a run folder and the
refined scores in `ddad evaluate`."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from ddadlib import Refiner
from ddadlib.cli import main
from ddadlib.detectors import DDAD, Detector
from ddadlib.errors import ConfigError, DataError
from ddadlib.models.asr import (
    ASRConfig,
    ASRNet,
    focal_loss,
    half_widths,
    synthetic_anomalies,
    train_asr,
)
from ddadlib.runs.evaluate import evaluate_run
from ddadlib.runs.refine import finished_refinements, refine_run
from ddadlib.runs.run import Run

quiet = dict(log=lambda s: None)


def test_asr_net_is_three_3x3_convolutions_with_bn_and_relu_between():
    net = ASRNet(2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (2, 128, (3, 3)),
        (128, 128, (3, 3)),
        (128, 2, (3, 3)),
    ]
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    p = net.eval().anomaly_map(torch.randn(3, 2, 16, 16))
    assert p.shape == (3, 16, 16) and bool(((p >= 0) & (p <= 1)).all())


def test_focal_loss_is_cross_entropy_down_weighted_by_confidence():
    logits = torch.tensor([[[[2.0]], [[0.0]]]])  # p(normal) = sigmoid(2)
    target = torch.zeros(1, 1, 1)
    ce = torch.nn.functional.cross_entropy(logits, target.long())
    assert focal_loss(logits, target, gamma=0) == pytest.approx(float(ce))
    p_t = torch.sigmoid(torch.tensor(2.0))
    assert focal_loss(logits, target, gamma=2) == pytest.approx(float((1 - p_t) ** 2 * ce))


def test_patch_sizes_scale_with_the_image():
    assert half_widths(64) == (3, 12)
    assert half_widths(32) == (2, 6)
    assert half_widths(128) == (6, 24)


def test_synthetic_anomalies_follow_the_recipe():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 64, 64, generator=g) * 2 - 1
    out, masks = synthetic_anomalies(x, 3, "t")
    hit = masks.flatten(1).any(1).numpy()
    assert 0.35 < hit.mean() < 0.65  # p = 0.5
    assert torch.equal(out[~torch.from_numpy(hit)], x[~torch.from_numpy(hit)])
    for i in np.flatnonzero(hit)[:40]:
        rows, cols = np.nonzero(masks[i].numpy())
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert masks[i].sum() == h * w  # a square (clipped at the border: a rectangle)
        assert max(h, w) <= 24
        # the centre lies in the middle 80%: an unclipped patch is 6 to 24 pixels wide
        if 0 < rows.min() and rows.max() < 63 and 0 < cols.min() and cols.max() < 63:
            assert h == w and 6 <= h <= 24 and h % 2 == 0
            centre = rows.min() + h // 2
            assert 6 <= centre <= 58
        # outside the mask the image is untouched
        assert torch.equal(out[i][0][~masks[i]], x[i][0][~masks[i]])
    # seeded: the same stream gives the same anomalies, another one others
    again, masks2 = synthetic_anomalies(x, 3, "t")
    assert torch.equal(again, out) and torch.equal(masks2, masks)
    assert not torch.equal(synthetic_anomalies(x, 4, "t")[1], masks)
    assert not synthetic_anomalies(x, 3, "t", p=0.0)[1].any()
    assert synthetic_anomalies(x, 3, "t", p=1.0)[1].flatten(1).any(1).all()


def test_the_patch_is_an_alpha_blend_of_another_image():
    x = torch.stack([torch.full((1, 32, 32), v) for v in (-1.0, 1.0)])
    out, masks = synthetic_anomalies(x, 0, p=1.0)
    for i, other in ((0, 1.0), (1, -1.0)):
        inside = out[i][0][masks[i]]
        alpha = (inside - x[i, 0, 0, 0]) / (other - x[i, 0, 0, 0])
        assert torch.allclose(inside, inside[0]) and 0 < float(alpha[0]) <= 1
    # the donor is never the image itself
    same = torch.zeros(2, 1, 32, 32)
    with pytest.raises(ValueError, match="at least 2"):
        synthetic_anomalies(same[:1], 0, p=1.0)


def _maps_of(x):
    return torch.cat([x, x.abs()], dim=1)  # a stand-in for the discrepancy maps


def test_training_is_seeded_and_resumes_to_the_same_weights(tmp_path):
    x = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cfg = ASRConfig(inputs="dual", epochs=2, batch_size=4, seed=5, size=16)
    whole = train_asr(x, _maps_of, cfg, progress=False)
    again = train_asr(x, _maps_of, cfg, progress=False)
    for a, b in zip(whole.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)
    assert len(whole.losses) == 2
    ckpt = tmp_path / "asr.ckpt"
    train_asr(
        x, _maps_of, ASRConfig(**{**cfg.to_dict(), "epochs": 1}), checkpoint=ckpt, progress=False
    )
    # a checkpoint of another config is refused, not resumed
    from ddadlib.errors import TrainingError

    with pytest.raises(TrainingError, match="another configuration"):
        train_asr(x, _maps_of, cfg, checkpoint=ckpt, progress=False)
    blob = torch.load(ckpt, weights_only=True)
    blob["config"]["epochs"] = 2
    torch.save(blob, ckpt)
    resumed = train_asr(x, _maps_of, cfg, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == 1 and resumed.losses == pytest.approx(whole.losses)
    for a, b in zip(whole.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="intra or dual"):
        ASRConfig(inputs="inter")
    with pytest.raises(ConfigError, match="epochs"):
        ASRConfig(epochs=0)


@pytest.fixture(scope="module")
def run(tiny_runs, tmp_path_factory):
    """A copy of a tiny finished run (AE, K = 2, 32 px), evaluated once before refining."""
    src, _ = tiny_runs
    out = shutil.copytree(src / "ar0.5", tmp_path_factory.mktemp("refine") / "run")
    evaluate_run(out, n_boot=10, figures=False, **quiet)
    return out


def test_the_refiner_is_a_detector(run, tiny_synthetic):
    from ddadlib.data.dataset import PreparedDataset

    ddad = Run(run).model(device="cpu")
    ds = PreparedDataset.load(tiny_synthetic)
    normal = ds.images[ds.part("normal")]
    refiner = Refiner(ddad, inputs="intra", epochs=1, seed=0, device="cpu", progress=False)
    assert isinstance(refiner, Detector)
    with pytest.raises(RuntimeError, match="not fitted"):
        refiner.score_samples(normal[:2])
    assert refiner.fit(normal) is refiner
    x = ds.images[ds.part("test_abnormal")][:5]
    scores = refiner.score_samples(x)
    assert set(scores) == {"rec", "rec_ensemble", "intra", "inter", "r_intra"}
    maps = refiner.score_maps(x)
    assert maps["r_intra"].shape == (5, 32, 32)
    assert np.allclose(scores["r_intra"], maps["r_intra"].mean((1, 2)), atol=1e-6)
    assert refiner.score_names[-1] == "r_intra" and "r_intra" in refiner.shown_maps(maps)
    path = refiner.save(run.parent / "refiner.pt")
    back = Refiner.load(path, ddad, device="cpu")
    assert back.inputs == "intra" and np.allclose(
        back.score_samples(x)["r_intra"], scores["r_intra"]
    )
    with pytest.raises(ConfigError, match="needs a DDAD"):
        Refiner(object()).fit(normal)  # type: ignore[arg-type]
    (run.parent / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(DataError, match="junk.pt"):
        Refiner.load(run.parent / "junk.pt", ddad)


def test_ddad_refine_then_evaluate_reports_the_refined_scores(run, capsys):
    before = json.loads((run / "metrics.json").read_text())
    argv = ["refine", "--run", str(run), "--epochs", "1", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    assert main(argv + ["--inputs", "intra"]) == 0
    assert set(finished_refinements(run)) == {"r_intra", "r_dual"}
    folder = run / "refine-dual"
    assert sorted(p.name for p in folder.iterdir()) == [
        "refine.json",
        "refiner.pt",
        "train_log.json",
    ]
    cfg = json.loads((folder / "refine.json").read_text())
    assert cfg["inputs"] == "dual" and cfg["epochs"] == 1 and cfg["batch_size"] == 8
    assert cfg["lr"] == 1e-4 and cfg["weight_decay"] == 1e-4 and cfg["betas"] == [0.5, 0.999]
    assert cfg["seed"] == 1  # the run's
    # the same command again reuses it (nothing is trained)
    capsys.readouterr()
    mtime = (folder / "refiner.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert "reusing it" in capsys.readouterr().out
    assert (folder / "refiner.pt").stat().st_mtime_ns == mtime
    # evaluate notices the new refinements and reports them beside the others
    assert main(["evaluate", "--run", str(run), "--n-boot", "10"]) == 0
    out = capsys.readouterr().out
    assert "evaluating again" in out and "r_dual" in out and "aupro" in out
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("rec", "intra", "inter", "r_intra", "r_dual"):
        assert {"auc", "ap", "auc_ci", "pixel_auc", "aupro"} <= set(metrics[name])
        assert 0 <= metrics[name]["aupro"] <= 1
    for name in before:  # the earlier scores come out as before
        assert metrics[name]["auc"] == pytest.approx(before[name]["auc"])
    table = pd.read_csv(run / "scores.csv")
    assert {"r_intra", "r_dual"} <= set(table.columns)
    arrays = Run(run).score_arrays()
    assert arrays["r_dual"].shape == (len(table),)
    # a second evaluate shows it
    assert main(["evaluate", "--run", str(run), "--n-boot", "10"]) == 0
    assert "already evaluated" in capsys.readouterr().out


def test_other_settings_are_refused_unless_overwrite(run, capsys):
    refine_run(run, "dual", epochs=1, device="cpu", progress=False, **quiet)
    argv = ["refine", "--run", str(run), "--epochs", "2", "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("ddad refine: error:") and "epochs: 1 -> 2" in err and "--overwrite" in err
    )
    assert json.loads((run / "refine-dual" / "refine.json").read_text())["epochs"] == 1
    assert main(argv + ["--overwrite"]) == 0
    assert json.loads((run / "refine-dual" / "refine.json").read_text())["epochs"] == 2


def test_an_interrupted_refinement_resumes(run, monkeypatch):
    folder = run / "refine-intra"
    shutil.rmtree(folder, ignore_errors=True)
    import ddadlib.models.asr as asr

    real = asr.focal_loss
    calls = {"n": 0}

    def stop_in_epoch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] > 5:  # 40 normal images, batch 8: 5 steps an epoch
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(asr, "focal_loss", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        refine_run(run, "intra", epochs=2, device="cpu", progress=False, **quiet)
    assert (folder / "checkpoints" / "asr.ckpt").is_file() and not (folder / "refiner.pt").exists()
    monkeypatch.setattr(asr, "focal_loss", real)
    lines = []
    refiner = refine_run(run, "intra", epochs=2, device="cpu", progress=False, log=lines.append)
    assert any("resuming" in line for line in lines)
    assert refiner.history_["resumed_from_epoch"] == 1
    assert (folder / "refiner.pt").is_file() and not (folder / "checkpoints").exists()


def test_refine_needs_a_finished_ddad_run(tmp_path, tiny_synthetic, capsys):
    from ddadlib.runs.config import run_config
    from ddadlib.runs.train import train_run

    assert main(["refine", "--run", str(tmp_path / "nothing")]) == 2
    assert "not a ddadlib run folder" in capsys.readouterr().err
    cfg = run_config(tiny_synthetic, backbone="fanogan", epochs=1, device="cpu", **quiet)
    train_run(tmp_path / "fan", cfg, progress=False, **quiet)
    assert main(["refine", "--run", str(tmp_path / "fan"), "--quiet"]) == 2
    assert "no modules A and B" in capsys.readouterr().err


def test_a_retrained_model_invalidates_its_refinement(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns("refine-*"))
    refine_run(copy, "dual", epochs=1, device="cpu", progress=False, **quiet)
    model = DDAD.load(copy / "model.pt")
    model.history_["changed"] = True
    model.save(copy / "model.pt")
    with pytest.raises(DataError, match="refines another model.pt"):
        evaluate_run(copy, n_boot=0, figures=False, overwrite=True, **quiet)
    with pytest.raises(DataError, match="model_digest"):
        refine_run(copy, "dual", epochs=1, device="cpu", progress=False, **quiet)


def test_reproduce_refine_adds_r_intra_and_r_dual_to_the_results_page(tiny_synthetic, tmp_path):
    from ddadlib.presets import PRESETS
    from ddadlib.runs.reproduce import plan, reproduce

    protocol, m = PRESETS["quick"], {"table": 20, "ablation": None}
    only = plan(protocol, ["refine"], m)
    assert [s["backbone"] for s in only] == ["ae", "aeu"]  # the Table 1 runs it refines
    assert plan(protocol, ["table1", "refine"], m) == plan(protocol, ["table1"], m)
    out = tmp_path / "repro"
    logs: list[str] = []
    kwargs = dict(seeds=(0,), epochs=1, n_boot=10, progress=False, device="cpu")
    reproduce(
        tiny_synthetic, out, "quick", experiments=["table1", "refine"], log=logs.append, **kwargs
    )
    page = (out / "results.md").read_text()
    assert "**Refinement (DDAD-ASR)**" in page and "AUPRO" in page
    section = page.split("**Refinement (DDAD-ASR)**")[1]
    rows = [line for line in section.splitlines() if line.startswith(("| AE |", "| AE-U |"))]
    assert len(rows) == 4  # AE and AE-U, AUC and AUPRO
    assert all(line.count("|") == 7 and " - " not in line for line in rows)
    for backbone in ("ae", "aeu"):
        (run,) = (out / "runs").glob(f"{backbone}-ar0.6-*")
        metrics = Run(run).metrics()
        assert {"r_intra", "r_dual"} <= set(metrics)
        cfg = json.loads((run / "refine-dual" / "refine.json").read_text())
        assert cfg["epochs"] == protocol.refine_epochs == 1
    # a second call trains nothing and gives the same page
    logs.clear()
    reproduce(
        tiny_synthetic, out, "quick", experiments=["table1", "refine"], log=logs.append, **kwargs
    )
    assert (out / "results.md").read_text() == page
    assert sum("reusing it" in line for line in logs) >= 4
