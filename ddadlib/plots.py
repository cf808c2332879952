"""Figures for looking at data and results.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it works with
any backend (Agg included) and leaves no global state; save it with :func:`save_figure`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ["KIND_COLORS", "plot_sample_grid", "sample_grid_of", "save_figure"]

KIND_COLORS: dict[str, str] = {
    "opacity": "#ff7f0e",
    "nodule": "#ff2d2d",
    "effusion": "#1e90ff",
    "cardiomegaly": "#e040fb",
    "pneumothorax": "#00e5ff",
    "atelectasis": "#c6ff00",
}
"""Outline colour of each abnormality kind (others get :data:`_OTHER_COLORS` in turn)."""

_OTHER_COLORS = ("#2ecc40", "#ffdc00", "#f012be", "#7fdbff", "#ff851b", "#b10dc9")
_BOX_COLOR = "#ffdc00"
_MAX_COLS = 8


def plot_sample_grid(
    images: Any,
    labels: Any,
    masks: Any | None = None,
    kinds: Sequence[str] | None = None,
    boxes: Sequence[Sequence[Any] | None] | None = None,
    n_per_class: int = 8,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """A grid of normal samples above abnormal samples, in grayscale.

    ``images``: (n, h, w) or (n, 1, h, w), any numeric type (uint8 is shown on 0..255, other
    types on the range of the images shown). ``labels``: (n,) with 0 normal and 1 abnormal.
    ``masks`` (optional, (n, h, w) bool): the outline of each abnormal image's mask is drawn in
    the colour of its kind. ``kinds`` (optional, n strings): the caption of each abnormal image.
    ``boxes`` (optional, for real data that has boxes instead of masks): a list with, per image,
    ``None`` or a sequence of objects with attributes ``x, y, w, h`` (pixels, top-left corner) and
    optionally ``label``, drawn as rectangles.

    Up to ``n_per_class`` images of each class are picked at random with ``seed``; a class takes
    ``ceil(n_per_class / 8)`` rows of at most 8 columns. The figure has one axes per slot
    (``2 * rows_per_class * columns``); slots without an image are left blank.
    """
    imgs = np.asarray(images)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise ValueError(
            f"images must have shape (n, h, w) or (n, 1, h, w), got {np.shape(images)}"
        )
    n = imgs.shape[0]
    labs = np.asarray(labels).reshape(-1)
    if labs.shape[0] != n:
        raise ValueError(f"labels has {labs.shape[0]} values for {n} images")
    msk = None
    if masks is not None:
        msk = np.asarray(masks)
        if msk.ndim == 4 and msk.shape[1] == 1:
            msk = msk[:, 0]
        if msk.shape != imgs.shape:
            raise ValueError(
                f"masks must have the shape of the images {imgs.shape}, got {msk.shape}"
            )
    if kinds is not None and len(kinds) != n:
        raise ValueError(f"kinds has {len(kinds)} values for {n} images")
    if boxes is not None and len(boxes) != n:
        raise ValueError(f"boxes has {len(boxes)} entries for {n} images")
    if (
        isinstance(n_per_class, bool)
        or not isinstance(n_per_class, (int, np.integer))
        or n_per_class < 1
    ):
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")

    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for cls in (0, 1):
        pool = np.nonzero(labs == cls)[0]
        k = min(int(n_per_class), pool.size)
        picked.append(np.sort(rng.choice(pool, size=k, replace=False)) if k else pool[:0])

    ncols = min(int(n_per_class), _MAX_COLS)
    rows_per_class = math.ceil(int(n_per_class) / ncols)
    nrows = 2 * rows_per_class
    shown = np.concatenate(picked)
    if imgs.dtype == np.uint8:
        vmin, vmax = 0.0, 255.0
    elif shown.size:
        vmin, vmax = float(imgs[shown].min()), float(imgs[shown].max())
        if vmax <= vmin:
            vmax = vmin + 1.0
    else:
        vmin, vmax = 0.0, 1.0

    h, w = imgs.shape[1:]
    # layout in inches: a label margin on the left, a caption above every image, the title on top
    cell_w, cell_h = 1.5, 1.5 * h / w
    left, right, gap, cap, bottom = 0.32, 0.04, 0.05, 0.2, 0.04
    top = 0.42 if title else 0.04
    fig_w = left + ncols * cell_w + (ncols - 1) * gap + right
    fig_h = top + nrows * (cap + cell_h) + (nrows - 1) * gap + bottom
    fig = Figure(figsize=(fig_w, fig_h))
    axes = np.empty((nrows, ncols), dtype=object)
    for r in range(nrows):
        for c in range(ncols):
            x0 = left + c * (cell_w + gap)
            y0 = fig_h - top - (r + 1) * (cap + cell_h) - r * gap
            axes[r, c] = fig.add_axes((x0 / fig_w, y0 / fig_h, cell_w / fig_w, cell_h / fig_h))
    palette = dict(KIND_COLORS)
    extra = iter(_OTHER_COLORS * 100)

    for cls, idx in enumerate(picked):
        for slot in range(rows_per_class * ncols):
            r, c = cls * rows_per_class + slot // ncols, slot % ncols
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c == 0 and slot // ncols == 0:
                ax.set_ylabel("normal" if cls == 0 else "abnormal", fontsize=10, fontweight="bold")
            if slot >= idx.size:
                if slot == 0:
                    ax.text(
                        0.5,
                        0.5,
                        f"no {'normal' if cls == 0 else 'abnormal'} images",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="0.4",
                        transform=ax.transAxes,
                    )
                continue
            i = int(idx[slot])
            ax.imshow(imgs[i], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            kind = str(kinds[i]) if kinds is not None and kinds[i] else ""
            if kind and kind not in palette:
                palette[kind] = next(extra)
            color = palette.get(kind, _OTHER_COLORS[0])
            if msk is not None and labs[i] != 0 and msk[i].any():
                ax.contour(msk[i].astype(np.float32), levels=[0.5], colors=[color], linewidths=1.0)
            box_labels = []
            if boxes is not None and boxes[i]:
                for bx in boxes[i]:
                    ax.add_patch(
                        Rectangle(
                            (float(bx.x) - 0.5, float(bx.y) - 0.5),
                            float(bx.w),
                            float(bx.h),
                            fill=False,
                            edgecolor=_BOX_COLOR,
                            linewidth=1.0,
                        )
                    )
                    if getattr(bx, "label", ""):
                        box_labels.append(str(bx.label))
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            if cls == 0:
                caption, ccol = "normal", "0.25"
            else:
                caption = kind or (
                    ", ".join(dict.fromkeys(box_labels)) if box_labels else "abnormal"
                )
                ccol = color if kind else "0.1"
            ax.set_title(caption, fontsize=8, color=ccol, pad=2)
    if title:
        fig.suptitle(title, fontsize=11, y=1.0 - 0.1 / fig_h, va="top")
    return fig


def sample_grid_of(dataset: Any, n_per_class: int = 8, seed: int = 0) -> Figure:
    """:func:`plot_sample_grid` of a :class:`~ddadlib.dataset.PreparedDataset`.

    Abnormal images show their pixel masks where the dataset has them (the synthetic set),
    else their boxes (RSNA, VinBigData); captions are the manifest's ``finding``.
    """
    has_boxes = dataset.masks is None and (dataset.manifest["boxes"] != "[]").any()
    boxes = [dataset.boxes(i) for i in range(len(dataset))] if has_boxes else None
    size = dataset.size
    source = dataset.info.get("source", "dataset")
    return plot_sample_grid(
        dataset.images, dataset.labels, masks=dataset.masks,
        kinds=dataset.manifest["finding"].tolist(), boxes=boxes, n_per_class=n_per_class,
        seed=seed, title=f"{source}: {dataset.root.name}, {size} x {size}, samples drawn with "
                        f"seed {seed}")


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure as PNG (or the format its suffix names), atomically."""
    from ddadlib.dataset import atomic_write_bytes

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path
