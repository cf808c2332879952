""":class:`Run`: a run folder as an object; the one reader of the files the run commands write
(see :mod:`ddadlib.runs.config` for the folder's layout)."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.records import Box
from ddadlib.detectors import Detector, detector_for, load_detector
from ddadlib.errors import DataError
from ddadlib.paper import REFINED_SCORES
from ddadlib.runs.config import RunConfig


class TestSet(NamedTuple):
    """The test split of a prepared dataset, normal images first, as ``scores.csv`` orders it."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    masks: np.ndarray | None


def test_indices(ds: PreparedDataset) -> np.ndarray:
    """The rows of the test split in ``ds``: test_normal, then test_abnormal."""
    return np.concatenate([ds.part("test_normal"), ds.part("test_abnormal")])


def test_set(ds: PreparedDataset) -> TestSet:
    """The test images, labels, ids and masks (None when the dataset has none) of ``ds``."""
    idx = test_indices(ds)
    masks = ds.masks[idx] if ds.masks is not None else None
    return TestSet(ds.images[idx], ds.labels[idx], [ds.ids[i] for i in idx], masks)


def test_boxes(ds: PreparedDataset) -> list[list[Box]] | None:
    """The boxes of each test image of ``ds`` (in :func:`test_set`'s order); None when no
    image has one."""
    boxes = [ds.boxes(i) for i in test_indices(ds)]
    return boxes if any(boxes) else None


class Run:
    """A run folder: ``Run(path).config``, :attr:`is_finished`, :meth:`model`, :meth:`scores`,
    :meth:`score_arrays`, :meth:`metrics`, :meth:`test_set`.

    Reading a file that is absent or damaged raises a :class:`DataError` that names the file and
    the command that writes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __fspath__(self) -> str:  # a Run goes wherever a run folder's path does
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    # -- the files ------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.pt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.csv"

    @cached_property
    def config(self) -> RunConfig:
        """The run's settings (``config.json``)."""
        return RunConfig.read(self.path)

    @property
    def has_config(self) -> bool:
        return self.config_path.exists()

    @property
    def is_finished(self) -> bool:
        """Whether training has finished (``model.pt`` is written last)."""
        return self.model_path.is_file() and self.config_path.is_file()

    @property
    def is_evaluated(self) -> bool:
        """Whether the run's own evaluation has finished (``metrics.json`` is written last)."""
        return self.metrics_path.is_file()

    @property
    def has_trained(self) -> bool:
        """Whether the folder holds anything that training produced (a checkpoint or a model)."""
        return (
            self.model_path.exists()
            or (self.path / "train_log.json").exists()
            or any((self.path / "checkpoints").glob("*.ckpt"))
        )

    @property
    def detector(self) -> type:
        """The detector class of the run's backbone."""
        return detector_for(self.config.backbone, self.config_path)

    @property
    def score_names(self) -> tuple[str, ...]:
        """The image scores the run's detector gives."""
        return self.detector.score_names

    def require_finished(self) -> None:
        """A :class:`DataError` naming the fix when training has not finished."""
        self.config  # noqa: B018  (a missing or damaged config.json is the first problem)
        if not self.is_finished:
            raise DataError(
                f"{self.path}: training has not finished (no model.pt); run `ddad train` "
                "with the same settings to resume it"
            )

    def model(self, device: str | None = "auto") -> Detector:
        """The trained detector, on ``device``."""
        self.require_finished()
        return load_detector(self.model_path, device=device)

    def train_log(self) -> dict[str, Any]:
        """``train_log.json`` (losses, wall time, torch threads); empty when absent."""
        path = self.path / "train_log.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: damaged ({exc})") from None

    def _evaluate_first(self, name: str) -> DataError:
        return DataError(
            f"{self.path}: no {name}; evaluate the run first (`ddad evaluate --run {self.path}`)"
        )

    def _damaged(self, path: Path, exc: Exception) -> DataError:
        return DataError(
            f"{path}: damaged ({exc}); evaluate the run again (`ddad evaluate "
            f"--run {self.path} --overwrite`)"
        )

    def metrics(self) -> dict[str, dict]:
        """``metrics.json``: score -> auc, ap, auc_ci, sens_at_95_spec (and auc_std,
        auc_members for rec)."""
        if not self.metrics_path.is_file():
            raise self._evaluate_first("metrics.json")
        try:
            return json.loads(self.metrics_path.read_text())
        except (OSError, ValueError) as exc:
            raise self._damaged(self.metrics_path, exc) from None

    def scores(self) -> pd.DataFrame:
        """The test scores (``scores.csv``): id, label, then the detector's scores, then
        ``rec_m1 .. rec_mK``, network k of module B alone. The column ``rec`` repeats
        ``rec_m1`` (network 1 alone: the baseline whose threshold ``ddad score`` uses); use
        :meth:`score_arrays` for the scores as arrays."""
        if not self.scores_path.is_file():
            raise self._evaluate_first("scores.csv")
        try:
            table = pd.read_csv(self.scores_path, dtype={"id": str})
        except (OSError, ValueError) as exc:
            raise self._damaged(self.scores_path, exc) from None
        if "label" not in table.columns:
            raise DataError(f"{self.scores_path}: no label column")
        return table

    def labels(self) -> np.ndarray:
        """The test labels of :meth:`scores` (0 normal, 1 abnormal)."""
        return self.scores()["label"].to_numpy(dtype=np.int64)

    def score_arrays(self, table: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
        """The test scores of :attr:`score_names` (and of the refinements, ``r_intra`` and
        ``r_dual``, where evaluated) as arrays: ``rec`` ``(K, N)``, one row per network of
        module B, the others ``(N,)``; ``table``: :meth:`scores`, when already read."""
        table = self.scores() if table is None else table
        members = sorted(
            (c for c in table.columns if c.startswith("rec_m") and c[5:].isdigit()),
            key=lambda c: int(c[5:]),
        )
        out = {}
        for name in (*self.score_names, *REFINED_SCORES.values()):
            if name == "rec":
                if not members:
                    raise self._damaged(self.scores_path, ValueError("no rec_m1 column"))
                out[name] = table[members].to_numpy(dtype=np.float64).T
            elif name in table.columns:
                out[name] = table[name].to_numpy(dtype=np.float64)
        return out

    def dataset(self, data: str | Path | None = None, mmap: bool = True) -> PreparedDataset:
        """The prepared dataset the run trained on (or ``data``)."""
        return PreparedDataset.load(data if data is not None else self.config.data_path, mmap=mmap)

    def test_set(self, data: str | Path | None = None) -> TestSet:
        """The test split of the run's dataset (or of ``data``), as ``scores.csv`` orders it."""
        return test_set(self.dataset(data))
