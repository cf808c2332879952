"""DDAD's anomaly scores as pure functions of reconstructions (``docs/method.md``).

Inputs are tensors (or arrays) with the members first: ``recon_a`` and ``recon_b`` are
``(K, N, 1, S, S)`` reconstructions by modules A and B, ``logvar_b`` (AE-U only) B's
log-variances of the same shape, ``x`` the images ``(N, 1, S, S)``. Every map has the shape of
``x``; an image's score is the mean of its map over pixels (:func:`image_scores`).

- ``rec``: ``(x - x_hat)^2`` of each network of B alone (the baseline: one network trained on
  Dn), shape ``(K, N, 1, S, S)``; with AE-U ``(x - x_hat)^2 * exp(-logvar)`` with that network's
  own log-variance.
- ``rec_ensemble``: ``(x - mu_B)^2``; with AE-U divided by ``sigma^2``.
- ``intra``: the standard deviation over B's members (unbiased, ddof = 1, as the authors' code);
  with AE-U ``sqrt(var_B / sigma^2)``.
- ``inter``: ``|mu_A - mu_B|``; with AE-U divided by ``sigma``.

``sigma^2`` is the mean over B's members of ``exp(logvar)``; module A's log-variance is not used.
"""

from __future__ import annotations

import torch


def uncertainty(logvar_b: torch.Tensor) -> torch.Tensor:
    """AE-U's ``sigma^2``: the mean over B's members of ``exp(logvar)``."""
    return torch.exp(logvar_b).mean(dim=0)


def rec_map(
    x: torch.Tensor, recon: torch.Tensor, logvar: torch.Tensor | None = None
) -> torch.Tensor:
    """Reconstruction error of each network on its own (members first or a single network)."""
    err = (x - recon) ** 2
    return err if logvar is None else err * torch.exp(-logvar)


def rec_ensemble_map(
    x: torch.Tensor, recon_b: torch.Tensor, logvar_b: torch.Tensor | None = None
) -> torch.Tensor:
    """Reconstruction error against module B's mean ``mu_B``."""
    err = (x - recon_b.mean(dim=0)) ** 2
    return err if logvar_b is None else err / uncertainty(logvar_b)


def intra_map(recon_b: torch.Tensor, logvar_b: torch.Tensor | None = None) -> torch.Tensor:
    """Intra-discrepancy: the spread of B's members (needs K >= 2)."""
    if recon_b.shape[0] < 2:
        raise ValueError("the intra-discrepancy needs at least 2 members in module B")
    var = recon_b.var(dim=0, unbiased=True)
    return var.sqrt() if logvar_b is None else torch.sqrt(var / uncertainty(logvar_b))


def inter_map(
    recon_a: torch.Tensor, recon_b: torch.Tensor, logvar_b: torch.Tensor | None = None
) -> torch.Tensor:
    """Inter-discrepancy: ``|mu_A - mu_B|`` (divided by ``sigma`` with AE-U)."""
    diff = (recon_a.mean(dim=0) - recon_b.mean(dim=0)).abs()
    return diff if logvar_b is None else diff / uncertainty(logvar_b).sqrt()


def score_maps(
    x: torch.Tensor,
    recon_b: torch.Tensor,
    recon_a: torch.Tensor | None = None,
    logvar_b: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All maps at once: ``rec`` (per member), ``rec_ensemble``, ``intra`` (K >= 2) and
    ``inter`` (when module A is given)."""
    maps = {
        "rec": rec_map(x, recon_b, logvar_b),
        "rec_ensemble": rec_ensemble_map(x, recon_b, logvar_b),
    }
    if recon_b.shape[0] >= 2:
        maps["intra"] = intra_map(recon_b, logvar_b)
    if recon_a is not None:
        maps["inter"] = inter_map(recon_a, recon_b, logvar_b)
    return maps


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """Image scores: the mean of each map over its last three axes (channel and pixels)."""
    return maps.mean(dim=(-3, -2, -1))
