"""Scoring: the anomaly scores as pure functions of reconstructions, and their metrics."""

from ddadlib.scoring.metrics import evaluate_scores
from ddadlib.scoring.scores import (
    image_scores,
    inter_map,
    intra_map,
    rec_ensemble_map,
    rec_map,
    score_maps,
    uncertainty,
)

__all__ = [
    "evaluate_scores",
    "image_scores",
    "inter_map",
    "intra_map",
    "rec_ensemble_map",
    "rec_map",
    "score_maps",
    "uncertainty",
]
