"""Scoring: the anomaly scores as pure functions of reconstructions, and their metrics."""

from ddadlib.scoring.metrics import evaluate_scores
from ddadlib.scoring.scores import image_scores, score_maps

__all__ = ["evaluate_scores", "image_scores", "score_maps"]
