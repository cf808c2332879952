"""Scoring new images with a finished run, beside the run's own evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ddadlib.errors import DataError
from ddadlib.runs.config import FLAG_SPECIFICITY, FLOAT_FORMAT
from ddadlib.runs.run import Run
from ddadlib.scoring.metrics import operating_point


def normal_reference(run: str | Path) -> tuple[pd.DataFrame, dict[str, float]] | None:
    """The run's own evaluation (``scores.csv`` beside ``metrics.json`` in the run folder): its
    test scores and, per score, the threshold at 95% specificity (the operating point of
    ``sens_at_95_spec``); None when the run has not been evaluated."""
    run = Run(run)
    if not run.is_evaluated or not run.scores_path.is_file():
        return None
    table = run.scores()
    if set(table["label"].unique()) != {0, 1}:
        raise DataError(
            f"{run.scores_path}: no normal and abnormal test scores; evaluate "
            f"the run again (`ddad evaluate --run {run.path} --overwrite`)"
        )
    thresholds = {}
    for name in run.score_names:
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
    run = Run(run)
    model = run.model(device=device)
    scores = model.score_samples(images)
    reference = normal_reference(run.path)
    frame = pd.DataFrame({"id": ids})
    thresholds: dict[str, float] = {}
    for name in model.score_names:
        # rec: network 1 of module B alone, as the column rec of scores.csv
        values = scores[name][0] if name == "rec" else scores[name]
        if not np.isfinite(values).all():
            raise DataError(
                f"{run.model_path}: gives scores that are not finite; the "
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
