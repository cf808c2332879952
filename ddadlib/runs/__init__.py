"""Run folders (train, evaluate, score), grids of cached runs and the paper's reproduction."""

from ddadlib.runs.config import RunConfig, run_config
from ddadlib.runs.evaluate import evaluate_run
from ddadlib.runs.run import Run, TestSet, test_set
from ddadlib.runs.score import score_images
from ddadlib.runs.train import train_run

__all__ = [
    "Run",
    "RunConfig",
    "TestSet",
    "evaluate_run",
    "run_config",
    "score_images",
    "test_set",
    "train_run",
]
