"""f-AnoGAN: network shapes, the izi_f score, and the training function (tiny, on the CPU)."""

import pytest
import torch

from ddadlib.errors import TrainingError
from ddadlib.models.fanogan import (
    CHUNK,
    LATENT_DIM,
    Critic,
    Encoder,
    FAnoGAN,
    Generator,
    train_fanogan,
)
from ddadlib.seeding import derive_seed, torch_seed


def images(n: int = 32, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Structured images in [-1, 1]: a bright disc of random radius and place on dark noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = torch.rand(n, 2, 1, 1, generator=g) - 0.5
    r = 0.3 + 0.3 * torch.rand(n, 1, 1, generator=g)
    disc = ((xx - c[:, 0]) ** 2 + (yy - c[:, 1]) ** 2 < r**2).float()
    x = disc * 1.6 - 0.8 + 0.1 * torch.randn(n, size, size, generator=g)
    return x.clamp(-1, 1).unsqueeze(1)


def tiny(seed: int = 0, **kw) -> FAnoGAN:
    """f-AnoGAN trained briefly on 24 images of 32x32 (3 critic steps an epoch)."""
    args = dict(epochs=2, seed=seed, batch_size=8, n_critic=2, progress=False)
    return train_fanogan(images(24, 32), **(args | kw))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes(size):
    model = FAnoGAN(size).eval()
    x = images(3, size)
    with torch.no_grad():
        assert model.encoder(x).shape == (3, LATENT_DIM)
        assert model.generator(torch.zeros(3, LATENT_DIM)).shape == (3, 1, size, size)
        assert model(x)["recon"].shape == (3, 1, size, size)
        assert model.critic(x).shape == (3,)
        assert model.critic.features(x).shape == (3, 64 * 4 * 4)
    assert model.anomaly_maps(x).shape == (3, 1, size, size)
    assert model.score(x).shape == (3,)


def test_output_ranges_and_critic_without_batchnorm():
    z = torch.rand(16, LATENT_DIM) * 2 - 1
    g = Generator(64).eval()
    out = g(z * 50)
    assert out.abs().max() <= 1 and out.std() > 0
    e = Encoder(64).eval()(images(4) * 100)
    assert e.abs().max() <= 1
    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    assert not any(isinstance(m, norms) for m in Critic(64).modules())
    assert any(isinstance(m, norms) for m in Encoder(64).modules())


def test_bad_size_rejected():
    with pytest.raises(ValueError, match="power of two"):
        FAnoGAN(48)


def test_score_is_pixel_plus_kappa_feature_residual():
    torch.manual_seed(0)
    model = FAnoGAN(64, kappa=2.5).eval()
    x = images(5)
    with torch.no_grad():
        recon = model.generator(model.encoder(x))
        pixel = ((x - recon) ** 2).mean(dim=(1, 2, 3))
        f = model.critic.features
        feature = ((f(x) - f(recon)) ** 2).mean(dim=1)
    assert feature.min() > 0
    torch.testing.assert_close(model.score(x), pixel + 2.5 * feature)
    torch.testing.assert_close(model.anomaly_maps(x), (x - recon) ** 2)
    torch.testing.assert_close(model(x)["recon"], recon)


def test_score_in_eval_mode_and_chunked_and_modes_restored():
    torch.manual_seed(0)
    model = FAnoGAN(32)
    model.train()
    model.generator.eval()
    x = images(CHUNK + 9, 32)
    s = model.score(x)
    assert model.training and model.encoder.training and not model.generator.training
    model.eval()
    with torch.no_grad():
        one = torch.cat([model.score(x[i : i + 1]) for i in (0, CHUNK + 3)])
        whole = model(x[: CHUNK + 9])["recon"]
    torch.testing.assert_close(s[[0, CHUNK + 3]], one)
    torch.testing.assert_close(model.anomaly_maps(x), (x - whole) ** 2)
    assert not s.requires_grad


def test_training_is_finite_and_trains_every_network():
    model = tiny()
    assert not model.training
    with torch_seed(derive_seed(0, "fanogan", "init")):
        init = FAnoGAN(32)
    for name in ("generator", "critic", "encoder"):
        before = getattr(init, name).state_dict()
        after = getattr(model, name).state_dict()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert changed, f"{name} was not trained"
    assert all(p.requires_grad for p in model.parameters())
    s = model.score(images(8, 32, seed=1))
    assert torch.isfinite(s).all() and (s > 0).all()
    assert len(model.history["gan"]) == 2 and len(model.history["encoder"]) == 2
    assert "generator" in model.history["gan"][-1]


def test_encoder_is_trained_on_the_izi_f_loss_with_kappa():
    model = tiny(epochs=1, encoder_epochs=1, kappa=3.0)
    assert model.kappa == 3.0
    h = model.history["encoder"][0]
    assert h["feature"] > 0
    assert h["izi_f"] == pytest.approx(h["pixel"] + 3.0 * h["feature"], rel=1e-5)


def test_same_seed_same_model_other_seed_other_model():
    a, b, c = (tiny(seed=s, epochs=1, encoder_epochs=1) for s in (3, 3, 4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    x = images(4, 32, seed=9)
    torch.testing.assert_close(a.score(x), b.score(x), rtol=0, atol=0)


def test_encoder_training_lowers_izi_f_loss():
    # (a generator trained this briefly is nearly constant, so the loss can only fall a little;
    # with encoder_lr=0 it stays the same to 4 digits)
    model = tiny(epochs=1, encoder_epochs=5)
    losses = [h["izi_f"] for h in model.history["encoder"]]
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < losses[0] - 1e-3
    # and the encoder alone: generator and critic frozen, a few steps on one batch
    x = images(16, 32, seed=5)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder")}
    model.generator.eval()
    model.critic.eval()
    model.encoder.train()
    model.generator.requires_grad_(False)
    model.critic.requires_grad_(False)
    opt = torch.optim.Adam(model.encoder.parameters(), lr=5e-4, betas=(0.5, 0.999))
    first = None
    for _ in range(5):
        pixel, feature = model.residuals(x)
        loss = (pixel + model.kappa * feature).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pixel, feature = model.residuals(x)
    assert (pixel + feature).mean().item() < first
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())


def test_on_epoch_callback_and_frozen_gan_in_encoder_stage():
    calls, after_gan = [], {}

    def on_epoch(stage: str, epoch: int, m: FAnoGAN) -> None:
        calls.append((stage, epoch, isinstance(m, FAnoGAN)))
        if stage == "gan":
            after_gan.update({k: v.clone() for k, v in m.state_dict().items()})

    model = tiny(epochs=2, encoder_epochs=2, on_epoch=on_epoch)
    assert calls == [("gan", 0, True), ("gan", 1, True), ("encoder", 0, True), ("encoder", 1, True)]
    final = model.state_dict()
    for k, v in after_gan.items():  # BatchNorm statistics of the generator included
        assert torch.equal(v, final[k]) != k.startswith("encoder."), k


def test_huge_learning_rate_raises_training_error():
    with pytest.raises(TrainingError, match="WGAN-GP.*epoch 1 .*lower learning rate"):
        tiny(epochs=1, lr=1e8)


def test_bad_input_rejected():
    x = images(8)
    x[3, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_fanogan(x, epochs=1, seed=0, progress=False)
    with pytest.raises(ValueError, match="size"):
        train_fanogan(images(8), epochs=1, seed=0, size=32, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 1, S, S\)"):
        train_fanogan(images(8)[:, 0], epochs=1, seed=0, progress=False)
