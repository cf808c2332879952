"""Run folders under faults: tampered and damaged files, changed data, interrupts, NaN weights,
two processes, half-written state (issue 10, part 3)."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset
from ddadlib.detectors import DDAD
from ddadlib.errors import DataError, TrainingError
from ddadlib.models.ensemble import EnsembleConfig, _Sequential, _Vectorised, train_ensemble
from ddadlib.runs.config import dataset_fingerprint, run_config
from ddadlib.runs.evaluate import evaluate_run
from ddadlib.runs.train import train_run

quiet = {"log": lambda s: None}
TRAIN = [
    "--k",
    "2",
    "--epochs",
    "1",
    "--ar",
    "0.5",
    "--n-unlabeled",
    "10",
    "--seed",
    "2",
    "--device",
    "cpu",
    "--quiet",
]


class _RunsCode:
    """Pickles to a call of a function: what a malicious model file holds."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_synthetic):
    """A finished run (K = 2, 1 epoch) on a private copy of the tiny set, not evaluated."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    shutil.copytree(tiny_synthetic, data)
    cfg = run_config(data, k=2, epochs=1, ar=0.5, n_unlabeled=10, seed=2, device="cpu", **quiet)
    train_run(root / "run", cfg, progress=False, **quiet)
    return root / "run", data


def _copy_run(run, dest):
    shutil.copytree(run, dest)
    return dest


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


# -- security ------------------------------------------------------------------------------
def test_torch_floor_excludes_the_releases_of_the_load_advisories():
    import re

    from packaging.specifiers import SpecifierSet

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    (torch_req,) = [d for d in deps["dependencies"] if d.startswith("torch")]
    spec = SpecifierSet(torch_req.removeprefix("torch"))
    # CVE-2025-32434: < 2.6.0; CVE-2026-24747: < 2.10.0
    assert not any(v in spec for v in ("2.1.0", "2.5.1", "2.6.0", "2.9.1"))
    assert all(v in spec for v in ("2.10.0", "2.11.0", "2.13.0"))
    env = (root / "environment.yml").read_text()
    assert re.search(r"pytorch>=2\.10,<3", env)


def test_unsafe_model_file_is_refused_without_torch_advice(trained, tmp_path, capsys):
    run = _copy_run(trained[0], tmp_path / "run")
    buf = io.BytesIO()
    torch.save({"format": "ddadlib-model", "version": 1, "payload": _RunsCode()}, buf)
    (run / "model.pt").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="trusted sources") as info:
        DDAD.load(run / "model.pt", device="cpu")
    assert "weights_only" not in str(info.value) and "Re-running" not in str(info.value)
    assert main(["evaluate", "--run", str(run), "--n-boot", "10"]) == 2
    err = _one_error_line(capsys, "model.pt", "trusted sources")
    assert "weights_only" not in err


# -- clear errors ---------------------------------------------------------------------------
def test_truncated_model_and_checkpoint_give_one_line(trained, tmp_path, capsys):
    run = _copy_run(trained[0], tmp_path / "run")
    blob = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(blob[: len(blob) // 2])
    assert main(["evaluate", "--run", str(run), "--n-boot", "10"]) == 2
    _one_error_line(capsys, "model.pt", "truncated")
    # an unfinished run whose checkpoint was cut short (a full disk, a copy stopped midway)
    data = trained[1]
    out = tmp_path / "elsewhere" / "unfinished"
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN]) == 0
    (out / "model.pt").unlink()
    (out / "train_log.json").unlink()
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "B.ckpt").write_bytes(blob[:1000])
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN]) == 2
    _one_error_line(capsys, "B.ckpt", "truncated", "delete it")


def test_config_of_empty_dict_gives_one_line(trained, tmp_path, capsys):
    run = _copy_run(trained[0], tmp_path / "run")
    (run / "config.json").write_text("{}")
    assert main(["evaluate", "--run", str(run)]) == 2
    _one_error_line(capsys, "config.json", "damaged")
    (tmp_path / "img").mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "img" / "a.png")
    assert (
        main(
            [
                "score",
                "--run",
                str(run),
                "--images",
                str(tmp_path / "img"),
                "--out",
                str(tmp_path / "s.csv"),
            ]
        )
        == 2
    )
    _one_error_line(capsys, "config.json", "damaged")


# -- silent wrong results -------------------------------------------------------------------
def test_model_that_stores_fewer_networks_than_it_records_is_refused(trained, tmp_path):
    blob = torch.load(trained[0] / "model.pt", weights_only=True)
    assert len(blob["module_b"]) == 2
    blob["module_b"] = blob["module_b"][:1]
    torch.save(blob, tmp_path / "model.pt")
    with pytest.raises(DataError, match=r"records 2 network\(s\) in module B but stores 1"):
        DDAD.load(tmp_path / "model.pt", device="cpu")


def _nan_after_last_epoch(monkeypatch, module="A"):
    real = _Sequential.epoch

    def epoch(self, images, orders, tick):
        losses = real(self, images, orders, tick)
        self.done = getattr(self, "done", 0) + 1
        if self.cfg.module == module and self.done == self.cfg.epochs:
            with torch.no_grad():  # the last step diverged: its loss was still finite
                next(self.members[0].parameters()).fill_(float("nan"))
        return losses

    monkeypatch.setattr(_Sequential, "epoch", epoch)


def test_nan_weights_of_the_last_step_do_not_finish_the_run(trained, tmp_path, monkeypatch, capsys):
    _nan_after_last_epoch(monkeypatch)
    out = tmp_path / "run"
    assert main(["train", "--data", str(trained[1]), "--out", str(out), *TRAIN]) == 2
    _one_error_line(capsys, "module A", "not finite")
    assert not (out / "model.pt").exists()
    # a model.pt with NaN weights from before is refused, not scored into empty cells
    run = _copy_run(trained[0], tmp_path / "old")
    blob = torch.load(run / "model.pt", weights_only=True)
    first = next(iter(blob["module_a"][1]))
    blob["module_a"][1][first].fill_(float("nan"))
    torch.save(blob, run / "model.pt")
    with pytest.raises(DataError, match="not finite"):
        DDAD.load(run / "model.pt", device="cpu")


def test_evaluate_refuses_a_dataset_changed_since_training(trained, tmp_path, capsys):
    run, data = trained
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    ds = PreparedDataset.load(copy)
    before = dataset_fingerprint(ds)
    cfg = run_config(copy, k=2, epochs=1, ar=0.5, n_unlabeled=10, seed=2, device="cpu", **quiet)
    shutil.copytree(run, tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(
        json.dumps(
            dict(
                json.loads((run / "config.json").read_text()),
                data_path=str(copy),
                data_fingerprint=cfg.data_fingerprint,
            )
        )
    )
    # the same manifest and split, other pixels in one test image
    images = np.load(copy / "images.npy")
    images[ds.part("test_normal")[0]] ^= 0xFF
    np.save(copy / "images.npy", images)
    assert dataset_fingerprint(PreparedDataset.load(copy)) != before
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--n-boot", "10"]) == 2
    _one_error_line(capsys, "changed since the run trained")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_two_datasets_of_one_name_do_not_share_an_evaluation(trained, tmp_path):
    from ddadlib.data.prepare import prepare_synthetic

    run = _copy_run(trained[0], tmp_path / "run")
    got = []
    for parent, seed in (("x", 5), ("y", 6)):
        d = prepare_synthetic(
            tmp_path / parent / "test",
            size=32,
            n_normal=8,
            n_test=6,
            n_unlabeled=4,
            seed=seed,
            log=lambda s: None,
        )
        got.append(evaluate_run(run, d, n_boot=10, figures=False, **quiet))
    outs = sorted(run.glob("eval-test-*"))
    assert len(outs) == 2
    data = {json.loads((o / "evaluation.json").read_text())["data"] for o in outs}
    assert data == {str((tmp_path / p / "test").resolve()) for p in "xy"}
    assert got[0]["inter"]["auc"] != got[1]["inter"]["auc"]


# -- half-written state ----------------------------------------------------------------------
def test_stopped_evaluation_is_redone_with_its_figures(trained, tmp_path, monkeypatch):
    from ddadlib.runs import evaluate as runs

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_write_figures", stopped)
    out = tmp_path / "ev"
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(trained[0], out=out, n_boot=10, **quiet)
    assert (out / "scores.csv").exists() and not (out / "metrics.json").exists()
    monkeypatch.undo()
    lines = []
    evaluate_run(trained[0], out=out, n_boot=10, log=lines.append)
    assert not any("already evaluated" in line for line in lines)
    assert (out / "maps.png").exists() and (out / "metrics.json").exists()


def test_train_that_failed_before_training_takes_the_corrected_command(trained, tmp_path, capsys):
    out = tmp_path / "run"
    data = str(trained[1])
    # A bad --lr is refused by the parser now; a device that is not there fails only when used.
    assert main(["train", "--data", data, "--out", str(out), *TRAIN, "--device", "cuda:7"]) == 2
    _one_error_line(capsys, "cuda")
    assert main(["train", "--data", data, "--out", str(out), *TRAIN, "--device", "cpu"]) == 0
    assert (out / "model.pt").exists()


def test_run_that_never_trained_is_replaced(trained, tmp_path, monkeypatch):
    def no_device(self, *args, **kwargs):  # e.g. a device that fails at its first use
        raise TrainingError("the device failed")

    cfg = run_config(
        trained[1], k=2, epochs=1, ar=0.5, n_unlabeled=10, seed=2, device="cpu", **quiet
    )
    monkeypatch.setattr(DDAD, "fit", no_device)
    with pytest.raises(TrainingError):
        train_run(tmp_path / "run", cfg, progress=False, **quiet)
    monkeypatch.undo()
    other = cfg.replace(epochs=2)
    lines = []
    train_run(tmp_path / "run", other, progress=False, log=lines.append)
    assert any("replacing a run that never trained" in line for line in lines)
    # a run that did train is still protected
    with pytest.raises(DataError, match="another config"):
        train_run(tmp_path / "run", cfg, progress=False, **quiet)


def test_temp_files_of_a_killed_write_are_removed_on_the_next_run(trained, tmp_path):
    run = _copy_run(trained[0], tmp_path / "run")
    ours = [run / ".model.pt.k3x9q_2a.tmp", run / ".scores.csv.abcdefgh.tmp"]
    (run / "checkpoints").mkdir()
    ours.append(run / "checkpoints" / ".B.ckpt.0123abcd.tmp")
    theirs = [run / ".notes.txt.abcdefgh.tmp", run / "model.pt.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"x" * 100)
    cfg = json.loads((run / "config.json").read_text())
    lines = []
    train_run(run, cfg, progress=False, log=lines.append)
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)
    assert any("removed 3 temporary file(s)" in line for line in lines)


@pytest.mark.parametrize("trainer", [_Sequential, _Vectorised])
def test_interrupt_saves_the_finished_epochs_and_resume_is_identical(
    tmp_path, monkeypatch, trainer
):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 32, 32, generator=g) * 2 - 1
    cfg = EnsembleConfig(k=2, epochs=3, batch_size=4, size=32, seed=4)
    vectorised = trainer is _Vectorised
    whole = train_ensemble(images, cfg, vectorised=vectorised, progress=False)
    real = trainer.epoch
    calls = []

    def stop_in_third(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(trainer, "epoch", stop_in_third)
    ckpt = tmp_path / "B.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_ensemble(images, cfg, vectorised=vectorised, progress=False, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    monkeypatch.undo()
    resumed = train_ensemble(images, cfg, vectorised=vectorised, progress=False, checkpoint=ckpt)
    assert resumed.resumed_from == 2
    for a, b in zip(whole.members, resumed.members):
        for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), name


def test_a_second_trainer_of_one_folder_is_refused(trained, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".ddad.lock"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time\n"
                f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "os.write(fd, str(os.getpid()).encode())\n"
                f"open({str(ready)!r}, 'w').close()\n"
                "time.sleep(60)\n"
            ),
        ]
    )
    try:
        for _ in range(200):
            if ready.exists():
                break
            time.sleep(0.05)
        assert main(["train", "--data", str(trained[1]), "--out", str(out), *TRAIN]) == 2
        _one_error_line(capsys, "another process", f"pid {holder.pid}")
        assert not (out / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock of a process that died is taken over
    assert main(["train", "--data", str(trained[1]), "--out", str(out), *TRAIN]) == 0
    assert (out / "model.pt").exists()


def test_runs_recorded_with_the_older_fingerprint_still_match(trained, tmp_path):
    from ddadlib.runs.config import _manifest_fingerprint

    run = _copy_run(trained[0], tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    legacy = _manifest_fingerprint(PreparedDataset.load(trained[1]))
    (run / "config.json").write_text(json.dumps(dict(cfg, data_fingerprint=legacy)))
    lines = []
    train_run(run, cfg, progress=False, log=lines.append)  # cfg holds the new fingerprint
    assert "nothing trained" in lines[-1]
    assert set(evaluate_run(run, n_boot=10, figures=False, **quiet)) == {
        "rec",
        "rec_ensemble",
        "intra",
        "inter",
    }


def test_sigterm_keeps_the_finished_epochs(trained, tmp_path):
    import signal

    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ddadlib.cli",
            "train",
            "--data",
            str(trained[1]),
            "--out",
            str(out),
            *TRAIN[:2],
            "--epochs",
            "100000",
            *TRAIN[4:],
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (out / "config.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        # some epochs of module B, long before its first timed checkpoint (under load the first
        # epoch ends about 4 s after config.json appears)
        time.sleep(10)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err, err
    assert torch.load(out / "checkpoints" / "B.ckpt", weights_only=True)["epoch"] >= 1
