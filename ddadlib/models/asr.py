"""ASR-Net: the self-supervised refinement of DDAD's discrepancy maps (DDAD-ASR; Cai et al.,
"Dual-distribution discrepancy with self-supervised refinement for anomaly detection in medical
images", Medical Image Analysis 86:102794, 2023).

A small fully convolutional network turns the per-pixel discrepancy maps of a trained DDAD
(``intra`` alone: R_intra; ``inter`` and ``intra`` stacked: R_dual) into a two-class map
(normal / anomalous pixel). It is trained on the normal images Dn only: each image gets, with
probability 0.5, a synthetic anomaly (:func:`synthetic_anomalies`), and the network learns to
find it from the maps that modules A and B give for the altered image. The image score is the
mean over pixels of the anomalous-class probability.

Training follows the journal: focal loss (gamma 2), Adam lr 1e-4, betas (0.5, 0.999), weight
decay 1e-4, batches of 8, 100 epochs; the network of the **last epoch** is kept (nothing is
selected on the test set, nor on anything else). Every random choice (initialisation, data
order, which images get an anomaly, the patch, its donor and its alpha) derives from the seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ddadlib.errors import ConfigError, TrainingError
from ddadlib.models.checkpoints import (
    CHECKPOINT_VERSION,
    Checkpointer,
    check_finite_weights,
    load_checkpoint,
)
from ddadlib.models.ensemble import batch_starts
from ddadlib.paper import (
    ASR_BATCH_SIZE,
    ASR_EPOCHS,
    ASR_GAMMA,
    ASR_LR,
    ASR_WEIGHT_DECAY,
    PAPER_BETAS,
)
from ddadlib.seeding import derive_seed, epoch_order, rng, torch_seed

#: The refinements: name -> the discrepancy maps ASR-Net takes, stacked in this order (the
#: image score of each: :data:`ddadlib.paper.REFINED_SCORES`).
REFINER_INPUTS = {"intra": ("intra",), "dual": ("inter", "intra")}
#: The probability that a training image gets a synthetic anomaly.
ASR_P_ANOMALY = 0.5
#: Half-widths of the synthetic square patch, in pixels of a 64-pixel image (scaled with size).
ASR_HALF_WIDTH = (3, 12)
ASR_CHANNELS = 128


class ASRNet(nn.Module):
    """Three 3x3 convolutions, ``in -> 128 -> 128 -> 2`` channels, batch norm and ReLU between
    them; the output is the logits of the two classes (0 normal, 1 anomalous) per pixel."""

    def __init__(self, in_channels: int, channels: int = ASR_CHANNELS) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 2, 3, padding=1),
        )

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 2, S, S)`` of maps ``(N, in_channels, S, S)``."""
        return self.layers(maps)

    def anomaly_map(self, maps: torch.Tensor) -> torch.Tensor:
        """The anomalous-class probability per pixel, ``(N, S, S)``."""
        return torch.softmax(self(maps), dim=1)[:, 1]


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = ASR_GAMMA
) -> torch.Tensor:
    """The focal loss (Lin et al. 2017) of per-pixel two-class ``logits`` ``(N, 2, S, S)``
    against a 0/1 ``target`` ``(N, S, S)``, averaged over pixels: ``-(1 - p_t)^gamma log p_t``."""
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    p_t = torch.exp(-ce)
    return ((1.0 - p_t) ** gamma * ce).mean()


def half_widths(size: int, at_64: tuple[int, int] = ASR_HALF_WIDTH) -> tuple[int, int]:
    """The smallest and largest patch half-width at ``size`` pixels (``at_64``: at 64 pixels,
    the journal's 3 to 12)."""
    lo, hi = (max(1, round(w * size / 64)) for w in at_64)
    return lo, max(lo, hi)


def synthetic_anomalies(
    images: torch.Tensor,
    seed: int,
    *keys: int | str,
    p: float = ASR_P_ANOMALY,
    donors: torch.Tensor | None = None,
    own: torch.Tensor | np.ndarray | None = None,
    half_width: tuple[int, int] = ASR_HALF_WIDTH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal images ``(N, 1, S, S)`` (float, [-1, 1]) with synthetic anomalies, and their
    target masks ``(N, S, S)`` (bool).

    Each image gets, with probability ``p``, a square patch of half-width
    :func:`half_widths` (``half_width`` at 64 pixels: 3 to 12), centred in the middle 80% of the image (clipped
    at its border), cut from the same place of another image of ``donors`` (default:
    ``images``; ``own[i]`` is image ``i``'s row in ``donors``, never its own donor) and
    alpha-blended, ``(1 - alpha) x + alpha x_donor`` with ``alpha``
    uniform in [0, 1]; the mask is the patch where ``alpha > 0``. The draws come from the stream
    ``(seed, "asr-anomaly", *keys)``.
    """
    n, _, size, _ = images.shape
    pool = images if donors is None else donors
    own = np.arange(n) if donors is None else (None if own is None else np.asarray(own))
    if len(pool) < 2:
        raise ValueError("synthetic anomalies need at least 2 images (one is the donor)")
    g = rng(seed, "asr-anomaly", *keys)
    lo, hi = half_widths(size, half_width)
    c_lo, c_hi = int(np.floor(0.1 * size)), int(np.ceil(0.9 * size))
    out = images.clone()
    masks = torch.zeros((n, size, size), dtype=torch.bool, device=images.device)
    for i in range(n):
        if g.random() >= p:
            continue
        h = int(g.integers(lo, hi + 1))
        cy, cx = (int(v) for v in g.integers(c_lo, c_hi, size=2))
        # a donor other than the image itself
        j = int(g.integers(len(pool) - (0 if own is None else 1)))
        if own is not None and j >= int(own[i]):
            j += 1
        alpha = float(g.random())
        r0, r1 = max(cy - h, 0), min(cy + h, size)
        c0, c1 = max(cx - h, 0), min(cx + h, size)
        region = (slice(None), slice(r0, r1), slice(c0, c1))
        out[i][region] = (1.0 - alpha) * images[i][region] + alpha * pool[j][region]
        masks[i, r0:r1, c0:c1] = alpha > 0
    return out, masks


@dataclass
class ASRConfig:
    """What defines a trained ASR-Net; two with equal configs, maps and images are the same."""

    inputs: str = "dual"
    epochs: int = ASR_EPOCHS
    batch_size: int = ASR_BATCH_SIZE
    lr: float = ASR_LR
    betas: tuple[float, float] = PAPER_BETAS
    weight_decay: float = ASR_WEIGHT_DECAY
    gamma: float = ASR_GAMMA
    p_anomaly: float = ASR_P_ANOMALY
    half_width: tuple[int, int] = ASR_HALF_WIDTH
    seed: int = 0
    size: int = 64

    def __post_init__(self) -> None:
        if self.inputs not in REFINER_INPUTS:
            raise ConfigError(
                f"unknown refiner inputs {self.inputs!r}; choose {' or '.join(REFINER_INPUTS)}"
            )
        if self.epochs < 1 or self.batch_size < 2 or not 0 < self.lr < math.inf:
            raise ConfigError("epochs >= 1, batch_size >= 2 and a finite lr > 0 are required")
        if not 0 <= self.p_anomaly <= 1 or self.weight_decay < 0 or self.gamma < 0:
            raise ConfigError("p_anomaly in [0, 1], weight_decay >= 0 and gamma >= 0 are required")

    @property
    def channels(self) -> tuple[str, ...]:
        """The discrepancy maps ASR-Net takes, in channel order."""
        return REFINER_INPUTS[self.inputs]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"], d["half_width"] = list(self.betas), list(self.half_width)
        return d


def build_asr(cfg: ASRConfig) -> ASRNet:
    """A freshly initialised ASR-Net, from the config's seed."""
    with torch_seed(derive_seed(cfg.seed, "asr", cfg.inputs, "init")):
        return ASRNet(len(cfg.channels))


@dataclass
class ASRResult:
    """A trained ASR-Net and how its training went."""

    net: ASRNet
    losses: list[float] = field(default_factory=list)  # per epoch
    seconds: float = 0.0
    resumed_from: int = 0


def _blob(net: ASRNet, opt: torch.optim.Optimizer, epoch: int, cfg: ASRConfig) -> dict:
    return {
        "version": CHECKPOINT_VERSION,
        "config": cfg.to_dict(),
        "epoch": epoch,
        "members": [{n: v.detach().to("cpu", copy=True) for n, v in net.state_dict().items()}],
        "adam": opt.state_dict(),
    }


def train_asr(
    images: torch.Tensor,
    maps_of: Callable[[torch.Tensor], torch.Tensor],
    cfg: ASRConfig,
    *,
    checkpoint: str | Path | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
) -> ASRResult:
    """Train ASR-Net on normal ``images`` (float ``(N, 1, S, S)`` in [-1, 1], on the training
    device). ``maps_of(x)`` gives the input maps ``(B, C, S, S)`` of images ``x`` (the trained
    modules A and B, frozen). Each epoch draws new synthetic anomalies; the last epoch's network
    is returned, in eval mode. With ``checkpoint``, training resumes from it and saves there
    (atomically, at most every ``checkpoint_every`` seconds, after the last epoch and on
    Ctrl-C), as the ensemble trainer does."""
    n = images.shape[0]
    if n < 2:
        raise TrainingError(f"ASR-Net: cannot train on {n} image(s)")
    if images.shape[-1] != cfg.size:
        raise ValueError(f"config size {cfg.size} but images are {images.shape[-1]} pixels")
    device = images.device
    net = build_asr(cfg).to(device)
    opt = torch.optim.Adam(
        net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    ckpt = Path(checkpoint) if checkpoint is not None else None
    start, losses = 0, []
    if ckpt is not None and ckpt.exists():
        blob = load_checkpoint(ckpt, cfg.to_dict())
        net.load_state_dict(blob["members"][0])
        opt.load_state_dict(blob["adam"])
        start, losses = blob["epoch"], list(blob.get("losses", []))
    what = f"ASR-Net ({cfg.inputs})"
    saver = Checkpointer(
        ckpt, checkpoint_every, lambda blob: check_finite_weights(blob["members"], what)
    )
    bar = tqdm(
        desc=what,
        unit="epoch",
        initial=start,
        total=cfg.epochs,
        **({} if progress else {"disable": True}),
    )
    t0 = time.perf_counter()

    def state(epoch: int) -> dict:
        return dict(_blob(net, opt, epoch, cfg), losses=list(losses))

    try:
        for epoch in range(start, cfg.epochs):
            net.train()
            order = torch.from_numpy(epoch_order(n, cfg.seed, "asr", epoch=epoch)).to(device)
            total, count = 0.0, 0
            for b, s in enumerate(batch_starts(n, cfg.batch_size)):
                rows = order[s : s + cfg.batch_size]
                x, target = synthetic_anomalies(
                    images[rows],
                    cfg.seed,
                    epoch,
                    b,
                    p=cfg.p_anomaly,
                    donors=images,
                    own=rows.cpu(),
                    half_width=tuple(cfg.half_width),
                )
                with torch.no_grad():
                    maps = maps_of(x)
                loss = focal_loss(net(maps), target, cfg.gamma)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()), count + 1
            mean = total / max(count, 1)
            if not math.isfinite(mean):
                raise TrainingError(
                    f"{what}: the loss is {mean} in epoch {epoch + 1}: training diverged; try "
                    f"a lower learning rate (now {cfg.lr}) and check the maps for NaN"
                )
            losses.append(mean)
            bar.update(1)
            bar.set_postfix_str(f"loss {mean:.4g}")
            saver.epoch_done(partial(state, epoch + 1), final=epoch + 1 == cfg.epochs)
    except KeyboardInterrupt:
        saver.interrupted()
        raise
    finally:
        bar.close()
    check_finite_weights([net.state_dict()], what)
    return ASRResult(net.eval(), losses, time.perf_counter() - t0, start)
