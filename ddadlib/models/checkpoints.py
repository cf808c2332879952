"""Checkpoints of training state and the checks on weights read back.

Both trainers (the ensemble of :mod:`ddadlib.models.ensemble` and f-AnoGAN of
:mod:`ddadlib.models.fanogan`) checkpoint the same way: a :class:`Checkpointer` decides when,
:func:`write_checkpoint` saves a training state atomically, :func:`load_checkpoint` reads it back
for the same configuration only, and :func:`read_torch_file` reads any file the library saved
with ``torch.save`` safely (``weights_only``).
"""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ddadlib.errors import DataError, TrainingError
from ddadlib.fileio import atomic_write

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


def check_finite_weights(
    states: list[dict[str, torch.Tensor]], what: str, names: Sequence[str] | None = None
) -> None:
    """A :class:`TrainingError` naming the members of ``what`` whose weights are not finite
    (by number, or by their ``names``, one for each state)."""
    bad = nonfinite_members(states)
    if bad:
        which = f"member(s) {bad}" if names is None else ", ".join(names[k - 1] for k in bad)
        raise TrainingError(
            f"{what}: the weights of {which} are not finite (NaN or "
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
        text = str(exc).strip()
        # bytes that are no pickle at all fail in the weights-only unpickler as well, with an
        # "Unsupported operand": damaged, not unsafe
        garbage = [ln.strip() for ln in text.splitlines() if "unsupported operand" in ln.lower()]
        if (
            isinstance(exc, pickle.UnpicklingError)
            and "weights only" in text.lower()
            and not garbage
        ):
            # torch's own message advises weights_only=False, which would run the file's code
            raise error(
                f"{path}: refused: the {what} file holds objects other than weights and "
                "may be unsafe; load run folders and model files only from trusted "
                "sources"
            ) from None
        first = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
        reason = (garbage[0] if garbage else first)[:200]
        raise error(f"{path}: damaged or truncated {what} file ({reason}); {fix}") from None
    if not isinstance(blob, dict):
        raise error(f"{path}: not a ddadlib {what} file; {fix}")
    return blob


def load_checkpoint(path: Path, config: dict) -> dict:
    """A checkpoint written for the same ``config`` (the trainer's settings as a dict).

    A damaged or truncated file gives a :class:`DataError`, one of another configuration a
    :class:`TrainingError`; both name the file.
    """
    blob = read_torch_file(
        path, "checkpoint", DataError, fix="delete it to train that module again from its start"
    )
    if blob.get("version") != CHECKPOINT_VERSION or blob.get("config") != config:
        raise TrainingError(
            f"{path}: checkpoint of another configuration "
            f"({blob.get('config')}); delete it or train into a new folder"
        )
    return blob


class Checkpointer:
    """When a training writes its checkpoint to ``path`` (None: never).

    After each epoch the trainer calls :meth:`epoch_done` with the state it reached; the state
    is written at most every ``every`` seconds and whenever ``final`` is set, else held in
    memory, and :meth:`interrupted` writes the one held (on ``KeyboardInterrupt``: the epochs
    finished so far are kept). ``check`` runs on every state before it is written (it raises
    :class:`TrainingError` for weights that are not finite, which are never written).
    """

    def __init__(self, path: Path | None, every: float, check: Callable[[dict], None]) -> None:
        self.path, self.every, self.check = path, every, check
        self.pending: dict | None = None
        self.last_save = time.perf_counter()

    def _save(self, blob: dict) -> None:
        self.check(blob)
        write_checkpoint(self.path, blob)

    def epoch_done(self, state: Callable[[], dict], final: bool = False) -> None:
        """Write ``state()`` now if it is time (or ``final``), else hold it."""
        if self.path is None:
            return
        blob = state()
        now = time.perf_counter()
        if final or now - self.last_save >= self.every:
            self.pending = None
            self._save(blob)
            self.last_save = now
        else:
            self.pending = blob

    def interrupted(self) -> None:
        """Write the state held since the last write, unless its weights are not finite."""
        if self.pending is None:
            return
        blob, self.pending = self.pending, None
        try:
            self._save(blob)
        except TrainingError:
            pass
