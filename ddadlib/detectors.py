"""Anomaly detectors behind one protocol: :class:`DDAD` (the method), :class:`FAnoGAN`
(the paper's Table 2 comparison) and :class:`Refiner` (the journal's refinement of a fitted
DDAD, DDAD-ASR), in the scikit-learn spirit.

>>> model = DDAD(backbone="aeu", k=3, epochs=250).fit(normal, unlabeled)   # doctest: +SKIP
>>> scores = model.score_samples(test_images)  # {"rec": (K, N), "inter": (N,), ...}  # doctest: +SKIP

``__init__`` stores settings and does no work; ``fit`` trains, learned state ends in an
underscore, scoring never trains. Every detector satisfies :class:`Detector`; the rest of the
library asks the registry (:data:`DETECTORS`, :func:`detector_for`, :func:`load_detector`)
which class a backbone name means and never branches on the name itself.

``rec`` means one thing everywhere: the reconstruction errors of each network of module B
alone, ``(K, N)`` image scores and ``(K, N, S, S)`` maps (f-AnoGAN: one network, ``K = 1``).
The error of the networks' mean reconstruction is ``rec_ensemble``, never ``rec``.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from ddadlib.devices import CpuPlan, cpu_plan, pick_device, pick_precision, to_tensor, torch_threads
from ddadlib.errors import ConfigError, DataError
from ddadlib.fileio import atomic_write
from ddadlib.models.asr import REFINER_INPUTS, ASRConfig, ASRNet, train_asr
from ddadlib.models.backbones import AE, BACKBONES, LATENT
from ddadlib.models.checkpoints import check_finite_weights, nonfinite_members, read_torch_file
from ddadlib.models.ensemble import EnsembleConfig, build_members
from ddadlib.models.fanogan import FAnoGAN as FAnoGANNetwork
from ddadlib.models.fanogan import train_fanogan
from ddadlib.models.parallel import ModuleJob, train_ensembles
from ddadlib.paper import (
    ASR_BATCH_SIZE,
    ASR_EPOCHS,
    ASR_LR,
    ASR_WEIGHT_DECAY,
    PAPER_BATCH_SIZE,
    PAPER_EPOCHS,
    PAPER_K,
    PAPER_LR,
    REFINED_SCORES,
    SCORE_NAMES,
)
from ddadlib.scoring.scores import image_scores, score_maps

MODEL_FORMAT = "ddadlib-model"
MODEL_VERSION = 1
#: The settings that define what trains (the rest say where and how fast).
HYPERPARAMETERS = ("backbone", "k", "epochs", "batch_size", "lr", "seed", "latent")
#: The settings every detector takes (its constructor's keywords, in ``model.pt``'s order).
PARAMS = (*HYPERPARAMETERS, "device", "precision", "vectorised", "progress", "workers", "threads")

Images = np.ndarray | torch.Tensor


@runtime_checkable
class Detector(Protocol):
    """What the run layer, the views and the CLI need of an anomaly detector.

    ``score_names``: the image scores :meth:`score_samples` gives, in the order tables show
    them (``rec`` is ``(K, N)``, the others ``(N,)``); ``map_names``: the maps that figures show
    (:meth:`shown_maps`); ``uses_unlabeled``: whether ``fit`` takes the unlabeled images Du
    (else there is no AR and no M); ``ensemble``: whether ``k`` sets a number of networks.
    A fitted detector holds ``history_`` (losses and wall time of what trained)."""

    backbone: str
    score_names: ClassVar[tuple[str, ...]]
    map_names: ClassVar[tuple[str, ...]]
    uses_unlabeled: ClassVar[bool]
    ensemble: ClassVar[bool]

    def fit(
        self,
        normal: Images,
        unlabeled: Images | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> Detector: ...

    def score_samples(self, images: Images, batch_size: int = 256) -> dict[str, np.ndarray]: ...

    def score_maps(self, images: Images, batch_size: int = 256) -> dict[str, np.ndarray]: ...

    def score_all(
        self, images: Images, batch_size: int = 256
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]: ...

    def shown_maps(self, maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def optimiser_settings(self) -> dict[str, Any]: ...

    def save(self, path: str | Path) -> Path: ...

    @classmethod
    def load(cls, path: str | Path, device: str | None = "auto") -> Detector: ...


class _Detector:
    """What :class:`DDAD` and :class:`FAnoGAN` share: settings, batched scoring, the model file."""

    score_names: ClassVar[tuple[str, ...]] = ()
    map_names: ClassVar[tuple[str, ...]] = ()
    uses_unlabeled: ClassVar[bool] = True
    ensemble: ClassVar[bool] = True

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
        latent: int = LATENT,
        workers: int | None = None,
        threads: int | None = None,
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
        self.latent = latent
        self.workers = workers
        self.threads = threads

    # -- settings --------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor's settings."""
        return {name: getattr(self, name) for name in PARAMS}

    def _check_params(self) -> None:
        if detector_for(self.backbone) is not type(self):
            raise ConfigError(
                f"{type(self).__name__} does not take backbone {self.backbone!r}; use "
                f"{detector_for(self.backbone).__name__}"
            )
        if self.epochs < 1 or self.batch_size < 2 or not 0 < self.lr < math.inf:
            raise ConfigError("epochs >= 1, batch_size >= 2 and a finite lr > 0 are required")
        if isinstance(self.latent, bool) or not isinstance(self.latent, int) or self.latent < 1:
            raise ConfigError(f"latent must be a whole number of at least 1 (got {self.latent!r})")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number of at least 1; got {value!r}")

    def _start_fit(self, normal: Images) -> torch.Tensor:
        self._check_params()
        self.device_ = pick_device(self.device)
        self.precision_ = pick_precision(self.precision, self.device_)
        dn = to_tensor(normal, self.device_)
        self.size_ = int(dn.shape[-1])
        self.history_: dict[str, Any] = {}
        return dn

    def _cpu_plan(self, tasks: int, work: int) -> CpuPlan | None:
        """The workers and threads of a training of ``work`` member-images on the CPU
        (:func:`ddadlib.devices.cpu_plan`, recorded in ``history_["cpu"]``); None on a GPU."""
        if self.device_.type != "cpu":
            return None
        plan = cpu_plan(self.workers, self.threads, tasks=tasks, work=work)
        self.history_["cpu"] = plan.to_dict()
        return plan

    def _check_fitted(self) -> None:
        if not hasattr(self, "module_b_"):
            raise RuntimeError(
                f"this {type(self).__name__} model is not fitted yet; call fit() or load()"
            )

    # -- scoring ---------------------------------------------------------------------------
    def _maps_of(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _scores_of(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _batches(self, images, batch_size: int):
        self._check_fitted()
        x_all = images if isinstance(images, torch.Tensor) else np.asarray(images)
        if len(x_all) == 0:
            raise ValueError("no images to score (an empty set)")
        if x_all.shape[-1] != self.size_:
            raise ValueError(f"images are {x_all.shape[-1]} pixels; this model takes {self.size_}")
        for s in range(0, len(x_all), batch_size):
            with torch.no_grad():
                maps = self._maps_of(to_tensor(x_all[s : s + batch_size], self.device_))
            yield maps

    def _collect(
        self, images, batch_size: int, want_maps: bool, want_scores: bool
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One pass of the networks over ``images``, gathering maps and/or image scores;
        ``rec`` (one row per network) is joined along its second axis, the rest along the
        first."""
        map_parts: dict[str, list[np.ndarray]] = {}
        score_parts: dict[str, list[np.ndarray]] = {}
        for maps in self._batches(images, batch_size):
            if want_maps:
                for name, v in maps.items():
                    if not name.startswith("_"):
                        map_parts.setdefault(name, []).append(v.squeeze(-3).cpu().numpy())
            if want_scores:
                for name, v in self._scores_of(maps).items():
                    score_parts.setdefault(name, []).append(v.cpu().numpy().astype(np.float64))

        def join(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
            return {n: np.concatenate(v, axis=1 if n == "rec" else 0) for n, v in parts.items()}

        return join(map_parts), join(score_parts)

    def score_maps(self, images: Images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Pixel maps of every score as float32 arrays ``(N, S, S)`` (``rec``: ``(K, N, S, S)``,
        one map per network of module B), plus the reconstructions."""
        return self._collect(images, batch_size, want_maps=True, want_scores=False)[0]

    def score_samples(self, images: Images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Image scores (:attr:`score_names`), higher = more anomalous: ``rec`` ``(K, N)``, one
        row per network of module B alone, the others ``(N,)``."""
        return self._collect(images, batch_size, want_maps=False, want_scores=True)[1]

    def score_all(
        self, images: Images, batch_size: int = 256
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """:meth:`score_maps` and :meth:`score_samples` from one pass over ``images``."""
        return self._collect(images, batch_size, want_maps=True, want_scores=True)

    def shown_maps(self, maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The maps of :attr:`map_names` out of :meth:`score_maps`' ``maps``, ``(N, S, S)``
        each (``rec``: its first network's)."""
        return {n: (maps[n][0] if n == "rec" else maps[n]) for n in self.map_names if n in maps}

    # -- persistence -----------------------------------------------------------------------
    def _networks(self, module: str) -> list[torch.nn.Module]:
        """Freshly built networks of ``module`` ("A" or "B"), to load weights into."""
        raise NotImplementedError

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
        _save_blob(path, blob)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = "auto") -> Any:
        """A model written by :meth:`save`, on ``device`` (default: the best available); a
        :class:`DataError` when the file holds another kind of detector
        (:func:`load_detector` takes any)."""
        path = Path(path)
        blob = _read_model_file(path)
        kind = detector_for(blob["params"].get("backbone"), path)
        if kind is not cls:
            raise DataError(
                f"{path}: holds a {kind.__name__} model, not a {cls.__name__} one; load it with "
                "ddadlib.detectors.load_detector"
            )
        return cls._from_blob(blob, path, device)

    @classmethod
    def _from_blob(cls, blob: dict, path: Path, device: str | None) -> Any:
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
        if model.module_a_ is None and model.uses_unlabeled:
            raise DataError(
                f"{path}: damaged model file (a {model.backbone} model without module A)"
            )
        return model

    def _restore(self, module: str, states: list[dict], path: Path) -> list:
        nets = self._networks(module)
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
        return f"{type(self).__name__}({shown})"


def _save_blob(path: Path, blob: dict) -> None:
    """Write a model file (``torch.save`` of ``blob``) atomically."""
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


class DDAD(_Detector):
    """Dual-Distribution Discrepancy anomaly detection.

    Parameters are the paper's defaults (``docs/method.md``): Adam with lr 5e-4 and betas
    (0.5, 0.999) as in the authors' code, batch 64, 250 epochs, K = 3. ``seed`` sets every
    member's initialisation and data order. ``device="auto"`` takes CUDA, then MPS, then the CPU;
    ``precision="auto"`` is float32. ``vectorised=None`` trains the K members as one vectorised
    model on CUDA and one after the other elsewhere (see :mod:`ddadlib.models.ensemble`). On a
    CPU, ``workers`` processes of ``threads`` torch threads train the members of both modules in
    parallel (:mod:`ddadlib.models.parallel`; default :func:`ddadlib.devices.cpu_plan`: one
    worker per core; ``workers=1``: in this process). A script that trains with several workers
    starts under ``if __name__ == "__main__":``, as Python's ``spawn`` requires.
    ``latent`` is the size of the backbone's code (the authors' 16 by default).
    """

    score_names = SCORE_NAMES
    map_names = ("mu_A", "mu_B", "intra", "inter")

    def _check_params(self) -> None:
        super()._check_params()
        if self.k < 2:
            raise ConfigError(
                f"k must be at least 2 (the intra-discrepancy needs 2 members); got {self.k}"
            )

    def module_config(self, module: str, size: int) -> EnsembleConfig:
        """The configuration of module ``"A"`` or ``"B"`` for images of ``size`` pixels."""
        return EnsembleConfig(
            **{name: getattr(self, name) for name in HYPERPARAMETERS},
            module=module,
            precision=getattr(self, "precision_", EnsembleConfig.precision),
            size=size,
        )

    def optimiser_settings(self) -> dict[str, Any]:
        """The optimiser's settings as the ensemble trainer takes them (lr, betas, batch)."""
        cfg = self.module_config("B", getattr(self, "size_", EnsembleConfig.size))
        return {"lr": cfg.lr, "betas": list(cfg.betas), "batch_size": cfg.batch_size}

    # -- training --------------------------------------------------------------------------
    def fit(
        self,
        normal: Images,
        unlabeled: Images | None = None,
        *,
        module_b: list[AE] | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> DDAD:
        """Train module B on ``normal`` (Dn) and module A on ``normal`` plus ``unlabeled`` (Du).

        Images are uint8 ``(N, S, S)`` arrays or float tensors in [-1, 1]. ``module_b`` reuses
        an already trained module B (it does not depend on Du). With ``checkpoint_dir``,
        training saves checkpoints there and resumes from them.
        """
        dn = self._start_fit(normal)
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if module_b is not None and len(module_b) != self.k:
            raise ValueError(f"module_b has {len(module_b)} members, k is {self.k}")
        if unlabeled is None or len(unlabeled) == 0:
            du = dn[:0]
        else:
            du = to_tensor(unlabeled, self.device_)
            if du.shape[-1] != self.size_:
                raise ValueError(
                    f"unlabeled images are {du.shape[-1]} pixels, normal images {self.size_}"
                )
        # B does not depend on Du: both modules train together (their members in parallel
        # worker processes on a CPU, see ddadlib.models.parallel)
        jobs = [] if module_b is not None else [("B", dn)]
        jobs.append(("A", torch.cat([dn, du])))
        plan = self._cpu_plan(
            tasks=self.k * len(jobs), work=self.k * self.epochs * sum(len(x) for _, x in jobs)
        )
        results = train_ensembles(
            [
                ModuleJob(
                    images,
                    self.module_config(module, self.size_),
                    checkpoint=ckpt / f"{module}.ckpt" if ckpt is not None else None,
                )
                for module, images in jobs
            ],
            workers=plan.workers if plan is not None else 1,
            threads=plan.threads if plan is not None else None,
            vectorised=self.vectorised,
            progress=self.progress,
        )
        trained = {}
        for (module, images), result in zip(jobs, results):
            self.history_[module] = {
                "losses": result.losses,
                "seconds": result.seconds,
                "resumed_from_epoch": result.resumed_from,
                "path": result.path,
                "n_images": int(images.shape[0]),
            }
            trained[module] = result.members
        if module_b is not None:
            self.module_b_ = [m.to(self.device_).eval() for m in module_b]
        else:
            self.module_b_ = trained["B"]
        self.module_a_ = trained["A"]
        return self

    # -- scoring ---------------------------------------------------------------------------
    def _maps_of(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
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

    def _scores_of(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: image_scores(maps[n]) for n in self.score_names}

    def score_maps(self, images: Images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Pixel maps of every score, as float32 arrays ``(N, S, S)`` (``rec``: ``(K, N, S,
        S)``, one map per network of module B), plus the reconstructions ``mu_A`` and
        ``mu_B`` (in [-1, 1]) and, for AE-U, ``sigma2``."""
        return super().score_maps(images, batch_size)

    def score_samples(self, images: Images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Image scores (the mean of each map over pixels), higher = more anomalous.

        ``rec`` ``(K, N)``: each network of module B alone (the baseline of one network trained
        on Dn); ``rec_ensemble`` (the error of their mean reconstruction), ``intra`` and
        ``inter``, ``(N,)``.
        """
        return super().score_samples(images, batch_size)

    def _networks(self, module: str) -> list[torch.nn.Module]:
        return build_members(self.module_config(module, self.size_))


class FAnoGAN(_Detector):
    """f-AnoGAN (WGAN-GP with the izi_f encoder, :mod:`ddadlib.models.fanogan`) trained on Dn
    only: the paper's Table 2 comparison. One network (``k`` and ``latent`` are ignored; its
    generator's code has :data:`~ddadlib.models.fanogan.LATENT_DIM` numbers) and one score, ``rec``
    ``(1, N)``: the pixel plus critic-feature residual. ``lr`` is the encoder's; the GAN trains
    with :func:`~ddadlib.models.fanogan.train_fanogan`'s own settings."""

    score_names = ("rec",)
    map_names = ("recon", "rec")
    uses_unlabeled = False
    ensemble = False

    def __init__(self, backbone: str = "fanogan", k: int = 1, **settings: Any) -> None:
        super().__init__(backbone=backbone, k=k, **settings)

    def optimiser_settings(self) -> dict[str, Any]:
        """The encoder's optimiser settings (the GAN's are train_fanogan's defaults)."""
        # models/fanogan.py trains the encoder with Adam betas (0.5, 0.999), as the autoencoders
        return {"lr": self.lr, "betas": list(EnsembleConfig.betas), "batch_size": self.batch_size}

    def fit(
        self,
        normal: Images,
        unlabeled: Images | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> FAnoGAN:
        """Train on ``normal`` (Dn); ``unlabeled`` is not used (f-AnoGAN has no module A).
        With ``checkpoint_dir``, training state goes to ``fanogan.ckpt`` there, and a later
        call with the same settings resumes from it (as the autoencoders' ``A.ckpt``/``B.ckpt``)."""
        dn = self._start_fit(normal)
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / "fanogan.ckpt"
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
        plan = self._cpu_plan(tasks=1, work=0)
        t0 = time.perf_counter()
        with torch_threads(plan.threads if plan is not None else None):
            net = train_fanogan(
                dn,
                epochs=self.epochs,
                seed=self.seed,
                encoder_lr=self.lr,
                batch_size=self.batch_size,
                precision=self.precision_,
                checkpoint=ckpt,
                progress=self.progress,
            )
        self.history_["B"] = {
            "losses": net.history,
            "seconds": time.perf_counter() - t0,
            "n_images": int(dn.shape[0]),
            "path": "f-AnoGAN",
            "resumed_from": None if net.resumed_from is None else list(net.resumed_from),
        }
        self.module_b_ = [net]
        self.module_a_ = None
        return self

    def _maps_of(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        (model,) = self.module_b_
        return {
            "rec": model.anomaly_maps(x)[None],
            "recon": model(x)["recon"],
            "_score": model.score(x)[None],
        }

    def _scores_of(self, maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"rec": maps["_score"]}

    def _networks(self, module: str) -> list[torch.nn.Module]:
        return [FAnoGANNetwork(size=self.size_)]


REFINER_FORMAT = "ddadlib-refiner"


class Refiner:
    """DDAD-ASR: ASR-Net (:mod:`ddadlib.models.asr`) refines the discrepancy maps of a fitted
    :class:`DDAD` into an anomaly map, trained on the normal images only, with synthetic
    anomalies.

    >>> refiner = Refiner(ddad, inputs="dual", epochs=100).fit(normal)   # doctest: +SKIP
    >>> refiner.score_samples(test_images)["r_dual"]                      # doctest: +SKIP

    ``inputs``: ``"intra"`` (R_intra: the intra-discrepancy map alone) or ``"dual"`` (R_dual:
    inter and intra stacked). The other settings are the journal's defaults (focal loss gamma 2,
    Adam lr 1e-4, betas (0.5, 0.999), weight decay 1e-4, batch 8, 100 epochs); the network of
    the last epoch is kept, nothing is selected on the test set. The scores and maps are the
    DDAD's plus the refined one (:attr:`score_name`); ``fit`` takes no unlabeled images (the
    DDAD has seen them)."""

    uses_unlabeled: ClassVar[bool] = False
    ensemble: ClassVar[bool] = False

    def __init__(
        self,
        ddad: DDAD,
        inputs: str = "dual",
        epochs: int = ASR_EPOCHS,
        batch_size: int = ASR_BATCH_SIZE,
        lr: float = ASR_LR,
        weight_decay: float = ASR_WEIGHT_DECAY,
        seed: int = 0,
        device: str | None = "auto",
        progress: bool = True,
    ) -> None:
        self.ddad = ddad
        self.inputs = inputs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device
        self.progress = progress

    # -- what it gives ---------------------------------------------------------------------
    @property
    def backbone(self) -> str:
        return self.ddad.backbone

    @property
    def score_name(self) -> str:
        """The refined score's name: ``r_intra`` or ``r_dual``."""
        return REFINED_SCORES[self.inputs]

    @property
    def score_names(self) -> tuple[str, ...]:
        return (*self.ddad.score_names, self.score_name)

    @property
    def map_names(self) -> tuple[str, ...]:
        return (*self.ddad.map_names, self.score_name)

    def get_params(self) -> dict[str, Any]:
        """The constructor's settings but the DDAD."""
        return {n: getattr(self, n) for n in REFINER_PARAMS}

    def asr_config(self, size: int) -> ASRConfig:
        """The ASR-Net training config for images of ``size`` pixels (checks the settings)."""
        return ASRConfig(
            inputs=self.inputs,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=self.seed,
            size=size,
        )

    def optimiser_settings(self) -> dict[str, Any]:
        """ASR-Net's optimiser settings (Adam)."""
        cfg = self.asr_config(getattr(self.ddad, "size_", 64))
        return {
            "lr": cfg.lr,
            "betas": list(cfg.betas),
            "batch_size": cfg.batch_size,
            "weight_decay": cfg.weight_decay,
        }

    def _check_ddad(self) -> None:
        if not isinstance(self.ddad, DDAD):
            raise ConfigError(
                f"the refinement needs a DDAD model (modules A and B), not "
                f"{type(self.ddad).__name__}"
            )
        self.ddad._check_fitted()

    # -- training --------------------------------------------------------------------------
    def fit(
        self,
        normal: Images,
        unlabeled: Images | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
    ) -> Refiner:
        """Train ASR-Net on ``normal`` (Dn; uint8 ``(N, S, S)`` or float tensors in [-1, 1])
        with synthetic anomalies, on the maps of the fitted DDAD; ``unlabeled`` is not used.
        With ``checkpoint_dir``, training saves ``asr.ckpt`` there and resumes from it."""
        self._check_ddad()
        cfg = self.asr_config(self.ddad.size_)
        self.device_ = pick_device(self.device)
        dn = to_tensor(normal, self.device_)
        if dn.shape[-1] != self.ddad.size_:
            raise ValueError(f"images are {dn.shape[-1]} pixels; the DDAD takes {self.ddad.size_}")
        self._move_ddad()
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / "asr.ckpt"
        result = train_asr(
            dn,
            lambda x: self.input_maps(self.ddad.score_maps(x, batch_size=len(x))),
            cfg,
            checkpoint=ckpt,
            progress=self.progress,
        )
        self.size_ = cfg.size
        self.net_ = result.net
        self.history_ = {
            "losses": result.losses,
            "seconds": result.seconds,
            "resumed_from_epoch": result.resumed_from,
            "n_images": int(dn.shape[0]),
        }
        return self

    def _move_ddad(self) -> None:
        # the DDAD's networks score on the refiner's device
        if self.ddad.device_ != self.device_:
            self.ddad.device_ = self.device_
            self.ddad.module_b_ = [m.to(self.device_) for m in self.ddad.module_b_]
            self.ddad.module_a_ = [m.to(self.device_) for m in self.ddad.module_a_]

    # -- scoring ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise RuntimeError("this Refiner is not fitted yet; call fit() or load()")

    def input_maps(self, maps: dict[str, Any]) -> torch.Tensor:
        """ASR-Net's input ``(N, C, S, S)`` on the refiner's device, out of the DDAD's maps
        (:meth:`DDAD.score_maps`: ``(N, S, S)`` arrays or tensors)."""
        parts = [torch.as_tensor(np.asarray(maps[n]), dtype=torch.float32) for n in self.channels]
        return torch.stack(parts, dim=1).to(self.device_)

    @property
    def channels(self) -> tuple[str, ...]:
        """The discrepancy maps ASR-Net takes, in channel order."""
        return REFINER_INPUTS[self.inputs]

    def refine_maps(self, maps: dict[str, Any], batch_size: int = 256) -> np.ndarray:
        """The refined anomaly map (anomalous-class probability) ``(N, S, S)`` of the images
        whose DDAD maps are ``maps`` (:meth:`DDAD.score_maps`), without scoring them again."""
        self._check_fitted()
        n = len(maps[self.channels[0]])
        out = []
        for s in range(0, n, batch_size):
            part = {c: np.asarray(maps[c][s : s + batch_size]) for c in self.channels}
            with torch.no_grad():
                out.append(self.net_.anomaly_map(self.input_maps(part)).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def score_all(
        self, images: Images, batch_size: int = 256
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The DDAD's maps and image scores plus the refined ones, from one pass."""
        self._check_fitted()
        maps, scores = self.ddad.score_all(images, batch_size)
        maps[self.score_name] = self.refine_maps(maps, batch_size)
        scores[self.score_name] = maps[self.score_name].mean(axis=(1, 2)).astype(np.float64)
        return maps, scores

    def score_maps(self, images: Images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """:meth:`DDAD.score_maps` plus the refined map :attr:`score_name` ``(N, S, S)``."""
        self._check_fitted()
        maps = self.ddad.score_maps(images, batch_size)
        maps[self.score_name] = self.refine_maps(maps, batch_size)
        return maps

    def score_samples(self, images: Images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """:meth:`DDAD.score_samples` plus the refined score: the mean over pixels of the
        anomalous-class probability."""
        return self.score_all(images, batch_size)[1]

    def shown_maps(self, maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The DDAD's shown maps and the refined one."""
        return {**self.ddad.shown_maps(maps), self.score_name: maps[self.score_name]}

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ASR-Net and its settings to one file, atomically (the DDAD is not in it:
        :meth:`load` takes it)."""
        self._check_fitted()
        path = Path(path)
        state = _cpu_state(self.net_)
        check_finite_weights([state], "ASR-Net")
        blob = {
            "format": REFINER_FORMAT,
            "version": MODEL_VERSION,
            "params": self.get_params(),
            "size": self.size_,
            "asr": state,
            "history": self.history_,
        }
        _save_blob(path, blob)
        return path

    @classmethod
    def load(cls, path: str | Path, ddad: DDAD, device: str | None = "auto") -> Refiner:
        """A refiner written by :meth:`save`, refining ``ddad`` (the model it was trained on)."""
        path = Path(path)
        fix = "train it again (`ddad refine ... --overwrite`)"
        blob = read_torch_file(path, "refiner", DataError, fix=fix)
        if blob.get("format") != REFINER_FORMAT or not isinstance(blob.get("params"), dict):
            raise DataError(f"{path}: not a ddadlib refiner file; {fix}")
        params = {k: v for k, v in blob["params"].items() if k in REFINER_PARAMS}
        refiner = cls(ddad, **dict(params, device=device))
        refiner._check_ddad()
        refiner.device_ = pick_device(device)
        refiner._move_ddad()
        refiner.size_ = blob.get("size")
        refiner.history_ = blob.get("history", {})
        net = ASRNet(len(refiner.channels))
        if nonfinite_members([blob["asr"]]):
            raise DataError(f"{path}: the weights of ASR-Net are not finite; {fix}")
        try:
            net.load_state_dict(blob["asr"])
        except (RuntimeError, TypeError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0][:200]
            raise DataError(f"{path}: damaged refiner file ({reason}); {fix}") from None
        refiner.net_ = net.to(refiner.device_).eval()
        return refiner

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "progress")
        return f"Refiner({self.ddad!r}, {shown})"


#: The settings a :class:`Refiner` takes besides its DDAD.
REFINER_PARAMS = (
    "inputs",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "device",
    "progress",
)


#: Backbone name -> detector class: the one place that knows which names mean which detector.
DETECTORS: dict[str, type[_Detector]] = {
    **{name: DDAD for name in BACKBONES},
    "fanogan": FAnoGAN,
}
#: Every backbone name a run can take.
BACKBONE_NAMES = tuple(DETECTORS)


def detector_for(backbone: str, path: Path | None = None) -> type[_Detector]:
    """The detector class of ``backbone`` (a :class:`ConfigError`, or a :class:`DataError`
    naming ``path`` when the name comes from a file)."""
    try:
        return DETECTORS[backbone]
    except (KeyError, TypeError):
        message = f"unknown backbone {backbone!r}; choose one of {', '.join(DETECTORS)}"
        if path is not None:
            raise DataError(f"{path}: damaged model file ({message})") from None
        raise ConfigError(message) from None


def make_detector(backbone: str, **settings: Any) -> Detector:
    """An unfitted detector of ``backbone`` with ``settings`` (the keywords of :data:`PARAMS`);
    its settings are checked (a :class:`ConfigError`)."""
    model = detector_for(backbone)(backbone=backbone, **settings)
    model._check_params()
    return model


def load_detector(path: str | Path, device: str | None = "auto") -> Detector:
    """The detector in a model file written by ``save``, whichever kind it is."""
    path = Path(path)
    blob = _read_model_file(path)
    return detector_for(blob["params"].get("backbone"), path)._from_blob(blob, path, device)


def _read_model_file(path: Path) -> dict:
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
    missing = [k for k in ("params", "size", "precision", "module_b", "module_a") if k not in blob]
    if missing or not isinstance(blob["params"], dict):
        raise DataError(f"{path}: damaged model file (no {', '.join(missing) or 'params'})")
    return blob


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: v.detach().cpu() for n, v in module.state_dict().items()}
