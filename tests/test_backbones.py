"""The reconstruction networks: shapes, parameter counts, losses, MemAE addressing."""

import math

import pytest
import torch

from ddadlib.errors import ConfigError
from ddadlib.models.backbones import (
    AE,
    AEU,
    MemAE,
    addressing_entropy,
    build_backbone,
    hard_shrink_relu,
    heteroscedastic_loss,
    stage_channels,
)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def ae_layer_list_count(out_channels: int = 1) -> int:
    """Parameters of the AE as docs/method.md lists its layers (64x64 input)."""

    def conv(cin: int, cout: int) -> int:
        return cin * cout * 16  # 4x4 kernels, no bias

    def bn(c: int) -> int:
        return 2 * c

    def lin(cin: int, cout: int) -> int:
        return cin * cout + cout

    enc = conv(1, 16) + conv(16, 32) + conv(32, 64) + conv(64, 64) + bn(16) + bn(32) + bn(64) * 2
    neck = lin(1024, 2048) + bn(2048) + lin(2048, 16) + lin(16, 2048) + bn(2048) + lin(2048, 1024)
    dec = (
        conv(64, 64)
        + conv(64, 32)
        + conv(32, 16)
        + bn(64)
        + bn(32)
        + bn(16)
        + 16 * out_channels * 16
        + out_channels
    )
    return enc + neck + dec


def test_parameter_counts_follow_the_layer_list():
    assert n_params(AE()) == ae_layer_list_count(1) == 4_487_249
    assert n_params(AEU()) == ae_layer_list_count(2)
    assert n_params(MemAE()) == ae_layer_list_count(1) + 25 * 16


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("name", ["ae", "aeu", "memae"])
def test_shapes(name, size):
    net = build_backbone(name, size).eval()
    x = torch.rand(3, 1, size, size) * 2 - 1
    out = net(x)
    assert out["recon"].shape == x.shape
    assert net.encode(x).shape == (3, 16)
    if name == "aeu":
        assert out["logvar"].shape == x.shape
    if name == "memae":
        assert out["attention"].shape == (3, 25)


def test_stage_channels_keep_a_4x4_bottleneck():
    assert stage_channels(64) == [16, 32, 64, 64]
    assert stage_channels(32) == [16, 32, 64]
    assert stage_channels(128) == [16, 32, 64, 64, 64]
    with pytest.raises(ValueError):
        stage_channels(96)
    with pytest.raises(ConfigError):
        build_backbone("vae")


def test_aeu_loss_is_the_heteroscedastic_formula():
    torch.manual_seed(0)
    x, mean, logvar = torch.randn(3, 2, 1, 8, 8).unbind(0)
    by_hand = ((x - mean) ** 2 / logvar.exp() + logvar).mean()
    assert torch.allclose(heteroscedastic_loss(x, mean, logvar), by_hand)
    # with logvar = 0 it is the MSE
    assert torch.allclose(
        heteroscedastic_loss(x, mean, torch.zeros_like(x)), ((x - mean) ** 2).mean()
    )
    net = AEU().eval()
    xb = torch.rand(2, 1, 64, 64) * 2 - 1
    out = net(xb)
    assert torch.allclose(net.loss(xb, out), heteroscedastic_loss(xb, out["recon"], out["logvar"]))


def test_memae_addressing_and_entropy():
    torch.manual_seed(0)
    net = MemAE().eval()
    x = torch.rand(4, 1, 64, 64) * 2 - 1
    z = net.encode(x)
    w = net.address(z)
    assert torch.allclose(w.sum(1), torch.ones(4))
    assert torch.allclose(w, torch.softmax(z @ net.memory.t(), dim=1))
    out = net(x)
    # the decoder sees the memory read-out, not z
    assert torch.allclose(out["recon"], net.decode(w @ net.memory), atol=1e-6)
    uniform = torch.full((2, 25), 1 / 25)
    assert math.isclose(addressing_entropy(uniform).item(), math.log(25), rel_tol=1e-5)
    one_hot = torch.eye(25)[:2]
    assert addressing_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    mse = torch.nn.functional.mse_loss(out["recon"], x)
    expected = mse + 0.0002 * addressing_entropy(out["attention"])
    assert torch.allclose(net.loss(x, out), expected)


def test_hard_shrinkage():
    w = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.equal(hard_shrink_relu(w, 0.0), w)
    s = hard_shrink_relu(w, 0.1)
    assert s[0, 3] == 0 and torch.allclose(s.sum(1), torch.ones(1))
    assert torch.allclose(s[0, :3], w[0, :3] / w[0, :3].sum(), atol=1e-6)


@pytest.mark.parametrize("name", ["ae", "aeu", "memae"])
def test_one_training_step_lowers_the_loss(name):
    torch.manual_seed(0)
    net = build_backbone(name)
    x = torch.rand(16, 1, 64, 64) * 2 - 1
    opt = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.5, 0.999))
    net.train()
    before = net.loss(x, net(x))
    opt.zero_grad()
    before.backward()
    opt.step()
    after = net.loss(x, net(x))
    assert after.item() < before.item()


@pytest.mark.parametrize("name", ["ae", "aeu", "memae"])
def test_latent_size_is_an_option(name):
    x = torch.zeros(3, 1, 32, 32)
    default, four = build_backbone(name, 32).eval(), build_backbone(name, 32, latent=4).eval()
    assert default.latent == 16 and default.encode(x).shape == (3, 16)
    assert four.latent == 4 and four.encode(x).shape == (3, 4)
    assert four(x)["recon"].shape == (3, 1, 32, 32)
    # the two linear layers at the code shrink by 12 x 2048 weights each (and 12 biases)
    assert n_params(default) - n_params(four) == 12 * 2048 * 2 + 12 + (
        25 * 12 if name == "memae" else 0
    )
    with pytest.raises(ConfigError, match="latent must be a whole number"):
        build_backbone(name, 32, latent=0)
