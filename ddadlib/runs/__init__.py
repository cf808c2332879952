"""Run folders (train, evaluate, score), grids of cached runs and the paper's reproduction."""

from ddadlib.runs.config import is_finished, read_config, run_config
from ddadlib.runs.evaluate import evaluate_run, format_metrics
from ddadlib.runs.score import score_images
from ddadlib.runs.train import train_run

__all__ = [
    "evaluate_run",
    "format_metrics",
    "is_finished",
    "read_config",
    "run_config",
    "score_images",
    "train_run",
]
