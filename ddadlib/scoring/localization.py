"""Where the lesions are: localization metrics of anomaly maps.

On data with pixel masks (the synthetic set):

- ``pixel_auc``: the ROC AUC over all test pixels (:func:`ddadlib.scoring.metrics.pixel_auc`);
- ``aupro``: the area under the per-region-overlap curve up to a false-positive rate of 0.3,
  divided by 0.3 (the MVTec AD evaluation, Bergmann et al., IJCV 2021). Each connected region
  of a ground-truth mask (:func:`scipy.ndimage.label`, 8-connected) counts once, whatever its
  size: at a threshold, its overlap is the share of its pixels above the threshold, the PRO is
  the mean overlap over all regions of all images, and the false-positive rate is the share of
  normal pixels (of every image) above it. A perfect map gives 1, a constant map 0.15.

The PRO is a true-positive rate in which each anomalous pixel weighs ``1 / (size of its
region)``, so the curve is scikit-learn's :func:`~sklearn.metrics.roc_curve` with those sample
weights (normal pixels weigh 1), integrated with :func:`~sklearn.metrics.auc`.

On data with boxes instead (RSNA, VinBigData), for the abnormal test images that have boxes:

- ``box_pixel_auc``: the pixel ROC AUC of the map inside the boxes against outside them;
- ``max_in_box``: the share of those images whose map has its maximum inside a box.

A map given per member (``rec``: ``(K, N, S, S)``) is reported as the mean over members.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, roc_curve

from ddadlib.data.records import Box
from ddadlib.scoring.metrics import pixel_auc

#: The false-positive rate up to which the PRO curve is integrated (MVTec AD's).
PRO_FPR_LIMIT = 0.3
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _members(maps: np.ndarray, n: int) -> np.ndarray:
    """``maps`` as ``(K, N, S, S)``: a per-member stack, or one map per image (``K = 1``)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 4 and maps.shape[1] == 1 and maps.shape[0] == n:  # (N, 1, S, S)
        maps = maps[:, 0]
    if maps.ndim == 3:
        maps = maps[None]
    if maps.ndim == 5:  # (K, N, 1, S, S)
        maps = maps[:, :, 0]
    if maps.ndim != 4 or maps.shape[1] != n:
        raise ValueError(f"maps of shape {maps.shape} do not match {n} images")
    return maps


def region_weights(masks: np.ndarray) -> np.ndarray:
    """Per pixel of ``masks`` ``(N, S, S)``: 1 for a normal pixel, ``1 / size`` of its
    connected region for an anomalous one (regions are found in each image separately)."""
    masks = np.asarray(masks, dtype=bool)
    weights = np.ones(masks.shape, dtype=np.float64)
    for i, mask in enumerate(masks):
        if not mask.any():
            continue
        regions, _ = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        sizes = np.bincount(regions.ravel())
        weights[i][mask] = 1.0 / sizes[regions[mask]]
    return weights


def pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-positive rates and per-region overlaps of one map per image ``(N, S, S)`` against
    bool ``masks`` ``(N, S, S)``, over every threshold (rising FPR)."""
    masks = np.asarray(masks, dtype=bool)
    truth = masks.ravel()
    if truth.all() or not truth.any():
        raise ValueError("the PRO curve needs both anomalous and normal pixels")
    fpr, pro, _ = roc_curve(
        truth,
        np.asarray(maps, dtype=np.float64).ravel(),
        sample_weight=region_weights(masks).ravel(),
        drop_intermediate=False,
    )
    return fpr, pro


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """The normalised area under the PRO curve up to ``fpr_limit`` (see the module docstring):
    1 for a perfect map, ``fpr_limit / 2`` for a constant one. ``maps`` may be ``(K, N, S,
    S)``: then the mean over the K members."""
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks = np.asarray(masks, dtype=bool)
    values = []
    for member in _members(maps, masks.shape[0]):
        fpr, pro = pro_curve(masks, member)
        # the curve up to fpr_limit, closed with the point interpolated at fpr_limit
        keep = fpr <= fpr_limit
        x = np.r_[fpr[keep], fpr_limit]
        y = np.r_[pro[keep], np.interp(fpr_limit, fpr, pro)]
        values.append(auc(x, y) / fpr_limit)
    return float(np.mean(values))


def box_masks(boxes: Sequence[Sequence[Box]], size: int) -> np.ndarray:
    """Bool masks ``(N, size, size)`` of the pixels that each image's boxes overlap (box
    coordinates in pixels of the ``size``-pixel image, ``x, y`` the top-left corner)."""
    out = np.zeros((len(boxes), size, size), dtype=bool)
    for i, image_boxes in enumerate(boxes):
        for b in image_boxes:
            c0, r0 = max(int(np.floor(b.x)), 0), max(int(np.floor(b.y)), 0)
            c1, r1 = min(int(np.ceil(b.x + b.w)), size), min(int(np.ceil(b.y + b.h)), size)
            out[i, r0:r1, c0:c1] = True
    return out


def box_localization(maps: np.ndarray, boxes: Sequence[Sequence[Box]]) -> dict[str, float]:
    """``box_pixel_auc`` and ``max_in_box`` (see the module docstring) of maps ``(N, S, S)``
    (or ``(K, N, S, S)``: the mean over members) of the images whose ``boxes`` are given; images
    without boxes are left out (``n_images`` counts the rest)."""
    n = len(boxes)
    stack = _members(maps, n)
    keep = np.array([len(b) > 0 for b in boxes], dtype=bool)
    if not keep.any():
        raise ValueError("no image has a box")
    inside = box_masks([b for b, k in zip(boxes, keep) if k], stack.shape[-1])
    stack = stack[:, keep]
    flat = stack.reshape(stack.shape[0], stack.shape[1], -1)
    hits = np.take_along_axis(
        inside.reshape(inside.shape[0], -1)[None].repeat(len(stack), 0),
        flat.argmax(-1)[..., None],
        axis=-1,
    )
    return {
        "box_pixel_auc": pixel_auc(inside, stack),
        "max_in_box": float(hits.mean()),
        "n_images": int(keep.sum()),
    }


def localization_metrics(
    maps: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None = None,
    boxes: Sequence[Sequence[Box]] | None = None,
) -> dict[str, float]:
    """The localization metrics of one score's maps on a test set: ``pixel_auc`` and
    ``aupro`` where ``masks`` are given (every image), else ``box_pixel_auc``, ``max_in_box``
    and ``n_box_images`` over the abnormal images with ``boxes``; empty when neither is given
    (or the boxes are all empty)."""
    if masks is not None:
        return {"pixel_auc": pixel_auc(masks, maps), "aupro": aupro(masks, maps)}
    if boxes is None:
        return {}
    labels = np.asarray(labels)
    abnormal = np.flatnonzero(labels == 1)
    chosen = [list(boxes[i]) for i in abnormal]
    if not any(chosen):
        return {}
    stack = _members(maps, len(labels))[:, abnormal]
    found = box_localization(stack, chosen)
    return {
        "box_pixel_auc": found["box_pixel_auc"],
        "max_in_box": found["max_in_box"],
        "n_box_images": found["n_images"],
    }
