"""``ddad refine``: train the journal's refinement (ASR-Net, :class:`ddadlib.detectors.Refiner`)
on a finished DDAD run, into the run folder.

A refinement lives in ``RUN/refine-<inputs>/`` (``inputs`` ``intra`` or ``dual``):

- ``refine.json``: its settings, the digest of the run's ``model.pt`` it refines and the
  dataset's fingerprint; written before training;
- ``checkpoints/asr.ckpt``: training state, so an interrupted refinement resumes;
- ``train_log.json``: the loss per epoch and the wall time;
- ``refiner.pt``: ASR-Net's weights, written last: its presence marks a finished refinement.

Training again with the same settings resumes (or reuses) it; other settings, or a run whose
``model.pt`` changed, are refused unless ``overwrite`` (then the old refinement is deleted).
The run's lock is held throughout, so training, evaluating and refining one run never overlap.
ASR-Net trains on the run's Dn only, and the last epoch's network is kept: nothing is selected
on the test set. ``ddad evaluate`` then reports ``r_intra`` / ``r_dual`` beside the DDAD's scores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ddadlib.detectors import DDAD, Refiner
from ddadlib.errors import ConfigError, DataError
from ddadlib.fileio import atomic_write_json, stale_temp_files
from ddadlib.models.asr import REFINER_INPUTS
from ddadlib.paper import ASR_BATCH_SIZE, ASR_EPOCHS, ASR_LR, ASR_WEIGHT_DECAY, REFINED_SCORES
from ddadlib.provenance import provenance
from ddadlib.runs.config import Log, fingerprint_matches
from ddadlib.runs.run import Run
from ddadlib.runs.train import run_lock

REFINE_FILES = ("refine.json", "train_log.json", "refiner.pt")
#: Keys of ``refine.json`` that do not define the refinement.
REFINE_VOLATILE = ("provenance", "created")


def refinement_folder(run: str | Path, inputs: str) -> Path:
    """Where the refinement ``inputs`` (``intra`` or ``dual``) of ``run`` lives."""
    if inputs not in REFINER_INPUTS:
        raise ConfigError(
            f"unknown refiner inputs {inputs!r}; choose {' or '.join(REFINER_INPUTS)}"
        )
    return Path(run) / f"refine-{inputs}"


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (the first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def finished_refinements(run: str | Path) -> dict[str, Path]:
    """The refined score names (``r_intra``, ``r_dual``) of ``run``'s finished refinements ->
    their ``refiner.pt``."""
    out = {}
    for inputs, name in REFINED_SCORES.items():
        path = refinement_folder(run, inputs) / "refiner.pt"
        if path.is_file() and (path.parent / "refine.json").is_file():
            out[name] = path
    return out


def load_refiners(run: str | Path, model: DDAD, device: str | None = "auto") -> list[Refiner]:
    """The finished refinements of ``run`` (whose trained model is ``model``), loaded; a
    :class:`DataError` for one that refines another ``model.pt`` than the run's."""
    run = Run(run)
    digest = file_digest(run.model_path)
    out = []
    for path in finished_refinements(run.path).values():
        recorded = _read_json(path.parent / "refine.json").get("model_digest")
        if recorded != digest:
            raise DataError(
                f"{path.parent}: refines another model.pt than {run.model_path} (the run was "
                f"trained again); refine it again with `ddad refine --run {run.path} --inputs "
                f"{path.parent.name.removeprefix('refine-')} --overwrite`"
            )
        out.append(Refiner.load(path, model, device=device))
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: damaged ({exc}); pass --overwrite to train it again") from None


def refine_run(
    run: str | Path,
    inputs: str = "dual",
    *,
    epochs: int = ASR_EPOCHS,
    batch_size: int = ASR_BATCH_SIZE,
    lr: float = ASR_LR,
    weight_decay: float = ASR_WEIGHT_DECAY,
    seed: int | None = None,
    device: str | None = "auto",
    overwrite: bool = False,
    progress: bool = True,
    log: Log = print,
) -> Refiner:
    """Train (or resume, or reuse) the refinement ``inputs`` of the finished DDAD run ``run``
    on its Dn; return the fitted :class:`~ddadlib.detectors.Refiner`. ``seed`` defaults to the
    run's. See the module docstring for the files and the rules."""
    run = Run(run)
    run.require_finished()
    if not issubclass(run.detector, DDAD):
        raise DataError(
            f"{run.path}: a {run.config.backbone} run has no modules A and B to refine; "
            "refine a DDAD run (backbone ae, memae or aeu)"
        )
    folder = refinement_folder(run.path, inputs)
    with run_lock(run.path):
        for p in stale_temp_files(folder, REFINE_FILES) + stale_temp_files(
            folder / "checkpoints", ("asr.ckpt",)
        ):
            p.unlink(missing_ok=True)
        return _refine_locked(
            run, folder, inputs, epochs, batch_size, lr, weight_decay, seed, device, overwrite,
            progress, log,
        )  # fmt: skip


def _refine_locked(
    run: Run,
    folder: Path,
    inputs: str,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int | None,
    device: str | None,
    overwrite: bool,
    progress: bool,
    log: Log,
) -> Refiner:
    cfg = run.config
    ds = run.dataset()
    if not fingerprint_matches(ds, cfg.data_fingerprint):
        raise DataError(
            f"{cfg.data_path}: the dataset changed since the run trained on it; prepare it again "
            "as it was, or train a new run"
        )
    model = run.model(device=device)
    refiner = Refiner(
        model,
        inputs=inputs,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=cfg.seed if seed is None else seed,
        device=device,
        progress=progress,
    )
    asr = refiner.asr_config(cfg.size)  # checks the settings
    record: dict[str, Any] = {
        "format": 1,
        **asr.to_dict(),
        "device": model.device_.type,
        "model_digest": file_digest(run.model_path),
        "data_fingerprint": cfg.data_fingerprint,
        "dn_size": int(len(ds.part("normal"))),
        "provenance": provenance(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    config_path, weights = folder / "refine.json", folder / "refiner.pt"
    if config_path.is_file():
        old = _read_json(config_path) if not overwrite else {}
        diff = [
            f"{k}: {old.get(k)} -> {v}"
            for k, v in json.loads(json.dumps(record)).items()
            if k not in REFINE_VOLATILE and old.get(k) != v
        ]
        if overwrite:
            log(f"{folder}: replacing the refinement there (--overwrite)")
            shutil.rmtree(folder)
        elif diff:
            raise DataError(
                f"{folder}: holds a refinement with other settings ({'; '.join(diff)}); pass "
                "--overwrite to replace it"
            )
        elif weights.is_file():
            log(f"{folder}: finished refinement with the same settings found; reusing it")
            return Refiner.load(weights, model, device=device)
        else:
            log(f"{folder}: unfinished refinement with the same settings found; resuming it")
            record["created"] = old.get("created", record["created"])
    elif folder.exists() and any(p.name != "checkpoints" for p in folder.iterdir()):
        if not overwrite:
            raise DataError(
                f"{folder}: exists but holds no refine.json; pass --overwrite to replace it"
            )
        shutil.rmtree(folder)
    elif (folder / "checkpoints").exists():
        shutil.rmtree(folder / "checkpoints")  # a checkpoint without its config is not resumed
    atomic_write_json(config_path, record)
    normal = ds.images[ds.part("normal")]
    log(
        f"refining {run.path} ({refiner.score_name}: ASR-Net on "
        f"{' + '.join(refiner.channels)}) on Dn ({len(normal):,} images, half of them with a "
        f"synthetic anomaly each epoch); {asr.epochs} epochs, batch {asr.batch_size}, seed "
        f"{asr.seed}, {model.device_.type}; the last epoch is kept"
    )
    t0 = time.perf_counter()
    refiner.fit(normal, checkpoint_dir=folder / "checkpoints")
    atomic_write_json(
        folder / "train_log.json",
        {
            "seconds": round(time.perf_counter() - t0, 2),
            "torch_threads": torch.get_num_threads(),
            **{k: v for k, v in refiner.history_.items() if k != "seconds"},
        },
    )
    refiner.save(weights)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    log(f"wrote {weights}; next: ddad evaluate --run {run.path}")
    return refiner
