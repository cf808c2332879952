"""Models: the backbones (AE, AE-U, MemAE), f-AnoGAN, ensemble training and its checkpoints."""

from ddadlib.models.backbones import BACKBONES, build_backbone

__all__ = ["BACKBONES", "build_backbone"]
