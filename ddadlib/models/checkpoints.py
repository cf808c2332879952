"""Checkpoints of training state and the checks on weights read back.

:func:`write_checkpoint` saves a training state atomically; :func:`load_checkpoint` reads it
back for the same configuration only; :func:`read_torch_file` reads any file the library saved
with ``torch.save`` safely (``weights_only``).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ddadlib.errors import TrainingError
from ddadlib.fileio import atomic_write

if TYPE_CHECKING:  # a type only: ensemble imports this module
    from ddadlib.models.ensemble import EnsembleConfig

CHECKPOINT_VERSION = 1


def write_checkpoint(path: Path, blob: dict) -> None:
    """Save ``blob`` (a training state) with ``torch.save``, atomically."""
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def nonfinite_members(states: list[dict[str, torch.Tensor]]) -> list[int]:
    """The 1-based numbers of the members whose weights hold NaN or infinity."""
    return [
        k + 1
        for k, sd in enumerate(states)
        if not all(bool(torch.isfinite(v).all()) for v in sd.values() if v.is_floating_point())
    ]


def check_finite_weights(states: list[dict[str, torch.Tensor]], what: str) -> None:
    """A :class:`TrainingError` naming the members of ``what`` whose weights are not finite."""
    bad = nonfinite_members(states)
    if bad:
        raise TrainingError(
            f"{what}: the weights of member(s) {bad} are not finite (NaN or "
            "infinity) after the last step: training diverged, so the run is not "
            "finished. Try a lower learning rate or float32, and check the images"
        )


def read_torch_file(path: Path, what: str, error: type[Exception], fix: str) -> dict:
    """A dict saved with ``torch.save``, read with ``weights_only=True``; a damaged file or one
    holding more than weights gives ``error`` (one line naming the file, with ``fix``)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds for a damaged file)
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            # torch's own message advises weights_only=False, which would run the file's code
            raise error(
                f"{path}: refused: the {what} file holds objects other than weights and "
                "may be unsafe; load run folders and model files only from trusted "
                "sources"
            ) from None
        text = str(exc).strip()
        reason = text.splitlines()[0].split(". ")[0][:200] if text else type(exc).__name__
        raise error(f"{path}: damaged or truncated {what} file ({reason}); {fix}") from None
    if not isinstance(blob, dict):
        raise error(f"{path}: not a ddadlib {what} file; {fix}")
    return blob


def load_checkpoint(path: Path, cfg: EnsembleConfig) -> dict:
    """A checkpoint written by :func:`train_ensemble` for the same config (else an error)."""
    blob = read_torch_file(
        path, "checkpoint", TrainingError, fix="delete it to train that module again from its start"
    )
    if blob.get("version") != CHECKPOINT_VERSION or blob.get("config") != cfg.to_dict():
        raise TrainingError(
            f"{path}: checkpoint of another configuration "
            f"({blob.get('config')}); delete it or train into a new folder"
        )
    return blob
