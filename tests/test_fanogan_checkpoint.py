"""f-AnoGAN checkpoints: an interrupted or killed training resumes to the same weights, bit for
bit on the CPU; damaged checkpoints and checkpoints of other settings are refused (issue 11)."""

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_fanogan import images

import ddadlib.models.fanogan as fanogan
from ddadlib.errors import DataError, TrainingError
from ddadlib.models.ensemble import EnsembleConfig, train_ensemble
from ddadlib.models.fanogan import train_fanogan

# 24 images in batches of 8: 3 critic steps and 3 encoder steps an epoch, 9 of each in all
SETTINGS = dict(epochs=3, encoder_epochs=3, seed=4, batch_size=8, n_critic=2, progress=False)
STEPS = {"gan": "_critic_step", "encoder": "_encoder_step"}
ROOT = Path(__file__).resolve().parents[1]


def data() -> torch.Tensor:
    return images(24, 32)


@pytest.fixture(scope="module")
def uninterrupted():
    """The model trained in one go, without a checkpoint."""
    return train_fanogan(data(), **SETTINGS)


def assert_same_model(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, differ
    assert a.history == b.history


def count_steps(monkeypatch, stop: dict[str, int] | None = None) -> dict[str, int]:
    """Count the critic and encoder steps; raise KeyboardInterrupt at step ``stop[stage]``."""
    calls = {"gan": 0, "encoder": 0}
    for stage, name in STEPS.items():
        step = getattr(fanogan, name)

        def counted(*args, _stage=stage, _step=step, **kw):
            calls[_stage] += 1
            if stop and calls[_stage] == stop.get(_stage):
                raise KeyboardInterrupt
            return _step(*args, **kw)

        monkeypatch.setattr(fanogan, name, counted)
    return calls


@pytest.mark.parametrize(
    "stage, stop, resumed_from, left",
    [
        # the 5th critic step is in the 2nd GAN epoch: the 1st is kept
        ("gan", 5, ("gan", 1), {"gan": 6, "encoder": 9}),
        # the 4th encoder step is in the 2nd encoder epoch: the GAN and 1 encoder epoch are kept
        ("encoder", 4, ("encoder", 1), {"gan": 0, "encoder": 6}),
    ],
)
def test_interrupted_training_resumes_to_the_same_weights(
    stage, stop, resumed_from, left, uninterrupted, tmp_path, monkeypatch
):
    ckpt = tmp_path / "fanogan.ckpt"
    with monkeypatch.context() as m:
        count_steps(m, stop={stage: stop})
        with pytest.raises(KeyboardInterrupt):
            train_fanogan(data(), checkpoint=ckpt, **SETTINGS)
    assert ckpt.exists()
    with monkeypatch.context() as m:
        calls = count_steps(m)
        resumed = train_fanogan(data(), checkpoint=ckpt, **SETTINGS)
    assert resumed.resumed_from == resumed_from
    assert calls == left  # only the epochs not in the checkpoint were trained again
    assert not resumed.training
    assert_same_model(resumed, uninterrupted)
    # the checkpoint now holds the finished training: a further call trains nothing
    with monkeypatch.context() as m:
        calls = count_steps(m)
        again = train_fanogan(data(), checkpoint=ckpt, **SETTINGS)
    assert calls == {"gan": 0, "encoder": 0} and again.resumed_from == ("encoder", 3)
    assert_same_model(again, uninterrupted)


CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    import ddadlib.models.fanogan as fanogan

    images, ckpt, stage, stop, threads = sys.argv[1:]
    torch.set_num_threads(int(threads))
    name = {"gan": "_critic_step", "encoder": "_encoder_step"}[stage]
    step, calls = getattr(fanogan, name), [0]

    def stalled(*args, **kw):
        calls[0] += 1
        if calls[0] == int(stop):
            print("stalled", flush=True)
            time.sleep(300)  # killed here, in the middle of an epoch
        return step(*args, **kw)

    setattr(fanogan, name, stalled)
    fanogan.train_fanogan(
        torch.load(images), checkpoint=ckpt, checkpoint_every=0, **SETTINGS
    )
    print("finished", flush=True)
    """
)


def test_killed_training_resumes_to_the_same_weights(uninterrupted, tmp_path):
    """SIGKILL in the middle of the 3rd GAN epoch (its 8th critic step), with a checkpoint after
    every epoch; the encoder stage's resume is covered by the interrupt test above."""
    stage, stop, resumed_from = "gan", 8, ("gan", 2)
    torch.save(data(), tmp_path / "images.pt")
    ckpt = tmp_path / "fanogan.ckpt"
    script = tmp_path / "child.py"
    script.write_text(CHILD.replace("**SETTINGS", f"**{SETTINGS!r}"))
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    args = [tmp_path / "images.pt", ckpt, stage, stop, torch.get_num_threads()]
    proc = subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        assert line == "stalled\n", (line, proc.poll())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert ckpt.exists()
    resumed = train_fanogan(data(), checkpoint=ckpt, **SETTINGS)
    assert resumed.resumed_from == resumed_from
    assert_same_model(resumed, uninterrupted)


@pytest.fixture
def fanogan_checkpoint(tmp_path):
    ckpt = tmp_path / "fanogan.ckpt"
    train_fanogan(data(), checkpoint=ckpt, **(SETTINGS | dict(epochs=1, encoder_epochs=1)))
    return ckpt


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_checkpoint_is_a_data_error_naming_the_file(damage, fanogan_checkpoint):
    blob = fanogan_checkpoint.read_bytes()
    cut = blob[: len(blob) // 2] if damage == "truncated" else b"not a checkpoint" * 10
    fanogan_checkpoint.write_bytes(cut)
    settings = SETTINGS | dict(epochs=1, encoder_epochs=1)
    with pytest.raises(DataError, match=r"fanogan\.ckpt: damaged or truncated checkpoint.*delete"):
        train_fanogan(data(), checkpoint=fanogan_checkpoint, **settings)


def test_incomplete_checkpoint_is_a_data_error_naming_the_file(fanogan_checkpoint):
    blob = torch.load(fanogan_checkpoint, weights_only=True)
    del blob["noise"]
    torch.save(blob, fanogan_checkpoint)
    settings = SETTINGS | dict(epochs=1, encoder_epochs=1)
    with pytest.raises(DataError, match=r"fanogan\.ckpt: not a complete f-AnoGAN checkpoint"):
        train_fanogan(data(), checkpoint=fanogan_checkpoint, **settings)


def test_damaged_ensemble_checkpoint_is_a_data_error_too(tmp_path):
    """One reader for both trainers: the same error for the same fault."""
    x = data()
    cfg = EnsembleConfig(k=2, epochs=1, batch_size=8, size=32)
    ckpt = tmp_path / "B.ckpt"
    train_ensemble(x, cfg, checkpoint=ckpt, progress=False)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"B\.ckpt: damaged or truncated checkpoint.*delete"):
        train_ensemble(x, cfg, checkpoint=ckpt, progress=False)


def test_checkpoint_of_other_settings_is_refused(fanogan_checkpoint, tmp_path):
    settings = SETTINGS | dict(epochs=1, encoder_epochs=1)
    for other in (dict(lr=2e-4), dict(encoder_epochs=2), dict(precision="bf16")):
        with pytest.raises(TrainingError, match="fanogan.ckpt: checkpoint of another config"):
            train_fanogan(data(), checkpoint=fanogan_checkpoint, **(settings | other))
    # nor does either trainer take the other's checkpoint
    ensemble = tmp_path / "B.ckpt"
    train_ensemble(
        data(),
        EnsembleConfig(k=2, epochs=1, batch_size=8, size=32),
        checkpoint=ensemble,
        progress=False,
    )
    with pytest.raises(TrainingError, match="another configuration"):
        train_fanogan(data(), checkpoint=ensemble, **settings)
    with pytest.raises(TrainingError, match="another configuration"):
        train_ensemble(
            data(),
            EnsembleConfig(k=2, epochs=1, batch_size=8, size=32),
            checkpoint=fanogan_checkpoint,
            progress=False,
        )


def test_diverged_training_writes_no_checkpoint(tmp_path):
    ckpt = tmp_path / "fanogan.ckpt"
    with pytest.raises(TrainingError, match="WGAN-GP.*epoch 1 .*lower learning rate"):
        train_fanogan(data(), checkpoint=ckpt, checkpoint_every=0, **(SETTINGS | dict(lr=1e8)))
    assert not ckpt.exists()


def test_bf16_autocast_trains_and_differs_from_fp32(uninterrupted):
    half = train_fanogan(data(), precision="bf16", **SETTINGS)
    s = half.score(images(4, 32, seed=1))
    assert torch.isfinite(s).all()
    sa, sb = half.state_dict(), uninterrupted.state_dict()
    assert not all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(v.dtype == sb[k].dtype for k, v in sa.items())  # weights stay float32
