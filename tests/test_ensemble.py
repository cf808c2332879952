"""Ensemble training: the vectorised path equals members trained one by one; seeds; resume."""

import pytest
import torch

from ddadlib.errors import TrainingError
from ddadlib.models.ensemble import EnsembleConfig, batch_starts, build_members, train_ensemble


def max_weight_diff(a, b) -> float:
    out = 0.0
    for ma, mb in zip(a, b):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys()
        for n in sa:
            out = max(out, (sa[n].double() - sb[n].double()).abs().max().item())
    return out


@pytest.fixture
def images64():
    g = torch.Generator().manual_seed(0)
    return torch.rand(70, 1, 32, 32, generator=g, dtype=torch.float64) * 2 - 1


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("backbone", ["ae", "aeu", "memae"])
def test_vectorised_training_matches_members_one_by_one(backbone, images64, float64):
    cfg = EnsembleConfig(backbone=backbone, k=2, epochs=2, batch_size=16, size=32)
    one_by_one = train_ensemble(images64, cfg, vectorised=False, progress=False)
    together = train_ensemble(images64, cfg, vectorised=True, progress=False)
    assert together.path == "vectorised" and one_by_one.path == "sequential"
    # 8 Adam steps per member; float64 leaves only rounding differences
    assert max_weight_diff(one_by_one.members, together.members) < 1e-8
    untrained = build_members(cfg)
    assert max_weight_diff(untrained, together.members) > 1e-4  # training moved the weights


def test_members_differ_and_seeds_reproduce(images64, float64):
    cfg = EnsembleConfig(k=2, epochs=1, batch_size=16, size=32, seed=3)
    a = build_members(cfg)
    assert max_weight_diff(a[:1], a[1:]) > 1e-3
    assert max_weight_diff(a, build_members(cfg)) == 0.0
    other = build_members(EnsembleConfig(k=2, epochs=1, batch_size=16, size=32, seed=4))
    assert max_weight_diff(a, other) > 1e-3
    # module A and B members start differently too
    assert max_weight_diff(a, build_members(EnsembleConfig(k=2, size=32, seed=3, module="A"))) > 0


def test_same_seed_same_weights(images64):
    cfg = EnsembleConfig(k=2, epochs=1, batch_size=16, size=32)
    r1 = train_ensemble(images64.float(), cfg, progress=False)
    r2 = train_ensemble(images64.float(), cfg, progress=False)
    assert max_weight_diff(r1.members, r2.members) == 0.0


def test_interrupted_training_resumes_to_the_same_weights(images64, float64, tmp_path):
    cfg = EnsembleConfig(k=2, epochs=3, batch_size=16, size=32)
    full = train_ensemble(images64, cfg, progress=False)

    def stop_after_second_epoch(epoch, losses):
        if epoch == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "B.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_ensemble(
            images64,
            cfg,
            checkpoint=ckpt,
            checkpoint_every=0,
            progress=False,
            on_epoch=stop_after_second_epoch,
        )
    assert ckpt.exists()
    # resumed on the other path, to show the checkpoint format does not depend on it
    resumed = train_ensemble(images64, cfg, checkpoint=ckpt, progress=False, vectorised=True)
    assert resumed.resumed_from == 1
    assert len(resumed.losses) == 2
    assert max_weight_diff(full.members, resumed.members) < 1e-8


def test_checkpoint_of_another_config_is_refused(images64, tmp_path):
    ckpt = tmp_path / "B.ckpt"
    train_ensemble(
        images64.float(),
        EnsembleConfig(k=2, epochs=1, batch_size=16, size=32),
        checkpoint=ckpt,
        progress=False,
    )
    with pytest.raises(TrainingError, match="another configuration"):
        train_ensemble(
            images64.float(),
            EnsembleConfig(k=2, epochs=2, batch_size=16, size=32, lr=1e-3),
            checkpoint=ckpt,
            progress=False,
        )


def test_nan_loss_stops_with_a_clear_message(images64):
    bad = images64.float().clone()
    bad[3, 0, 5, 5] = float("nan")
    with pytest.raises(TrainingError, match=r"loss of member.*epoch 1.*diverged"):
        train_ensemble(bad, EnsembleConfig(k=2, epochs=2, batch_size=16, size=32), progress=False)


def test_batch_starts_drop_a_last_single_image():
    assert batch_starts(129, 64) == [0, 64]
    assert batch_starts(130, 64) == [0, 64, 128]
    assert batch_starts(64, 64) == [0]


def test_progress_bar_honours_tqdm_disable():
    """tqdm reads TQDM_DISABLE when it is imported, so each case runs in a fresh process."""
    import os
    import subprocess
    import sys

    code = (
        "import torch; from ddadlib.models.ensemble import EnsembleConfig, train_ensemble; "
        "train_ensemble(torch.rand(20, 1, 32, 32) * 2 - 1, "
        "EnsembleConfig(k=2, epochs=1, batch_size=16, size=32))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "module B (ae, 2 members)" in shown.stderr
    hidden = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env, TQDM_DISABLE="1"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "module B" not in hidden.stderr
