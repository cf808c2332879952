"""``DDAD``: the method as one estimator in the scikit-learn spirit.

>>> model = DDAD(backbone="aeu", k=3, epochs=250).fit(normal, unlabeled)   # doctest: +SKIP
>>> scores = model.score_samples(test_images)  # {"rec": ..., "inter": ...}  # doctest: +SKIP

``__init__`` stores settings and does no work; :meth:`DDAD.fit` trains module B (K networks on
the known-normal images Dn) and module A (K networks on Dn plus the unlabeled images Du);
learned state ends in an underscore. Scoring never trains. With ``backbone="fanogan"`` the model
is f-AnoGAN trained on Dn only (the paper's Table 2 comparison), with the single score ``rec``.
"""

from __future__ import annotations

import inspect
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddadlib.devices import pick_device, pick_precision, to_tensor
from ddadlib.errors import ConfigError, DataError
from ddadlib.fileio import atomic_write
from ddadlib.models.backbones import AE, BACKBONES
from ddadlib.models.checkpoints import check_finite_weights, nonfinite_members, read_torch_file
from ddadlib.models.ensemble import (
    EnsembleConfig,
    TrainResult,
    build_members,
    train_ensemble,
)
from ddadlib.models.fanogan import FAnoGAN, train_fanogan
from ddadlib.paper import PAPER_BATCH_SIZE, PAPER_EPOCHS, PAPER_K, PAPER_LR, SCORE_NAMES
from ddadlib.scoring.scores import image_scores, score_maps

MODEL_FORMAT = "ddadlib-model"
MODEL_VERSION = 1
BACKBONE_NAMES = tuple(BACKBONES) + ("fanogan",)
#: The settings that define what trains (the rest say where and how fast).
HYPERPARAMETERS = ("backbone", "k", "epochs", "batch_size", "lr", "seed")


class DDAD:
    """Dual-Distribution Discrepancy anomaly detection.

    Parameters are the paper's defaults (``docs/method.md``): Adam with lr 5e-4 and betas
    (0.5, 0.999) as in the authors' code, batch 64, 250 epochs, K = 3. ``seed`` sets every
    member's initialisation and data order. ``device="auto"`` takes CUDA, then MPS, then the CPU;
    ``precision="auto"`` is float32. ``vectorised=None`` trains the K members as one vectorised
    model on CUDA and one after the other elsewhere (see :mod:`ddadlib.models.ensemble`).
    """

    def __init__(
        self,
        backbone: str = "ae",
        k: int = PAPER_K,
        epochs: int = PAPER_EPOCHS,
        batch_size: int = PAPER_BATCH_SIZE,
        lr: float = PAPER_LR,
        seed: int = 0,
        device: str | None = "auto",
        precision: str | None = "auto",
        vectorised: bool | None = None,
        progress: bool = True,
    ) -> None:
        self.backbone = backbone
        self.k = k
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device
        self.precision = precision
        self.vectorised = vectorised
        self.progress = progress

    # -- settings --------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor's settings."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def _check_params(self) -> None:
        if self.backbone not in BACKBONE_NAMES:
            raise ConfigError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONE_NAMES)}"
            )
        if self.backbone != "fanogan" and self.k < 2:
            raise ConfigError(
                f"k must be at least 2 (the intra-discrepancy needs 2 members); got {self.k}"
            )
        if self.epochs < 1 or self.batch_size < 2 or not 0 < self.lr < math.inf:
            raise ConfigError("epochs >= 1, batch_size >= 2 and a finite lr > 0 are required")

    def module_config(self, module: str, size: int) -> EnsembleConfig:
        """The configuration of module ``"A"`` or ``"B"`` for images of ``size`` pixels."""
        return EnsembleConfig(
            **{name: getattr(self, name) for name in HYPERPARAMETERS},
            module=module,
            precision=self.precision_,
            size=size,
        )

    # -- training --------------------------------------------------------------------------
    def fit(
        self,
        normal: np.ndarray | torch.Tensor,
        unlabeled: np.ndarray | torch.Tensor | None = None,
        *,
        module_b: list[AE] | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> DDAD:
        """Train module B on ``normal`` (Dn) and module A on ``normal`` plus ``unlabeled`` (Du).

        Images are uint8 ``(N, S, S)`` arrays or float tensors in [-1, 1]. ``module_b`` reuses
        an already trained module B (it does not depend on Du). With ``checkpoint_dir``,
        training saves checkpoints there and resumes from them.
        """
        self._check_params()
        self.device_ = pick_device(self.device)
        self.precision_ = pick_precision(self.precision, self.device_)
        dn = to_tensor(normal, self.device_)
        self.size_ = int(dn.shape[-1])
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.history_: dict[str, Any] = {}
        if self.backbone == "fanogan":
            t0 = time.perf_counter()
            net = train_fanogan(
                dn,
                epochs=self.epochs,
                seed=self.seed,
                encoder_lr=self.lr,
                batch_size=self.batch_size,
                progress=self.progress,
            )
            self.history_["B"] = {
                "losses": net.history,
                "seconds": time.perf_counter() - t0,
                "n_images": int(dn.shape[0]),
                "path": "f-AnoGAN",
            }
            self.module_b_ = [net]
            self.module_a_ = None
            return self
        if module_b is not None:
            if len(module_b) != self.k:
                raise ValueError(f"module_b has {len(module_b)} members, k is {self.k}")
            self.module_b_ = [m.to(self.device_).eval() for m in module_b]
        else:
            self.module_b_ = self._train("B", dn, ckpt)
        if unlabeled is None or len(unlabeled) == 0:
            du = dn[:0]
        else:
            du = to_tensor(unlabeled, self.device_)
            if du.shape[-1] != self.size_:
                raise ValueError(
                    f"unlabeled images are {du.shape[-1]} pixels, normal images {self.size_}"
                )
        self.module_a_ = self._train("A", torch.cat([dn, du]), ckpt)
        return self

    def _train(self, module: str, images: torch.Tensor, ckpt: Path | None) -> list[AE]:
        result: TrainResult = train_ensemble(
            images,
            self.module_config(module, self.size_),
            vectorised=self.vectorised,
            checkpoint=ckpt / f"{module}.ckpt" if ckpt is not None else None,
            progress=self.progress,
        )
        self.history_[module] = {
            "losses": result.losses,
            "seconds": result.seconds,
            "resumed_from_epoch": result.resumed_from,
            "path": result.path,
            "n_images": int(images.shape[0]),
        }
        return result.members

    def _check_fitted(self) -> None:
        if not hasattr(self, "module_b_"):
            raise RuntimeError("this DDAD model is not fitted yet; call fit() or DDAD.load()")

    # -- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def _maps_of(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.backbone == "fanogan":
            (model,) = self.module_b_
            recon = model(x)["recon"]
            return {
                "rec": model.anomaly_maps(x)[None],
                "mu_B": recon,
                "_score": model.score(x)[None],
            }
        outs_b = [m(x) for m in self.module_b_]
        recon_b = torch.stack([o["recon"] for o in outs_b]).float()
        logvar_b = (
            torch.stack([o["logvar"] for o in outs_b]).float() if "logvar" in outs_b[0] else None
        )
        recon_a = torch.stack([m(x)["recon"] for m in self.module_a_]).float()
        maps = score_maps(x, recon_b, recon_a, logvar_b)
        maps["mu_A"] = recon_a.mean(0)
        maps["mu_B"] = recon_b.mean(0)
        if logvar_b is not None:
            maps["sigma2"] = torch.exp(logvar_b).mean(0)
        return maps

    def _batches(self, images, batch_size: int):
        self._check_fitted()
        x_all = images if isinstance(images, torch.Tensor) else np.asarray(images)
        if len(x_all) == 0:
            raise ValueError("no images to score (an empty set)")
        if x_all.shape[-1] != self.size_:
            raise ValueError(f"images are {x_all.shape[-1]} pixels; this model takes {self.size_}")
        for s in range(0, len(x_all), batch_size):
            yield self._maps_of(to_tensor(x_all[s : s + batch_size], self.device_))

    def _collect(
        self, images, batch_size: int, want_maps: bool, want_scores: bool
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One pass of the networks over ``images``, gathering maps and/or image scores."""
        map_parts: dict[str, list[np.ndarray]] = {}
        score_parts: dict[str, list[np.ndarray]] = {}
        for maps in self._batches(images, batch_size):
            if want_maps:
                for name, v in maps.items():
                    if not name.startswith("_"):
                        map_parts.setdefault(name, []).append(v.squeeze(-3).cpu().numpy())
            if want_scores:
                if self.backbone == "fanogan":
                    got = {"rec_members": maps["_score"]}
                else:
                    got = {n: image_scores(maps[n]) for n in SCORE_NAMES}
                    got["rec_members"] = got.pop("rec")
                for name, v in got.items():
                    score_parts.setdefault(name, []).append(v.cpu().numpy().astype(np.float64))
        maps_out = {n: np.concatenate(v, axis=1 if n == "rec" else 0) for n, v in map_parts.items()}
        scores_out: dict[str, np.ndarray] = {}
        if want_scores:
            members = np.concatenate(score_parts.pop("rec_members"), axis=1)
            scores_out = {
                "rec": members[0],
                "rec_members": members,
                **{n: np.concatenate(v) for n, v in score_parts.items()},
            }
        return maps_out, scores_out

    def score_maps(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """Pixel maps of every score, as float32 arrays ``(N, S, S)`` (``rec``: ``(K, N, S,
        S)``, one map per network of module B), plus the reconstructions ``mu_A`` and
        ``mu_B`` (in [-1, 1]) and, for AE-U, ``sigma2``."""
        return self._collect(images, batch_size, want_maps=True, want_scores=False)[0]

    def score_samples(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 256
    ) -> dict[str, np.ndarray]:
        """Image scores (the mean of each map over pixels), higher = more anomalous.

        ``rec`` is the score of module B's first network alone (the baseline of one network
        trained on Dn) and ``rec_members`` holds all K, ``(K, N)``; then ``rec_ensemble``,
        ``intra`` and ``inter``. f-AnoGAN gives ``rec`` only (pixel plus critic-feature
        residual).
        """
        return self._collect(images, batch_size, want_maps=False, want_scores=True)[1]

    def score_all(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 256
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """:meth:`score_maps` and :meth:`score_samples` from one pass over ``images``."""
        return self._collect(images, batch_size, want_maps=True, want_scores=True)

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one file, atomically."""
        self._check_fitted()
        path = Path(path)
        for name, nets in (("B", self.module_b_), ("A", self.module_a_ or [])):
            check_finite_weights([_cpu_state(m) for m in nets], f"module {name}")
        blob = {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "params": self.get_params(),
            "size": self.size_,
            "precision": self.precision_,
            "module_b": [_cpu_state(m) for m in self.module_b_],
            "module_a": (
                [_cpu_state(m) for m in self.module_a_] if self.module_a_ is not None else None
            ),
            "history": self.history_,
        }
        buf = io.BytesIO()
        torch.save(blob, buf)
        atomic_write(path, lambda fh: fh.write(buf.getvalue()))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = "auto") -> DDAD:
        """A model written by :meth:`save`, on ``device`` (default: the best available)."""
        path = Path(path)
        blob = read_torch_file(
            path,
            "model",
            DataError,
            fix="train the run again (delete model.pt and rerun `ddad train`)",
        )
        if blob.get("format") != MODEL_FORMAT:
            raise DataError(f"{path}: not a ddadlib model file")
        if not isinstance(blob.get("version"), int) or blob["version"] > MODEL_VERSION:
            raise DataError(f"{path}: written by a newer ddadlib (format {blob.get('version')})")
        missing = [
            k for k in ("params", "size", "precision", "module_b", "module_a") if k not in blob
        ]
        if missing:
            raise DataError(f"{path}: damaged model file (no {', '.join(missing)})")
        params = dict(blob["params"], device=device)
        try:
            model = cls(**params)
        except TypeError as exc:
            raise DataError(f"{path}: damaged model file (settings: {exc})") from None
        model.device_ = pick_device(device)
        model.precision_ = blob["precision"]
        model.size_ = blob["size"]
        model.history_ = blob.get("history", {})
        model.module_b_ = model._restore("B", blob["module_b"], path)
        model.module_a_ = (
            model._restore("A", blob["module_a"], path) if blob["module_a"] is not None else None
        )
        if model.module_a_ is None and model.backbone != "fanogan":
            raise DataError(
                f"{path}: damaged model file (a {model.backbone} model without module A)"
            )
        return model

    def _restore(self, module: str, states: list[dict], path: Path) -> list:
        if self.backbone == "fanogan":
            nets = [FAnoGAN(size=self.size_)]
        else:
            nets = build_members(self.module_config(module, self.size_))
        # zip() would leave networks that the file does not store at their random initialisation
        if not isinstance(states, list) or len(states) != len(nets):
            raise DataError(
                f"{path}: damaged model file: it records {len(nets)} network(s) in "
                f"module {module} but stores "
                f"{len(states) if isinstance(states, list) else 'none'}"
            )
        bad = nonfinite_members(states)
        if bad:
            raise DataError(
                f"{path}: the weights of network(s) {bad} of module {module} are not "
                "finite (NaN or infinity): the model is unusable; train it again"
            )
        for net, sd in zip(nets, states):
            try:
                net.load_state_dict(sd)
            except (RuntimeError, TypeError, AttributeError) as exc:
                reason = str(exc).strip().splitlines()[0][:200]
                raise DataError(f"{path}: damaged model file (module {module}: {reason})") from None
        return [net.to(self.device_).eval() for net in nets]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={v!r}" for k, v in self.get_params().items() if k not in ("progress",)
        )
        return f"DDAD({shown})"


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: v.detach().cpu() for n, v in module.state_dict().items()}
