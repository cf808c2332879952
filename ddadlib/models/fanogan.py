"""f-AnoGAN, the comparison method of the DDAD paper's Table 2 (Schlegl et al., Medical Image
Analysis 2019), as plain ``nn.Module`` s and one training function.

The DDAD authors' code does not include f-AnoGAN; the paper fixes only the method (a WGAN-GP,
then an izi_f encoder with generator and critic frozen, the izi_f residual as anomaly score,
kappa = 1). Every other setting below is this module's choice, sized like the DDAD autoencoders
(``backbones.py``, "the same 64x64 budget"). Written for 64x64; other square sizes (a power of two,
at least 8) add or drop stride-2 stages exactly as :func:`ddadlib.models.backbones.stage_channels` does.

Networks (S = 64; channels 16-32-64-64 as the AE):

- :class:`Generator`: z (128) -> Linear 128->1024 (no bias), BatchNorm, ReLU, reshaped to 64x4x4;
  3 x [ConvTranspose 4x4 stride 2 pad 1 (no bias), BN, ReLU], channels 64-64-32-16; then
  ConvTranspose 16->1 (with bias) and tanh, so images lie in [-1, 1] like the data.
- :class:`Critic`: 4 x [Conv 4x4 stride 2 pad 1 (with bias), LeakyReLU 0.2], channels
  16-32-64-64, no normalisation (the gradient penalty is per sample, so no BatchNorm); the
  flattened 64x4x4 = 1024 activations are its *features* f(x); Linear 1024->1 gives the value.
- :class:`Encoder`: the AE's encoder, 4 x [Conv 4x4 stride 2 pad 1 (no bias), BN, ReLU],
  channels 16-32-64-64, then Linear 1024->128 and tanh.
- Latent prior: z ~ U(-1, 1)^128, so the tanh of the encoder spans exactly the region the
  generator was trained on.
- PyTorch's default initialisation everywhere.

Training (:func:`train_fanogan`), batch 64:

- Stage 1, WGAN-GP (Gulrajani et al. 2017): critic loss ``C(G(z)) - C(x) + 10 * GP`` with the
  gradient penalty ``(||grad C(x_hat)|| - 1)^2`` on random interpolates ``x_hat`` of real and fake
  images; generator loss ``-C(G(z))``; Adam lr 1e-4, betas (0.0, 0.9) for both; one generator
  step after every 5th critic step (the count runs on across epochs). One *epoch* is one pass of
  the critic over the data: each critic step takes the next batch of real images, so an epoch
  has ceil(N / 64) critic steps and about a fifth as many generator steps.
- Stage 2, izi_f encoder (as many epochs as stage 1 unless told): generator and critic frozen and
  in eval mode, the encoder trained on the mean over the batch of the izi_f residual below; Adam
  lr 5e-4, betas (0.5, 0.999), as the DDAD autoencoders.
- A last batch of a single image is skipped (BatchNorm needs two).
- Optionally in bfloat16 autocast (``precision="bf16"``) and with a checkpoint that a later call
  resumes from, bit for bit on the CPU: the same machinery as the AE ensemble
  (:mod:`ddadlib.models.checkpoints`).

Score (:meth:`FAnoGAN.score`), with kappa = 1: the izi_f residual
``mean_pixels (x - G(E(x)))^2 + kappa * mean_features (f(x) - f(G(E(x))))^2``;
the anomaly map (:meth:`FAnoGAN.anomaly_maps`) is the pixel part, ``(x - G(E(x)))^2``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ddadlib.devices import autocast, pick_precision
from ddadlib.errors import DataError, TrainingError
from ddadlib.models.backbones import BOTTLENECK_SIZE, down_block, stage_channels, up_block
from ddadlib.models.checkpoints import (
    CHECKPOINT_VERSION,
    Checkpointer,
    check_finite_weights,
    load_checkpoint,
)
from ddadlib.models.ensemble import batch_starts
from ddadlib.paper import PAPER_BATCH_SIZE, PAPER_BETAS, PAPER_LR
from ddadlib.seeding import derive_seed, epoch_order, torch_seed

#: Dimension of the generator's latent space (the f-AnoGAN paper's 128).
LATENT_DIM = 128
#: Images per forward pass in :meth:`FAnoGAN.score` and :meth:`FAnoGAN.anomaly_maps`.
CHUNK = 256


def _down_leaky(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))


class Generator(nn.Module):
    """G: a latent code ``(B, 128)`` in [-1, 1] to an image ``(B, 1, S, S)`` in [-1, 1]."""

    def __init__(self, size: int = 64, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.size = size
        rev = stage_channels(size)[::-1]
        flat = rev[0] * BOTTLENECK_SIZE**2
        self.from_latent = nn.Sequential(
            nn.Linear(latent_dim, flat, bias=False), nn.BatchNorm1d(flat), nn.ReLU(inplace=True)
        )
        self.decoder = nn.Sequential(
            *[up_block(a, b) for a, b in zip(rev[:-1], rev[1:])],
            nn.ConvTranspose2d(rev[-1], 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(z.shape[0], -1, BOTTLENECK_SIZE, BOTTLENECK_SIZE)
        return self.decoder(h)


class Critic(nn.Module):
    """The WGAN-GP critic: an image ``(B, 1, S, S)`` to a value ``(B,)``; no BatchNorm."""

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        self.size = size
        ch = stage_channels(size)
        self.body = nn.Sequential(*[_down_leaky(a, b) for a, b in zip([1] + ch[:-1], ch)])
        self.head = nn.Linear(ch[-1] * BOTTLENECK_SIZE**2, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden activations f(x), flattened: ``(B, 64 * 4 * 4)``."""
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


class Encoder(nn.Module):
    """E: an image ``(B, 1, S, S)`` to a latent code ``(B, 128)`` in (-1, 1) (tanh)."""

    def __init__(self, size: int = 64, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.size = size
        ch = stage_channels(size)
        self.encoder = nn.Sequential(*[down_block(a, b) for a, b in zip([1] + ch[:-1], ch)])
        self.to_latent = nn.Linear(ch[-1] * BOTTLENECK_SIZE**2, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.to_latent(self.encoder(x).flatten(1)))


@contextlib.contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; every submodule's own mode is restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class FAnoGAN(nn.Module):
    """f-AnoGAN with the izi_f encoder: ``generator``, ``critic``, ``encoder`` and ``kappa``.

    Train it with :func:`train_fanogan`; ``history`` then holds the mean losses of each epoch,
    ``{"gan": [{"critic": ..., "wasserstein": ..., "generator": ...}, ...], "encoder": [...]}``,
    and ``resumed_from`` where a checkpoint let the training resume.
    """

    def __init__(self, size: int = 64, kappa: float = 1.0) -> None:
        super().__init__()
        self.size = size
        self.kappa = kappa
        self.generator = Generator(size)
        self.critic = Critic(size)
        self.encoder = Encoder(size)
        self.history: dict[str, list[dict[str, float]]] = {"gan": [], "encoder": []}
        #: where :func:`train_fanogan` resumed from a checkpoint: (stage, epochs of that stage
        #: already trained), or None for a training from the start
        self.resumed_from: tuple[str, int] | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"recon": self.generator(self.encoder(x))}

    def residuals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two izi_f terms of each image, ``(B,)`` each, with gradients: the mean over pixels
        of ``(x - G(E(x)))^2`` and the mean over critic features of ``(f(x) - f(G(E(x))))^2``."""
        recon = self.generator(self.encoder(x))
        f_x, f_recon = self.critic.features(x), self.critic.features(recon)
        # float() is a no-op in float32; under bfloat16 autocast the residuals stay float32
        pixel = (x - recon.float()).pow(2).flatten(1).mean(1)
        feature = (f_x.float() - f_recon.float()).pow(2).mean(1)
        return pixel, feature

    def _chunked(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        device = next(self.parameters()).device
        with _evaluating(self):
            parts = [fn(x[i : i + CHUNK].to(device)).to(x.device) for i in range(0, len(x), CHUNK)]
        return torch.cat(parts) if parts else x.new_zeros((0,))

    @torch.no_grad()
    def anomaly_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel anomaly maps ``(x - G(E(x)))^2``, ``(B, 1, S, S)``, in eval mode."""
        if len(x) == 0:
            return x.new_zeros(x.shape)
        return self._chunked(x, lambda c: (c - self(c)["recon"]).pow(2))

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Image anomaly scores ``(B,)``: the izi_f residual pixel + kappa * feature, in eval
        mode."""

        def one(c: torch.Tensor) -> torch.Tensor:
            pixel, feature = self.residuals(c)
            return pixel + self.kappa * feature

        return self._chunked(x, one)


def _batches(order: np.ndarray, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Index batches in ``order``; a last batch of one image is skipped (BatchNorm)."""
    idx = torch.as_tensor(order, device=device)
    for start in batch_starts(len(idx), batch_size):
        yield idx[start : start + batch_size]


def _latent(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, LATENT_DIM, generator=gen, device=device) * 2 - 1


def _gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator, precision: str
) -> torch.Tensor:
    """Mean of ``(||grad C(x_hat)||_2 - 1)^2`` at random interpolates of real and fake images."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=gen, device=real.device)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    with autocast(real.device, precision):
        value = critic(mix).float().sum()
    (grad,) = torch.autograd.grad(value, mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _check_finite(
    losses: dict[str, float], stage: str, epoch: int, epochs: int, lr_name: str, lr: float
) -> None:
    if not all(math.isfinite(v) for v in losses.values()):
        shown = ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
        raise TrainingError(
            f"f-AnoGAN {stage} stage: the loss is not finite in epoch {epoch + 1} of {epochs} "
            f"({shown}); try a lower learning rate ({lr_name}={lr:g})"
        )


def _bar(epochs: int, start: int, desc: str, progress: bool) -> tqdm:
    # without an explicit disable, tqdm's TQDM_DISABLE environment variable still applies
    return tqdm(
        total=epochs,
        initial=start,
        desc=desc,
        unit="epoch",
        **({} if progress else {"disable": True}),
    )


def _cpu_copy(obj):
    """``obj`` (tensors in dicts and lists) with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


#: The networks of a checkpoint, in the order of :func:`check_finite_weights`' names.
_NETS = ("generator", "critic", "encoder")


class _Training:
    """One f-AnoGAN training: the model, an Adam for each network, the noise generator and how
    far each stage got; :meth:`state` and :meth:`restore` are its checkpoint."""

    def __init__(self, model: FAnoGAN, images: torch.Tensor, config: dict) -> None:
        self.model, self.images, self.config = model, images, config
        self.device = images.device
        self.precision = config["precision"]
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(derive_seed(config["seed"], "fanogan", "noise"))
        gan = dict(lr=config["lr"], betas=(0.0, 0.9))
        self.opts = {
            "generator": torch.optim.Adam(model.generator.parameters(), **gan),
            "critic": torch.optim.Adam(model.critic.parameters(), **gan),
            "encoder": torch.optim.Adam(
                model.encoder.parameters(), lr=config["encoder_lr"], betas=PAPER_BETAS
            ),
        }
        # the critic steps so far (one generator step after every n_critic-th, across epochs)
        self.critic_steps = 0
        self.done = {"gan": 0, "encoder": 0}  # epochs finished in each stage

    def state(self, stage: str) -> dict:
        """The checkpoint after the epoch of ``stage`` just finished, as copies on the CPU."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config,
            "stage": stage,
            "epoch": self.done[stage],
            "encoder_epoch": self.done["encoder"],
            "critic_steps": self.critic_steps,
            "noise": self.gen.get_state(),
            "history": _cpu_copy(self.model.history),
            **{name: _cpu_copy(getattr(self.model, name).state_dict()) for name in _NETS},
            "adam": {name: _cpu_copy(opt.state_dict()) for name, opt in self.opts.items()},
        }

    def restore(self, blob: dict, path: Path) -> None:
        """Continue from the checkpoint ``blob`` read from ``path``."""
        try:
            for name in _NETS:
                getattr(self.model, name).load_state_dict(blob[name])
                self.opts[name].load_state_dict(blob["adam"][name])
            self.gen.set_state(blob["noise"])
            self.critic_steps = int(blob["critic_steps"])
            gan_done = blob["epoch"] if blob["stage"] == "gan" else self.config["epochs"]
            self.done = {"gan": int(gan_done), "encoder": int(blob["encoder_epoch"])}
            self.model.history = {k: [dict(h) for h in v] for k, v in blob["history"].items()}
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise DataError(
                f"{path}: not a complete f-AnoGAN checkpoint ({type(exc).__name__}: "
                f"{str(exc)[:200]}); delete it to train f-AnoGAN again from its start"
            ) from None
        self.model.resumed_from = (blob["stage"], int(blob["epoch"]))


def _critic_step(t: _Training, real: torch.Tensor, gp_weight: float) -> torch.Tensor:
    """One WGAN-GP critic step on the batch ``real``; returns (critic loss, Wasserstein
    estimate), detached."""
    G, C, opt = t.model.generator, t.model.critic, t.opts["critic"]
    with torch.no_grad(), autocast(t.device, t.precision):
        fake = G(_latent(len(real), t.gen, t.device)).float()
    with autocast(t.device, t.precision):
        wasserstein = C(real).float().mean() - C(fake).float().mean()
    loss = -wasserstein + gp_weight * _gradient_penalty(C, real, fake, t.gen, t.precision)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return torch.stack([loss.detach(), wasserstein.detach()])


def _generator_step(t: _Training, batch_size: int) -> torch.Tensor:
    """One generator step on ``batch_size`` latent codes (critic frozen); returns the loss."""
    G, C, opt = t.model.generator, t.model.critic, t.opts["generator"]
    C.requires_grad_(False)
    try:
        with autocast(t.device, t.precision):
            loss = -C(G(_latent(batch_size, t.gen, t.device))).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    finally:
        C.requires_grad_(True)
    return loss.detach()


def _encoder_step(t: _Training, x: torch.Tensor) -> torch.Tensor:
    """One izi_f encoder step on the batch ``x``; returns (loss, pixel, feature), detached."""
    model, opt = t.model, t.opts["encoder"]
    with autocast(t.device, t.precision):
        pixel, feature = model.residuals(x)
    loss = (pixel + model.kappa * feature).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return torch.stack([loss, pixel.mean(), feature.mean()]).detach()


def _train_gan(
    t: _Training,
    *,
    n_critic: int,
    gp_weight: float,
    progress: bool,
    after_epoch: Callable[[str, int], None],
) -> None:
    cfg, images, model = t.config, t.images, t.model
    epochs, batch_size = cfg["epochs"], cfg["batch_size"]
    model.generator.train()
    model.critic.train()
    with _bar(epochs, t.done["gan"], "f-AnoGAN WGAN-GP", progress) as bar:
        for epoch in range(t.done["gan"], epochs):
            c_sum = torch.zeros(2, device=t.device)  # critic loss, Wasserstein estimate
            g_sum = torch.zeros((), device=t.device)
            n_c = n_g = 0
            order = epoch_order(len(images), cfg["seed"], "fanogan", "gan", epoch=epoch)
            for idx in _batches(order, batch_size, t.device):
                c_sum, n_c = c_sum + _critic_step(t, images[idx], gp_weight), n_c + 1
                t.critic_steps += 1
                if t.critic_steps % n_critic == 0:
                    g_sum, n_g = g_sum + _generator_step(t, batch_size), n_g + 1
            critic, wasserstein = (c_sum / max(n_c, 1)).tolist()
            losses = {"critic": critic, "wasserstein": wasserstein}
            if n_g:
                losses["generator"] = (g_sum / n_g).item()
            _check_finite(losses, "WGAN-GP", epoch, epochs, "lr", cfg["lr"])
            model.history["gan"].append(losses)
            t.done["gan"] = epoch + 1
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()})
            bar.update()
            after_epoch("gan", epoch)


def _train_encoder(
    t: _Training, *, progress: bool, after_epoch: Callable[[str, int], None]
) -> None:
    cfg, images, model = t.config, t.images, t.model
    epochs = cfg["encoder_epochs"]
    frozen = (model.generator, model.critic)
    for net in frozen:
        net.eval()
        net.requires_grad_(False)
    model.encoder.train()
    try:
        with _bar(epochs, t.done["encoder"], "f-AnoGAN encoder", progress) as bar:
            for epoch in range(t.done["encoder"], epochs):
                sums = torch.zeros(3, device=t.device)
                n = 0
                order = epoch_order(len(images), cfg["seed"], "fanogan", "encoder", epoch=epoch)
                for idx in _batches(order, cfg["batch_size"], t.device):
                    sums += _encoder_step(t, images[idx])
                    n += 1
                values = (sums / max(n, 1)).tolist()
                losses = dict(zip(("izi_f", "pixel", "feature"), values))
                _check_finite(losses, "encoder", epoch, epochs, "encoder_lr", cfg["encoder_lr"])
                model.history["encoder"].append(losses)
                t.done["encoder"] = epoch + 1
                bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()})
                bar.update()
                after_epoch("encoder", epoch)
    finally:
        for net in frozen:
            net.requires_grad_(True)


def train_fanogan(
    images: torch.Tensor,
    *,
    epochs: int,
    seed: int,
    batch_size: int = PAPER_BATCH_SIZE,
    encoder_epochs: int | None = None,
    n_critic: int = 5,
    gp_weight: float = 10.0,
    kappa: float = 1.0,
    size: int | None = None,
    lr: float = 1e-4,
    encoder_lr: float = PAPER_LR,
    precision: str = "fp32",
    checkpoint: Path | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
    on_epoch: Callable[[str, int, FAnoGAN], None] | None = None,
) -> FAnoGAN:
    """Train f-AnoGAN on normal ``images`` ``(N, 1, S, S)`` in [-1, 1] and return it in eval
    mode, on the images' device.

    Stage 1 trains the WGAN-GP for ``epochs`` passes of the critic over the data, stage 2 the
    izi_f encoder for ``encoder_epochs`` (default ``epochs``); see the module docstring.
    ``precision`` is ``"fp32"`` or ``"bf16"`` (autocast of the networks' forward passes; the
    losses stay float32), as in :func:`~ddadlib.models.ensemble.train_ensemble`.
    ``on_epoch(stage, epoch, model)``, with stage ``"gan"`` or ``"encoder"`` and the 0-based index
    of the epoch just finished, is called after each epoch. The same seed on the same device gives
    the same model (on a GPU, bit for bit only with deterministic algorithms).

    With ``checkpoint`` (a file path), the training state (the three networks, their Adam states,
    the noise generator's state, the stage and its epoch) is saved there atomically at most every
    ``checkpoint_every`` seconds, at the end of each stage and on an interrupt
    (``KeyboardInterrupt``: the epochs finished so far), by the ensemble's
    :class:`~ddadlib.models.checkpoints.Checkpointer`; a later call with the same settings finds it
    and resumes, to the same weights as a training without a break (on the CPU, bit for bit). A
    checkpoint of other settings raises :class:`~ddadlib.errors.TrainingError`, a damaged one
    :class:`~ddadlib.errors.DataError`. Raises :class:`~ddadlib.errors.TrainingError` when a loss
    stops being finite (the last checkpoint is kept).
    """
    if (
        not isinstance(images, torch.Tensor)
        or not images.is_floating_point()
        or images.ndim != 4
        or images.shape[1] != 1
        or images.shape[2] != images.shape[3]
    ):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, 1, S, S), got {shape}")
    if size is not None and size != images.shape[-1]:
        raise ValueError(f"size={size} but the images are {images.shape[-1]}x{images.shape[-1]}")
    size = int(images.shape[-1])
    stage_channels(size)  # checks the size
    encoder_epochs = epochs if encoder_epochs is None else encoder_epochs
    if len(images) < 2:
        raise ValueError(f"f-AnoGAN needs at least 2 training images, got {len(images)}")
    if epochs < 0 or encoder_epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs} and encoder_epochs={encoder_epochs}")
    if batch_size < 2 or n_critic < 1:
        raise ValueError(f"batch_size must be >= 2 and n_critic >= 1, got {batch_size}, {n_critic}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values")
    precision = pick_precision(precision, images.device)
    # every setting that changes the result: a checkpoint resumes only under the same ones
    config = {
        "trainer": "fanogan",
        "size": size,
        "n_images": len(images),
        "epochs": int(epochs),
        "encoder_epochs": int(encoder_epochs),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "n_critic": int(n_critic),
        "gp_weight": float(gp_weight),
        "kappa": float(kappa),
        "lr": float(lr),
        "encoder_lr": float(encoder_lr),
        "precision": precision,
    }

    with torch_seed(derive_seed(seed, "fanogan", "init")):
        model = FAnoGAN(size, kappa=kappa)
    model.to(images.device)
    t = _Training(model, images, config)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        t.restore(load_checkpoint(ckpt, config), ckpt)

    def check(blob: dict) -> None:
        check_finite_weights([blob[name] for name in _NETS], "f-AnoGAN", names=_NETS)

    saver = Checkpointer(ckpt, checkpoint_every, check)

    def after_epoch(stage: str, epoch: int) -> None:
        if on_epoch is not None:
            on_epoch(stage, epoch, model)
        last = epoch + 1 == config["epochs" if stage == "gan" else "encoder_epochs"]
        saver.epoch_done(partial(t.state, stage), final=last)

    try:
        _train_gan(
            t, n_critic=n_critic, gp_weight=gp_weight, progress=progress, after_epoch=after_epoch
        )
        _train_encoder(t, progress=progress, after_epoch=after_epoch)
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM, which the command line maps to it) keeps the finished epochs.
        saver.interrupted()
        raise
    return model.eval()
