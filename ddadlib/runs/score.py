"""Scoring new images with a finished run, beside the run's own evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ddadlib.detectors import DDAD
from ddadlib.errors import DataError
from ddadlib.paper import SCORE_NAMES
from ddadlib.runs.config import FLAG_SPECIFICITY, FLOAT_FORMAT, is_finished, read_config
from ddadlib.scoring.metrics import operating_point


def normal_reference(run: str | Path) -> tuple[pd.DataFrame, dict[str, float]] | None:
    """The run's own evaluation (``scores.csv`` beside ``metrics.json`` in the run folder): its
    test scores and, per score, the threshold at 95% specificity (the operating point of
    ``sens_at_95_spec``); None when the run has not been evaluated."""
    run = Path(run)
    if not (run / "metrics.json").is_file() or not (run / "scores.csv").is_file():
        return None
    try:
        table = pd.read_csv(run / "scores.csv")
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{run / 'scores.csv'}: damaged ({exc}); evaluate the run again "
            f"(`ddad evaluate --run {run} --overwrite`)"
        ) from None
    if "label" not in table or set(table["label"].unique()) != {0, 1}:
        raise DataError(
            f"{run / 'scores.csv'}: no normal and abnormal test scores; evaluate "
            f"the run again (`ddad evaluate --run {run} --overwrite`)"
        )
    thresholds = {}
    for name in SCORE_NAMES:
        if name in table and table[name].notna().all():
            thresholds[name] = operating_point(
                table["label"].to_numpy(), table[name].to_numpy(), FLAG_SPECIFICITY
            )[0]
    return table, thresholds


def score_images(
    run: str | Path, images: np.ndarray, ids: list[str], device: str | None = "auto"
) -> pd.DataFrame:
    """Scores of unlabeled images by a finished run, one row per image.

    Beside each raw score ``S`` (higher = more anomalous) come, when the run has been
    evaluated, ``S_pct``: the percentage of the run's normal test images whose score is at most
    this one, and ``S_flag``: 1 where the score is above the threshold at 95% specificity of
    that evaluation (``frame.attrs["thresholds"]``), else 0. Without an evaluation the frame holds
    the raw scores only (``frame.attrs["thresholds"]`` is empty)."""
    read_config(run)
    if not is_finished(run):
        raise DataError(f"{run}: training has not finished (no model.pt)")
    model = DDAD.load(Path(run) / "model.pt", device=device)
    scores = model.score_samples(images)
    reference = normal_reference(run)
    frame = pd.DataFrame({"id": ids})
    thresholds: dict[str, float] = {}
    for name in SCORE_NAMES:
        if name not in scores:
            continue
        values = scores[name]
        if not np.isfinite(values).all():
            raise DataError(
                f"{Path(run) / 'model.pt'}: gives scores that are not finite; the "
                "model is damaged, train it again"
            )
        frame[name] = values
        if reference is not None and name in reference[1]:
            table, cuts = reference
            normal = table.loc[table["label"] == 0, name].to_numpy()
            # compared as written, so that the CSV's numbers and its flags agree
            values = np.array([float(FLOAT_FORMAT % v) for v in values])
            # the share of normal test scores at or below each score (a "weak" percentile)
            frame[f"{name}_pct"] = (
                100.0 * np.searchsorted(np.sort(normal), values, side="right") / len(normal)
            )
            frame[f"{name}_flag"] = (values > cuts[name]).astype(int)
            thresholds[name] = cuts[name]
    frame.attrs["thresholds"] = thresholds
    return frame
