"""Detection metrics, computed with scikit-learn.

For each score: ROC AUC (the paper's metric), average precision, a bootstrap 95% interval of the
AUC (images resampled with replacement, stratified by label, seeded) and the sensitivity at 95%
specificity. A score given per member (``rec``: each network of module B alone) is reported as
the mean over members, with ``auc_std`` their spread; its interval is the bootstrap of that mean.
With pixel masks, the pixel-level ROC AUC and AUPRO are added, with boxes the box metrics
(:mod:`ddadlib.scoring.localization`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ddadlib.seeding import rng


def operating_point(
    labels: np.ndarray, scores: np.ndarray, specificity: float = 0.95
) -> tuple[float, float]:
    """The threshold and true-positive rate of the ROC point with the highest true-positive rate
    whose false-positive rate is at most ``1 - specificity``.

    A score *above* the threshold counts as abnormal; the threshold is the highest normal score
    that must not be flagged (the largest normal score when fewer than ``1 / (1 -
    specificity)`` normal images are given), so it also serves images scored later.
    """
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    # never empty: the ROC curve starts at (0, 0) with an infinite threshold
    last = np.flatnonzero(fpr <= 1.0 - specificity + 1e-12)[-1]
    # thresholds fall: the next one is the first whose inclusion costs too many normal images
    below = float(thresholds[last + 1]) if last + 1 < len(thresholds) else -np.inf
    return below, float(tpr[last])


def sensitivity_at_specificity(
    labels: np.ndarray, scores: np.ndarray, specificity: float = 0.95
) -> float:
    """The highest true-positive rate whose false-positive rate is at most ``1 - specificity``."""
    return operating_point(labels, scores, specificity)[1]


def _check(labels: np.ndarray, scores: np.ndarray) -> None:
    if scores.shape[-1] != labels.shape[0]:
        raise ValueError(f"{scores.shape[-1]} scores for {labels.shape[0]} labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    if len(np.unique(labels)) != 2:
        raise ValueError("metrics need both normal (0) and abnormal (1) images")


def bootstrap_auc(
    labels: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC; ``scores`` is ``(N,)`` or ``(K, N)`` (then
    the statistic is the mean AUC over the K rows).

    Normal and abnormal images are resampled separately (the class sizes stay fixed). Each
    resample's AUC is the Mann-Whitney U statistic over ``n_normal * n_abnormal`` (equal to
    scikit-learn's ROC AUC, ties counted half), which scipy computes for all resamples at once.
    """
    labels = np.asarray(labels)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    g = rng(seed, "bootstrap")
    idx0, idx1 = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    pick0 = g.choice(idx0, (n_boot, idx0.size))
    pick1 = g.choice(idx1, (n_boot, idx1.size))
    stats = np.zeros(n_boot)
    for row in scores:
        u = mannwhitneyu(row[pick1], row[pick0], axis=1, method="asymptotic").statistic
        stats += u / (idx0.size * idx1.size)
    stats /= len(scores)
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def score_metrics(
    labels: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Metrics of one score, ``(N,)`` or per member ``(K, N)``."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    _check(labels, scores)
    rows = np.atleast_2d(scores)
    aucs = [roc_auc_score(labels, r) for r in rows]
    out = {
        "auc": float(np.mean(aucs)),
        "ap": float(np.mean([average_precision_score(labels, r) for r in rows])),
        "auc_ci": list(bootstrap_auc(labels, rows, n_boot, seed)) if n_boot else None,
        "sens_at_95_spec": float(np.mean([sensitivity_at_specificity(labels, r) for r in rows])),
        "n_normal": int((labels == 0).sum()),
        "n_abnormal": int((labels == 1).sum()),
    }
    if scores.ndim == 2:
        out["auc_std"] = float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0
        out["auc_members"] = [float(a) for a in aucs]
    return out


def pixel_auc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level ROC AUC of maps ``(N, S, S)`` (or with a channel axis) against bool masks
    ``(N, S, S)``; normal images count with all-zero masks. ``maps`` may be ``(K, N, ...)``:
    then the mean AUC over the K members."""
    masks = np.asarray(masks, dtype=bool).reshape(masks.shape[0], -1)
    maps = np.asarray(maps, dtype=np.float64)
    rows = (
        maps.reshape(-1, *masks.shape) if maps.size != masks.size else maps.reshape(1, *masks.shape)
    )
    truth = masks.ravel()
    if truth.all() or not truth.any():
        raise ValueError("pixel AUC needs both anomalous and normal pixels")
    return float(np.mean([roc_auc_score(truth, r.ravel()) for r in rows]))


def evaluate_scores(
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    *,
    masks: np.ndarray | None = None,
    maps: dict[str, np.ndarray] | None = None,
    boxes: list | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict]:
    """Metrics of every score in ``scores`` (name -> ``(N,)`` or ``(K, N)``), with the
    localization metrics of :mod:`ddadlib.scoring.localization` (pixel AUC and AUPRO with
    ``masks``, the box metrics with ``boxes``, one list of boxes per image) where the matching
    ``maps`` are given."""
    # localization builds on pixel_auc above, so it is imported here, not at the top
    from ddadlib.scoring.localization import localization_metrics

    out = {}
    for name, s in scores.items():
        out[name] = score_metrics(labels, s, n_boot=n_boot, seed=seed)
        if maps is not None and name in maps:
            out[name].update(localization_metrics(maps[name], labels, masks=masks, boxes=boxes))
    return out


#: The localization metrics a score may carry, in the order tables show them.
LOCALIZATION_KEYS = ("pixel_auc", "aupro", "box_pixel_auc", "max_in_box")


def format_metrics(metrics: dict[str, dict]) -> str:
    """A small text table of AUC (with interval) and AP per score."""
    lines = [f"{'score':<14}{'AUC':>13}{'95% CI':>17}{'AP':>8}{'sens@95%spec':>14}"]
    for name, m in metrics.items():
        auc = f"{m['auc']:.3f}" + (f"±{m['auc_std']:.3f}" if "auc_std" in m else "")
        ci = m.get("auc_ci")
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        lines.append(f"{name:<14}{auc:>13}{ci_s:>17}{m['ap']:>8.3f}{m['sens_at_95_spec']:>14.3f}")
    pixel = [k for k in LOCALIZATION_KEYS if any(k in m for m in metrics.values())]
    if pixel:
        lines += ["", f"{'score':<14}" + "".join(f"{k:>15}" for k in pixel)]
        for name, m in metrics.items():
            if any(k in m for k in pixel):
                cells = "".join(f"{m[k]:>15.3f}" if k in m else f"{'-':>15}" for k in pixel)
                lines.append(f"{name:<14}{cells}")
    return "\n".join(lines)
