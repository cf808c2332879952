"""Training an ensemble of K reconstruction networks (DDAD's module A or module B).

Members differ only in their random initialisation and their data order, both drawn from the
run's seed (:mod:`ddadlib.seeding`). Two paths train them, with the same result:

- **sequential**: each member in turn, one plain ``nn.Module`` and one Adam each. Fastest on
  CPU, where a quick measurement found the vectorised path slower (``benchmarks/
  bench_training.py``); on CPU the members also use the channels-last memory layout (about 1.1x).
- **vectorised**: the K members stacked into one model with ``torch.func`` (``vmap`` over
  ``functional_call``), so one kernel launch serves all K members. The default on CUDA, where a
  network this small is bound by kernel launches.

``tests/test_ensemble.py`` forces both paths on CPU in float64 and checks they give the same
weights. The training images are one tensor on the device for the whole run (no decoding per
epoch). Checkpoints hold the members' weights and Adam states in a form both paths read, so a run
resumes on either.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from ddadlib.devices import autocast
from ddadlib.errors import TrainingError
from ddadlib.models.backbones import AE, LATENT, build_backbone
from ddadlib.models.checkpoints import (
    CHECKPOINT_VERSION,
    Checkpointer,
    check_finite_weights,
    load_checkpoint,
)
from ddadlib.paper import PAPER_BATCH_SIZE, PAPER_BETAS, PAPER_EPOCHS, PAPER_K, PAPER_LR
from ddadlib.seeding import derive_seed, epoch_order, torch_seed


@dataclass
class EnsembleConfig:
    """What defines a trained module; two modules with equal configs and data are the same."""

    backbone: str = "ae"
    k: int = PAPER_K
    epochs: int = PAPER_EPOCHS
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = PAPER_LR
    betas: tuple[float, float] = PAPER_BETAS
    seed: int = 0
    module: str = "B"
    precision: str = "fp32"
    size: int = 64
    latent: int = LATENT

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        if d["latent"] == LATENT:  # as checkpoints were written before the latent was an option
            del d["latent"]
        return d


def build_member(cfg: EnsembleConfig, k: int) -> AE:
    """Member ``k`` freshly initialised, from its own seed."""
    with torch_seed(derive_seed(cfg.seed, cfg.module, k, "init")):
        return build_backbone(cfg.backbone, cfg.size, cfg.latent)


def build_members(cfg: EnsembleConfig) -> list[AE]:
    """The K freshly initialised members, each from its own seed."""
    return [build_member(cfg, k) for k in range(cfg.k)]


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Start indices of an epoch's batches; a last batch of a single image is dropped, because
    batch normalisation cannot train on one image."""
    starts = list(range(0, n, batch_size))
    if starts and n - starts[-1] < 2:
        starts.pop()
    return starts


def _adam(params, cfg: EnsembleConfig) -> torch.optim.Adam:
    params = list(params)
    # the fused kernel: one pass over the weights instead of a dozen (about 4x faster on a CPU,
    # a fifth of a training step); the same update up to float rounding
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)


def _laid_out_as(p: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` on ``p``'s device in ``p``'s memory layout: the fused Adam kernel walks a
    weight and its moments as flat arrays, so a checkpoint written by the other path (channels-
    last on one, stacked on the other) must be laid out as the weight it belongs to."""
    out = torch.empty_like(p, memory_format=torch.preserve_format)
    out.copy_(value)
    return out


def member_epoch(
    m: AE,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    order: torch.Tensor,
    cfg: EnsembleConfig,
    channels_last: bool,
) -> torch.Tensor:
    """One epoch of one member in the image ``order``; its mean loss over the batches. Both the
    sequential path and the parallel workers (:mod:`ddadlib.models.parallel`) train with it, so
    a member sees the same operations in the same order on either."""
    starts = batch_starts(images.shape[0], cfg.batch_size)
    total = torch.zeros((), device=images.device)
    for s in starts:
        x = images[order[s : s + cfg.batch_size]]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(images.device, cfg.precision):
            out = m(x)
        loss = m.loss(x, {key: v.float() for key, v in out.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    return total / max(len(starts), 1)


class _Sequential:
    """Members trained one after the other."""

    def __init__(self, members: list[AE], cfg: EnsembleConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.channels_last = device.type == "cpu"
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        self.members = [m.to(device=device, memory_format=fmt).train() for m in members]
        self.opts = [_adam(m.parameters(), cfg) for m in self.members]

    def epoch(
        self, images: torch.Tensor, orders: torch.Tensor, tick: Callable[[int], None]
    ) -> torch.Tensor:
        losses = []
        for k, (m, opt) in enumerate(zip(self.members, self.opts)):
            losses.append(member_epoch(m, opt, images, orders[k], self.cfg, self.channels_last))
            tick(1)
        return torch.stack(losses)

    def adam_states(self) -> list[dict]:
        out = []
        for m, opt in zip(self.members, self.opts):
            state = {}
            for name, p in m.named_parameters():
                st = opt.state.get(p)
                if st:
                    state[name] = {key: v.detach().clone() for key, v in st.items()}
            out.append(state)
        return out

    def load_adam_states(self, states: list[dict]) -> None:
        for m, opt, state in zip(self.members, self.opts, states):
            for name, p in m.named_parameters():
                if name in state:
                    opt.state[p] = {
                        key: _laid_out_as(p, v) if key != "step" else v
                        for key, v in state[name].items()
                    }

    def trained(self) -> list[AE]:
        return [m.to(memory_format=torch.contiguous_format).eval() for m in self.members]


class _Vectorised:
    """The K members as one stacked model: ``vmap`` over ``functional_call``."""

    def __init__(self, members: list[AE], cfg: EnsembleConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.template = [m.to(device) for m in members]
        params, buffers = stack_module_state(self.template)
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.buffers = buffers
        base = copy.deepcopy(self.template[0]).to("meta").train()
        self.base = base
        precision, dev = cfg.precision, device

        def member_loss(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            with autocast(dev, precision):
                out = functional_call(base, (p, b), (x,))
            return base.loss(x, {key: v.float() for key, v in out.items()})

        self.step_losses = vmap(member_loss)
        self.opt = _adam(list(self.params.values()), cfg)

    def epoch(
        self, images: torch.Tensor, orders: torch.Tensor, tick: Callable[[int], None]
    ) -> torch.Tensor:
        bs = self.cfg.batch_size
        starts = batch_starts(images.shape[0], bs)
        losses = torch.zeros(len(self.template), device=self.device)
        for s in starts:
            x = images[orders[:, s : s + bs]]  # (K, B, 1, S, S): each member its own batch
            per_member = self.step_losses(self.params, self.buffers, x)
            self.opt.zero_grad(set_to_none=True)
            per_member.sum().backward()
            self.opt.step()
            losses += per_member.detach()
        tick(len(self.template))
        return losses / max(len(starts), 1)

    def adam_states(self) -> list[dict]:
        out: list[dict] = [{} for _ in self.template]
        for name, p in self.params.items():
            st = self.opt.state.get(p)
            if not st:
                continue
            for k in range(len(out)):
                out[k][name] = {
                    key: (v.detach().clone() if key == "step" else v[k].detach().clone())
                    for key, v in st.items()
                }
        return out

    def load_adam_states(self, states: list[dict]) -> None:
        for name, p in self.params.items():
            if name not in states[0]:
                continue
            st = {"step": states[0][name]["step"]}
            for key in ("exp_avg", "exp_avg_sq"):
                st[key] = _laid_out_as(p, torch.stack([s[name][key] for s in states]))
            self.opt.state[p] = st

    def trained(self) -> list[AE]:
        for k, m in enumerate(self.template):
            sd = {n: v[k].detach() for n, v in {**self.params, **self.buffers}.items()}
            m.load_state_dict(sd)
        return [m.eval() for m in self.template]


def checkpoint_blob(trainer, epoch: int, cfg: EnsembleConfig) -> dict:
    """The training state after ``epoch`` epochs, as copies on the CPU."""
    members = [
        {n: v.detach().to("cpu", copy=True) for n, v in m.state_dict().items()}
        for m in _current_members(trainer)
    ]
    adam = [
        {n: {key: v.cpu() for key, v in st.items()} for n, st in s.items()}
        for s in trainer.adam_states()
    ]
    return make_checkpoint(cfg, epoch, members, adam)


def make_checkpoint(cfg: EnsembleConfig, epoch: int, members: list[dict], adam: list[dict]) -> dict:
    """A module's checkpoint after ``epoch`` epochs: its members' weights and Adam states (CPU
    copies), in the one format that every training path writes and reads."""
    return {
        "version": CHECKPOINT_VERSION,
        "config": cfg.to_dict(),
        "epoch": epoch,
        "members": members,
        "adam": adam,
    }


def _current_members(trainer) -> list[nn.Module]:
    if isinstance(trainer, _Vectorised):
        out = []
        for k in range(len(trainer.template)):
            m = copy.deepcopy(trainer.template[k])
            m.load_state_dict(
                {n: v[k].detach() for n, v in {**trainer.params, **trainer.buffers}.items()}
            )
            out.append(m)
        return out
    return trainer.members


def module_title(cfg: EnsembleConfig) -> str:
    """How messages and progress bars name a module, e.g. ``module B (ae, 3 members)``."""
    return f"module {cfg.module} ({cfg.backbone}, {cfg.k} members)"


def check_losses(
    epoch_losses: list[float], epoch: int, cfg: EnsembleConfig, ckpt: Path | None
) -> None:
    """A :class:`TrainingError` naming the members whose loss in ``epoch`` is not finite."""
    bad = [k + 1 for k, v in enumerate(epoch_losses) if not math.isfinite(v)]
    if bad:
        kept = f"; the checkpoint {ckpt} of an earlier epoch is kept" if ckpt else ""
        raise TrainingError(
            f"{module_title(cfg)}: the loss of member(s) {bad} is {epoch_losses} in epoch "
            f"{epoch + 1}: training diverged. Try a lower learning rate (now {cfg.lr}) or "
            f"float32 (now {cfg.precision}), and check the images for NaN{kept}"
        )


def start_trainer(images: torch.Tensor, cfg: EnsembleConfig, ckpt: Path | None, kind: type):
    """A trainer of ``kind`` for module ``cfg`` on ``images``, resumed from the checkpoint
    ``ckpt`` when there is one; with the epoch it starts from."""
    n = images.shape[0]
    if n < 2:
        raise TrainingError(f"module {cfg.module}: cannot train on {n} image(s)")
    if cfg.size != images.shape[-1]:
        raise ValueError(f"config size {cfg.size} but images are {images.shape[-1]} pixels")
    members = build_members(cfg)
    start = 0
    blob = load_checkpoint(ckpt, cfg.to_dict()) if ckpt is not None and ckpt.exists() else None
    if blob is not None:
        for m, sd in zip(members, blob["members"]):
            m.load_state_dict(sd)
        start = blob["epoch"]
    trainer = kind(members, cfg, images.device)
    if blob is not None:
        trainer.load_adam_states(blob["adam"])
    return trainer, start


@dataclass
class TrainResult:
    """Trained members and how the training went."""

    members: list[AE]
    losses: list[list[float]] = field(default_factory=list)  # per epoch, per member
    seconds: float = 0.0
    resumed_from: int = 0
    path: str = "sequential"


def train_ensemble(
    images: torch.Tensor,
    cfg: EnsembleConfig,
    *,
    vectorised: bool | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: float = 60.0,
    progress: bool = True,
    on_epoch: Callable[[int, list[float]], None] | None = None,
) -> TrainResult:
    """Train the K members of one module on ``images`` (float ``(N, 1, S, S)`` in [-1, 1], on
    the training device) and return them in eval mode.

    ``vectorised=None`` picks the path by device (CUDA: vectorised; otherwise sequential).
    With ``checkpoint``, the state is saved there atomically at most every ``checkpoint_every``
    seconds, after the last epoch and on an interrupt (``KeyboardInterrupt``: the epochs finished
    so far), and a run finds it and resumes. A loss or final weights that are not finite stop
    training with :class:`TrainingError`; the last checkpoint is kept.
    """
    device = images.device
    n = images.shape[0]
    if vectorised is None:
        vectorised = device.type == "cuda"
    ckpt = Path(checkpoint) if checkpoint is not None else None
    trainer, start = start_trainer(images, cfg, ckpt, _Vectorised if vectorised else _Sequential)
    losses: list[list[float]] = []
    t0 = time.perf_counter()
    what = module_title(cfg)
    # one step of the bar is one member's epoch, so members and epochs both show
    # without an explicit disable, tqdm's TQDM_DISABLE environment variable still applies
    bar = tqdm(
        desc=what,
        unit="member-epoch",
        initial=start * cfg.k,
        total=cfg.epochs * cfg.k,
        **({} if progress else {"disable": True}),
    )
    saver = Checkpointer(
        ckpt, checkpoint_every, lambda blob: check_finite_weights(blob["members"], what)
    )
    try:
        for epoch in range(start, cfg.epochs):
            orders = torch.from_numpy(
                np.stack(
                    [epoch_order(n, cfg.seed, cfg.module, k, epoch=epoch) for k in range(cfg.k)]
                )
            ).to(device)
            bar.set_postfix_str(f"epoch {epoch + 1}/{cfg.epochs}")
            epoch_losses = trainer.epoch(images, orders, bar.update).tolist()
            check_losses(epoch_losses, epoch, cfg, ckpt)
            losses.append(epoch_losses)
            bar.set_postfix_str(
                f"epoch {epoch + 1}/{cfg.epochs}, loss {sum(epoch_losses) / len(epoch_losses):.4g}"
            )
            if on_epoch is not None:
                on_epoch(epoch, epoch_losses)
            saver.epoch_done(
                partial(checkpoint_blob, trainer, epoch + 1, cfg), final=epoch + 1 == cfg.epochs
            )
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM, which the command line maps to it) keeps the finished epochs.
        saver.interrupted()
        raise
    finally:
        bar.close()
    final = [{n: v.detach() for n, v in m.state_dict().items()} for m in _current_members(trainer)]
    check_finite_weights(final, what)
    return TrainResult(
        trainer.trained(),
        losses,
        time.perf_counter() - t0,
        start,
        "vectorised" if vectorised else "sequential",
    )
