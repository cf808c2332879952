"""Where and in what precision ddadlib trains: CUDA, then MPS, then CPU, unless told."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ddadlib.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def pick_device(name: str | None = "auto") -> torch.device:
    """The device to use: ``"auto"`` (or None) takes CUDA, then MPS, then the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for, but MPS is not available")
    return device


def pick_precision(precision: str | None, device: torch.device) -> str:
    """The training precision: ``"auto"`` is float32 on every device.

    bfloat16 autocast is available (``"bf16"``) but not the default: see
    ``benchmarks/bench_training.py`` and the note of issue 3 for its speed and AUCs.
    """
    if precision in (None, "auto"):
        return "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose auto, {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "mps":
        raise ConfigError("bf16 autocast is not supported on MPS; use fp32")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to bfloat16 inside the block when ``precision == "bf16"``."""
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def to_tensor(images, device: torch.device) -> torch.Tensor:
    """uint8 images ``(N, S, S)`` (or a float tensor already in [-1, 1]) as one float tensor
    ``(N, 1, S, S)`` in [-1, 1] on ``device``; the whole set stays there for the run."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        t = images.float()
    else:
        t = torch.as_tensor(images)
        if t.dtype != torch.uint8:
            raise ValueError(
                f"images must be uint8 (0-255) or a float tensor in [-1, 1]; got {t.dtype}"
            )
        t = t.float() / 127.5 - 1.0
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1 or t.shape[2] != t.shape[3]:
        raise ValueError(f"images must be (N, S, S) or (N, 1, S, S) squares; got {tuple(t.shape)}")
    return t.to(device)
