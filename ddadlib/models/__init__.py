"""Models: the backbones (AE, AE-U, MemAE), f-AnoGAN, ensemble training and its checkpoints."""

from ddadlib.models.backbones import BACKBONES, build_backbone
from ddadlib.models.ensemble import EnsembleConfig, train_ensemble

__all__ = ["BACKBONES", "EnsembleConfig", "build_backbone", "train_ensemble"]
