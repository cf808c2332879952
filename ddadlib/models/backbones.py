"""The reconstruction networks of DDAD: AE, AE-U and MemAE, as plain ``nn.Module`` s.

All three share one layout (``docs/method.md``), written here for 64x64 input:

- encoder: 4 x [Conv 4x4 stride 2 pad 1 (no bias), BatchNorm, ReLU], channels 16-32-64-64,
  down to 64x4x4 = 1024 features;
- bottleneck: Linear 1024->2048, BN, ReLU, Linear 2048->16 (the latent), then Linear 16->2048,
  BN, ReLU, Linear 2048->1024, reshaped to 64x4x4;
- decoder: 3 x [ConvTranspose 4x4 stride 2 pad 1 (no bias), BN, ReLU], channels 64-64-32-16,
  then ConvTranspose 16->out (with bias; no output activation).

The paper speaks of "3 fully connected layers" with BN and ReLU after all but the output; the
authors' code has the four linear layers above, and this module follows the code. Other square
sizes (a power of two, at least 8) add or remove stride-2 stages so that the bottleneck stays
64x4x4: 128x128 inserts one more 64-channel stage on each side, 32x32 drops the last one.

Every network maps a batch ``(B, 1, S, S)`` in [-1, 1] to a dict with ``"recon"`` and returns
its training loss from :meth:`loss`; AE-U adds ``"logvar"``, MemAE adds ``"attention"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddadlib.errors import ConfigError
from ddadlib.paper import PAPER_LATENT

#: Channels of the encoder's stride-2 stages at 64x64; other sizes add or drop 64-channel stages.
ENCODER_CHANNELS = (16, 32, 64, 64)
HIDDEN = 2048
#: The latent size of the authors' AE; ``latent`` changes it (the same authors later found a
#: 4-d code better on RSNA, :data:`ddadlib.paper.LATENT_STUDY`).
LATENT = PAPER_LATENT
BOTTLENECK_SIZE = 4


def stage_channels(size: int) -> list[int]:
    """Encoder channels for a ``size`` x ``size`` input (the decoder mirrors them)."""
    if size < 8 or size & (size - 1):
        raise ConfigError(f"image size must be a power of two of at least 8 (got {size})")
    n = int(math.log2(size // BOTTLENECK_SIZE))
    base = list(ENCODER_CHANNELS)
    return base[:n] if n <= len(base) else base + [base[-1]] * (n - len(base))


def down_block(cin: int, cout: int) -> nn.Sequential:
    """A stride-2 stage of an encoder: Conv 4x4 stride 2 pad 1 (no bias), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def up_block(cin: int, cout: int) -> nn.Sequential:
    """A stride-2 stage of a decoder: ConvTranspose 4x4 stride 2 pad 1 (no bias), BN, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _dense(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class AE(nn.Module):
    """The convolutional autoencoder of DDAD (docs/method.md "AE"); loss: pixel MSE."""

    out_channels = 1

    def __init__(self, size: int = 64, latent: int = LATENT) -> None:
        super().__init__()
        if not isinstance(latent, int) or latent < 1:
            raise ConfigError(f"latent must be a whole number of at least 1 (got {latent!r})")
        self.size = size
        self.latent = latent
        ch = stage_channels(size)
        self.encoder = nn.Sequential(*[down_block(a, b) for a, b in zip([1] + ch[:-1], ch)])
        flat = ch[-1] * BOTTLENECK_SIZE**2
        self.to_latent = nn.Sequential(_dense(flat, HIDDEN), nn.Linear(HIDDEN, latent))
        self.from_latent = nn.Sequential(_dense(latent, HIDDEN), nn.Linear(HIDDEN, flat))
        rev = ch[::-1]
        self.decoder = nn.Sequential(
            *[up_block(a, b) for a, b in zip(rev[:-1], rev[1:])],
            nn.ConvTranspose2d(rev[-1], self.out_channels, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code of each image (``latent`` numbers, 16 by default)."""
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output, ``(B, out_channels, S, S)``."""
        h = self.from_latent(z).view(z.shape[0], -1, BOTTLENECK_SIZE, BOTTLENECK_SIZE)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"recon": self.decode(self.encode(x))}

    def loss(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean squared reconstruction error."""
        return F.mse_loss(out["recon"], x)


def heteroscedastic_loss(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """AE-U's loss: mean over pixels of ``(x - mean)^2 * exp(-logvar) + logvar``."""
    return ((x - mean) ** 2 * torch.exp(-logvar) + logvar).mean()


class AEU(AE):
    """AE-U: the AE with two output channels, read as the mean and the log-variance of each
    pixel; trained with :func:`heteroscedastic_loss`."""

    out_channels = 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.decode(self.encode(x))
        return {"recon": out[:, :1], "logvar": out[:, 1:]}

    def loss(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return heteroscedastic_loss(x, out["recon"], out["logvar"])


def hard_shrink_relu(w: torch.Tensor, threshold: float, eps: float = 1e-12) -> torch.Tensor:
    """MemAE's hard shrinkage of addressing weights, renormalised to sum to 1 per row.

    With ``threshold = 0`` (the authors' configs) it leaves the weights unchanged.
    """
    if threshold <= 0:
        return w
    w = F.relu(w - threshold) * w / ((w - threshold).abs() + eps)
    return w / w.sum(dim=1, keepdim=True).clamp_min(eps)


def addressing_entropy(w: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over the batch of the entropy ``-sum_i w_i log w_i`` of each addressing vector."""
    return -(w * torch.log(w + eps)).sum(dim=1).mean()


class MemAE(AE):
    """MemAE: the AE with a memory of ``slots`` learned items on the latent code (16-d by
    default).

    The latent z is replaced by ``w @ memory`` where ``w = softmax(z @ memory.T)``, after hard
    shrinkage (threshold 0 in the authors' configs, i.e. none). The loss adds the entropy of the
    addressing weights with weight ``entropy_weight`` (0.0002).
    """

    def __init__(
        self,
        size: int = 64,
        latent: int = LATENT,
        slots: int = 25,
        shrink_threshold: float = 0.0,
        entropy_weight: float = 0.0002,
    ) -> None:
        super().__init__(size, latent)
        self.shrink_threshold = shrink_threshold
        self.entropy_weight = entropy_weight
        self.memory = nn.Parameter(torch.empty(slots, latent))
        bound = 1.0 / math.sqrt(latent)
        nn.init.uniform_(self.memory, -bound, bound)

    def address(self, z: torch.Tensor) -> torch.Tensor:
        """Addressing weights ``(B, slots)`` of latent codes ``z``."""
        w = torch.softmax(z @ self.memory.t(), dim=1)
        return hard_shrink_relu(w, self.shrink_threshold)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.address(self.encode(x))
        return {"recon": self.decode(w @ self.memory), "attention": w}

    def loss(self, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(out["recon"], x) + self.entropy_weight * addressing_entropy(
            out["attention"]
        )


#: The reconstruction backbones by the names the command line and the API take.
BACKBONES: dict[str, type[AE]] = {"ae": AE, "aeu": AEU, "memae": MemAE}


def build_backbone(name: str, size: int = 64, latent: int = LATENT) -> AE:
    """A freshly initialised network of the named backbone (``ae``, ``aeu`` or ``memae``) with a
    ``latent``-d code."""
    try:
        cls = BACKBONES[name]
    except KeyError:
        raise ConfigError(
            f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)} "
            "(f-AnoGAN is 'fanogan', trained by ddadlib.models.fanogan)"
        ) from None
    return cls(size, latent)
