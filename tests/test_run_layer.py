"""The run layer's types (RunConfig, Run), the detector registry and the rules for reusing
cached runs."""

import json
import shutil

import numpy as np
import pytest

from ddadlib.cli import BACKBONE_CHOICES
from ddadlib.detectors import (
    DDAD,
    DETECTORS,
    Detector,
    FAnoGAN,
    detector_for,
    load_detector,
    make_detector,
)
from ddadlib.errors import ConfigError, DataError
from ddadlib.paper import BACKBONE_TITLES
from ddadlib.runs import Run, RunConfig, evaluate_run, run_config, train_run
from ddadlib.runs.grid import ensure_run, run_name

quiet = dict(log=lambda s: None)

#: A config.json as ddadlib wrote it before RunConfig (the dict of ``run_config``), key order
#: included.
OLD_CONFIG = {
    "format": 1,
    "data_path": "/data/syn32",
    "data_fingerprint": "px-0123456789abcdef",
    "size": 32,
    "dn_size": 40,
    "test_size": [12, 12],
    "backbone": "ae",
    "k": 2,
    "epochs": 2,
    "batch_size": 64,
    "lr": 0.0005,
    "betas": [0.5, 0.999],
    "seed": 1,
    "device": "cpu",
    "precision": "fp32",
    "ar": 0.5,
    "n_unlabeled": 3,
    "du_ids": ["u1", "u2", "u3"],
    "provenance": {"versions": {"torch": "2.3"}, "git_commit": "abc"},
    "created": "2026-01-01T00:00:00+00:00",
}


# -- RunConfig ------------------------------------------------------------------------------------
def test_old_config_json_round_trips_unchanged():
    cfg = RunConfig.from_dict(OLD_CONFIG)
    assert cfg.du_ids == ("u1", "u2", "u3") and cfg.betas == (0.5, 0.999) and cfg.ar == 0.5
    back = cfg.to_dict()
    assert back == OLD_CONFIG and list(back) == list(OLD_CONFIG)
    assert json.dumps(back) == json.dumps(OLD_CONFIG)
    # a config without the keys that older versions did not write takes what those runs used
    older = {k: v for k, v in OLD_CONFIG.items() if k not in ("betas", "dn_size", "test_size")}
    assert RunConfig.from_dict(older).betas == (0.5, 0.999)


def test_damaged_config_is_named():
    bad = {k: v for k, v in OLD_CONFIG.items() if k not in ("seed", "du_ids")}
    with pytest.raises(DataError, match=r"cfg.json: damaged or not a ddadlib run config \(no"):
        RunConfig.from_dict(bad, "cfg.json")
    with pytest.raises(DataError, match="malformed"):
        RunConfig.from_dict(dict(OLD_CONFIG, du_ids=3), "cfg.json")


def test_differences_name_defining_settings_only():
    cfg = RunConfig.from_dict(OLD_CONFIG)
    assert cfg.differences(cfg.replace(created="later", provenance={}, data_path="/x")) == []
    assert cfg.differences(cfg.replace(lr=1e-3, precision="bf16")) == [
        "lr: 0.0005 -> 0.001",
        "precision: fp32 -> bf16",
    ]


def test_run_config_records_the_optimiser_that_trains(tiny_synthetic):
    cfg = run_config(tiny_synthetic, k=2, epochs=1, ar=0.5, n_unlabeled=10, **quiet)
    model = DDAD(k=2, epochs=1)
    ens = model.module_config("B", 32)
    assert cfg.betas == tuple(ens.betas) and cfg.lr == ens.lr
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_an_old_run_folder_is_reused(tiny_runs, tmp_path):
    """A finished run whose config.json is in the dict format (with the old fingerprint's
    key order) is reused by train_run, not refused."""
    parent, _ = tiny_runs
    run = shutil.copytree(parent / "ar0.5", tmp_path / "ar0.5")
    written = json.loads((run / "config.json").read_text())
    assert list(written) == list(OLD_CONFIG)
    lines = []
    train_run(run, RunConfig.from_dict(written), progress=False, log=lines.append)
    assert "nothing trained" in lines[-1]


# -- Run ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(tiny_runs, tiny_synthetic, tmp_path_factory):
    parent, _ = tiny_runs
    out = tmp_path_factory.mktemp("evaluated")
    ae = shutil.copytree(parent / "ar0.5", out / "ae")
    evaluate_run(ae, n_boot=10, figures=False, **quiet)
    cfg = run_config(tiny_synthetic, backbone="fanogan", epochs=1, device="cpu", **quiet)
    train_run(out / "fa", cfg, progress=False, **quiet)
    evaluate_run(out / "fa", n_boot=10, figures=False, **quiet)
    return Run(ae), Run(out / "fa")


def test_score_arrays_shapes(evaluated):
    ae, fa = evaluated
    n = len(ae.scores())
    arrays = ae.score_arrays()
    assert tuple(arrays) == DDAD.score_names == ae.score_names
    assert arrays["rec"].shape == (2, n)  # K = 2 networks of module B, each alone
    assert all(arrays[s].shape == (n,) for s in ("rec_ensemble", "intra", "inter"))
    table = ae.scores()
    assert np.allclose(arrays["rec"][0], table["rec"])  # the column rec is network 1
    assert not np.allclose(arrays["rec"][0], arrays["rec"][1])  # two networks, two rows
    fan = fa.score_arrays()
    assert tuple(fan) == ("rec",) and fan["rec"].shape == (1, n)
    assert set(fa.metrics()) == {"rec"}


def test_run_reads_config_model_and_test_set(evaluated):
    ae, fa = evaluated
    assert ae.is_finished and ae.is_evaluated and ae.config.k == 2
    assert isinstance(ae.model(device="cpu"), DDAD)
    assert isinstance(fa.model(device="cpu"), FAnoGAN)
    x, labels, ids, masks = ae.test_set()
    assert ids == ae.scores()["id"].tolist() and np.array_equal(labels, ae.labels())
    assert x.shape == (len(ids), 32, 32) and masks.shape == x.shape


def test_run_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not a ddadlib run folder"):
        Run(tmp_path).config  # noqa: B018
    (tmp_path / "config.json").write_text(json.dumps(OLD_CONFIG))
    with pytest.raises(DataError, match="training has not finished"):
        Run(tmp_path).model()
    with pytest.raises(DataError, match=r"no metrics.json; evaluate the run first"):
        Run(tmp_path).metrics()
    with pytest.raises(DataError, match=r"no scores.csv"):
        Run(tmp_path).scores()


# -- the detector registry -----------------------------------------------------------------------
def test_registry_names_every_backbone_once():
    assert set(DETECTORS) == set(BACKBONE_TITLES) == set(BACKBONE_CHOICES)
    assert detector_for("ae") is DDAD and detector_for("memae") is DDAD
    assert detector_for("fanogan") is FAnoGAN
    with pytest.raises(ConfigError, match="unknown backbone 'vae'"):
        detector_for("vae")
    with pytest.raises(ConfigError, match="DDAD does not take backbone 'fanogan'; use FAnoGAN"):
        DDAD(backbone="fanogan")._check_params()
    for name in DETECTORS:
        model = make_detector(name, epochs=1)
        assert isinstance(model, Detector) and model.backbone == name
    assert DDAD.uses_unlabeled and not FAnoGAN.uses_unlabeled
    assert FAnoGAN.score_names == ("rec",)


def test_load_detector_takes_any_kind(evaluated):
    ae, fa = evaluated
    assert isinstance(load_detector(fa.model_path, device="cpu"), FAnoGAN)
    assert isinstance(load_detector(ae.model_path, device="cpu"), DDAD)
    with pytest.raises(DataError, match="holds a FAnoGAN model, not a DDAD one"):
        DDAD.load(fa.model_path, device="cpu")
    with pytest.raises(DataError, match="holds a DDAD model"):
        FAnoGAN.load(ae.model_path, device="cpu")


# -- reusing cached runs -------------------------------------------------------------------------
def _grid_run(root, data, **changes):
    settings = dict(ar=0.5, seed=0, epochs=1, k=2, n_unlabeled=10, device="cpu", n_boot=10)
    settings.update(changes)
    return ensure_run(root, data, progress=False, **settings, **quiet)


def test_cached_run_is_reused_only_with_the_same_settings(tiny_synthetic, tmp_path, monkeypatch):
    run = _grid_run(tmp_path, tiny_synthetic)
    assert run.name == run_name("ae", 0.5, 0, 1, 2, 10)
    stamp = (run / "metrics.json").stat().st_mtime_ns
    monkeypatch.setattr(DDAD, "fit", lambda *a, **k: pytest.fail("trained again"))
    assert _grid_run(tmp_path, tiny_synthetic) == run  # same settings: reused
    assert (run / "metrics.json").stat().st_mtime_ns == stamp
    # settings that are not in the folder's name still change the result: refused, not reused
    for change, shown in (
        (dict(lr=1e-3), "lr: 0.0005 -> 0.001"),
        (dict(batch_size=16), "batch_size: 64 -> 16"),
        (dict(precision="bf16"), "precision: fp32 -> bf16"),
    ):
        with pytest.raises(DataError, match=f"other settings.*{shown}"):
            _grid_run(tmp_path, tiny_synthetic, **change)
    # a run made on another device (here: its config says so)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(cfg, device="cuda")))
    with pytest.raises(DataError, match="device: cuda -> cpu"):
        _grid_run(tmp_path, tiny_synthetic)


def test_latent_is_a_setting_that_older_runs_hold_at_its_default(tiny_synthetic, tmp_path):
    cfg = RunConfig.from_dict(OLD_CONFIG)
    assert cfg.latent == 16 and "latent" not in cfg.to_dict()  # old runs keep their config.json
    four = cfg.replace(latent=4)
    assert four.to_dict()["latent"] == 4 and RunConfig.from_dict(four.to_dict()) == four
    assert cfg.differences(four) == ["latent: 16 -> 4"]
    assert four.module_b() != cfg.module_b()  # a 4-d module B is not reused for a 16-d run
    assert run_name("ae", 0.6, 0, 30, 3, 500) == "ae-ar0.6-m500-e30-k3-s0"
    assert run_name("ae", 0.6, 0, 30, 3, 500, latent=4) == "ae-ar0.6-m500-e30-k3-z4-s0"
    c4 = run_config(tiny_synthetic, k=2, epochs=1, ar=0.5, n_unlabeled=10, latent=4, **quiet)
    train_run(tmp_path / "z4", c4, progress=False, **quiet)
    model = Run(tmp_path / "z4").model()
    assert Run(tmp_path / "z4").config.latent == 4 and model.latent == 4
    assert {net.latent for net in model.module_a_ + model.module_b_} == {4}
    with pytest.raises(ConfigError, match="latent"):
        DDAD(latent=0).fit(np.zeros((4, 32, 32), np.uint8))
