"""``ddad demo``: on the bundled real chest X-rays by default, and careful with its folder."""

import json

import pytest

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset


def test_demo_runs_on_the_bundled_xrays_and_reuses_its_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "on the bundled Kermany chest X-rays" in text
    assert "test 300 normal + 300 abnormal" in text
    for name in ("rec", "rec_ensemble", "intra", "inter"):
        assert name in text
    ds = PreparedDataset.load(out / "data")
    assert ds.info["source"] == "kermany" and ds.info["data"]["licence"].startswith("CC BY 4.0")
    config = json.loads(next(out.glob("*/config.json")).read_text())
    assert config["n_unlabeled"] == 500 and config["ar"] == 0.6
    assert (out / "maps.png").stat().st_size > 10_000
    # the same demo again reuses the data, the run and the evaluation
    assert main(["demo", "--out", str(out), "--epochs", "1", "--quiet"]) == 0
    again = capsys.readouterr().out
    assert "prepared earlier" in again and "nothing trained" in again


def test_demo_refuses_a_folder_with_other_content(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "scores.csv").write_text("my own scores\n")
    assert main(["demo", "--out", str(out), "--epochs", "1", "--quiet"]) == 2
    assert "holds files that are not from this demo" in capsys.readouterr().err
    assert (out / "scores.csv").read_text() == "my own scores\n"
    assert sorted(p.name for p in out.iterdir()) == ["scores.csv"]


def test_demo_refuses_a_demo_with_other_settings(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(
        json.dumps({"demo": "kermany", "backbone": "ae", "epochs": 1, "seed": 0})
    )
    (out / "metrics.json").write_text('{"inter": {"auc": 0.99}}')
    assert main(["demo", "--out", str(out), "--epochs", "2", "--quiet"]) == 2
    assert "holds a demo with other settings (epochs: 1 -> 2)" in capsys.readouterr().err
    assert not (out / "data").exists()


def test_demo_checks_its_settings_before_preparing_data(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--out", str(out), "--epochs", "0"])
    assert exit_.value.code == 2
    assert "--epochs: must be at least 1" in capsys.readouterr().err
    assert not out.exists()
