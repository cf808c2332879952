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
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from ddadlib.fileio import atomic_write_bytes
from ddadlib.paper import SCORE_TITLES

__all__ = [
    "KIND_COLORS",
    "pick_map_examples",
    "draw_ar_curve",
    "plot_ar_curve",
    "plot_sample_grid",
    "plot_score_histograms",
    "plot_score_maps",
    "sample_grid_of",
    "save_figure",
]

KIND_COLORS: dict[str, str] = {
    "opacity": "#ff7f0e",
    "nodule": "#ff2d2d",
    "effusion": "#1e90ff",
    "cardiomegaly": "#e040fb",
    "pneumothorax": "#00e5ff",
    "atelectasis": "#c6ff00",
    "pneumonia": "#2ecc40",
}
"""Outline colour of each abnormality kind (others get :data:`_OTHER_COLORS` in turn)."""

_OTHER_COLORS = ("#2ecc40", "#ffdc00", "#f012be", "#7fdbff", "#ff851b", "#b10dc9")
_BOX_COLOR = "#ffdc00"
_CAPTION_COLOR = "0.1"
_MAX_COLS = 8


def _draw_box(ax, bx) -> None:
    """A bounding box (pixel ``x``, ``y``, ``w``, ``h``) as an outline on an image axis."""
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


def _tint(color: str, strength: float = 0.3) -> tuple[float, float, float, float]:
    """``color`` mixed with white: an opaque light background that dark text reads on."""
    r, g, b, _ = to_rgba(color)
    return (1 - strength * (1 - r), 1 - strength * (1 - g), 1 - strength * (1 - b), 1.0)


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
    imgs = _image_stack(images, "images")
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
            kind = str(kinds[i]) if kinds is not None and kinds[i] and cls == 1 else ""
            if kind and kind.lower() not in palette:
                palette[kind.lower()] = next(extra)
            color = palette.get(kind.lower(), _OTHER_COLORS[0])
            if msk is not None and labs[i] != 0 and msk[i].any():
                ax.contour(msk[i].astype(np.float32), levels=[0.5], colors=[color], linewidths=1.0)
            box_labels = []
            if boxes is not None and boxes[i]:
                for bx in boxes[i]:
                    _draw_box(ax, bx)
                    if getattr(bx, "label", ""):
                        box_labels.append(str(bx.label))
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            if cls == 0:
                ax.set_title("normal", fontsize=8, color="0.25", pad=2)
                continue
            caption = kind or (", ".join(dict.fromkeys(box_labels)) if box_labels else "abnormal")
            # The outline colours are bright, to stand out on the gray image; as text on the white
            # page they would be unreadable (yellow), so the caption is dark text on a light box
            # tinted with the outline's colour.
            box = {"boxstyle": "round,pad=0.2", "facecolor": _tint(color), "edgecolor": color}
            ax.set_title(
                caption, fontsize=8, color=_CAPTION_COLOR, pad=3, bbox=box if kind else None
            )
    if title:
        fig.suptitle(title, fontsize=11, y=1.0 - 0.1 / fig_h, va="top")
    return fig


def sample_grid_of(dataset: Any, n_per_class: int = 8, seed: int = 0) -> Figure:
    """:func:`plot_sample_grid` of a :class:`~ddadlib.data.dataset.PreparedDataset`.

    Abnormal images show their pixel masks where the dataset has them (the synthetic set),
    else their boxes (RSNA, VinBigData); captions are the manifest's ``finding``.
    """
    has_boxes = dataset.masks is None and (dataset.manifest["boxes"] != "[]").any()
    boxes = [dataset.boxes(i) for i in range(len(dataset))] if has_boxes else None
    size = dataset.size
    source = dataset.info.get("source", "dataset")
    return plot_sample_grid(
        dataset.images,
        dataset.labels,
        masks=dataset.masks,
        kinds=dataset.manifest["finding"].tolist(),
        boxes=boxes,
        n_per_class=n_per_class,
        seed=seed,
        title=f"{source}: {dataset.root.name}, {size} x {size}, samples drawn with seed {seed}",
    )


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure as PNG (or the format its suffix names), atomically."""

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


# --- scores: histograms (the paper's Fig. 3) and maps (its Fig. 1) --------------------------

_CLASS_COLORS = ("#0072b2", "#d55e00")
"""Normal (blue) and abnormal (vermillion): distinct for colour-blind readers and in grayscale."""

_MAP_TITLES: dict[str, str] = {
    "mu_A": r"$\mu_A$ (module A)",
    "mu_B": r"$\mu_B$ (module B)",
    "rec": "rec",
    "rec_ensemble": "rec (ensemble)",
    "intra": "intra",
    "inter": "inter",
}
_MAP_CMAP = "inferno"
_CONTOUR_COLOR = "#00e5ff"


def _class_labels(labels: Any, n: int | None = None) -> np.ndarray:
    """Labels as a 1-D int array of 0 (normal) and 1 (abnormal), checked against ``n``."""
    labs = np.asarray(labels).reshape(-1)
    if n is not None and labs.shape[0] != n:
        raise ValueError(f"labels has {labs.shape[0]} values for {n} images")
    if labs.size and not np.isin(labs, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (abnormal)")
    return labs.astype(int)


def _minmax(values: np.ndarray) -> np.ndarray:
    """Min-max normalised to [0, 1]; a constant score becomes all zeros (one bin)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float64)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def plot_score_histograms(
    scores: dict[str, Any],
    labels: Any,
    metrics: dict[str, dict] | None = None,
    bins: int = 40,
    title: str | None = None,
    ncols: int | None = None,
) -> Figure:
    """Histograms of image scores, normal against abnormal, one panel per score (paper Fig. 3).

    ``scores``: name -> ``(N,)`` image scores, or ``(K, N)`` per member (``rec``: each network of
    module B alone), of which the first row is drawn and the panel says "network 1 of K" (with
    K > 1; f-AnoGAN's ``(1, N)`` is its one network). Panels
    follow the dict's order; up to 4 make one row, more wrap onto rows of 3 (4 above 6), or of
    ``ncols``.
    ``labels``: ``(N,)``, 0 normal, 1 abnormal. ``metrics`` (optional): name -> the dict of
    :func:`ddadlib.scoring.metrics.score_metrics`; its ``"auc"`` (and ``"auc_std"`` over members) goes
    into the panel's title.

    Each score is min-max normalised to [0, 1] over all N images, as in the paper, so the panels
    share an x axis; a constant score lands in the first bin. Both classes use the same ``bins``
    equal bins on [0, 1] and are drawn as densities, so classes of different sizes compare.
    """
    if not scores:
        raise ValueError("scores is empty: give at least one score")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    labs = _class_labels(labels)
    n = labs.shape[0]
    if n == 0:
        raise ValueError("labels is empty: no images to show")
    rows: dict[str, tuple[np.ndarray, int | None]] = {}
    for name, value in scores.items():
        arr = np.asarray(value, dtype=np.float64)
        members = None
        if arr.ndim == 2:
            members, arr = (arr.shape[0] if arr.shape[0] > 1 else None), arr[0]
        if arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(
                f"score {name!r} must have shape ({n},) or (K, {n}), got {np.shape(value)}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"score {name!r} contains NaN or infinity")
        rows[name] = (_minmax(arr), members)

    n_panels = len(rows)
    if ncols is None:
        ncols = n_panels if n_panels <= 4 else (3 if n_panels <= 6 else 4)
    elif isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"ncols must be an integer >= 1, got {ncols!r}")
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(
        figsize=(0.3 + 3.1 * ncols, (0.75 if title else 0.45) + 2.75 * nrows), layout="constrained"
    )
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    counts = [int((labs == cls).sum()) for cls in (0, 1)]
    for p, (name, (values, members)) in enumerate(rows.items()):
        ax = fig.add_subplot(nrows, ncols, p + 1)
        for cls, color in enumerate(_CLASS_COLORS):
            if counts[cls]:
                ax.hist(
                    values[labs == cls],
                    bins=edges,
                    density=True,
                    histtype="stepfilled",
                    facecolor=to_rgba(color, 0.4),
                    edgecolor=color,
                    linewidth=1.2,
                )
        lines = [SCORE_TITLES.get(name, name)]
        if members is not None:
            lines.append(f"network 1 of {members}")
        info = (metrics or {}).get(name) or {}
        if info.get("auc") is not None:
            auc = f"AUC {float(info['auc']):.3f}"
            if members is not None and info.get("auc_std") is not None:
                auc += f" ± {float(info['auc_std']):.3f} (mean of {members})"
            lines.append(auc)
        ax.set_title("\n".join(lines), fontsize=9)
        if not values.any():
            ax.text(
                0.5,
                0.5,
                "constant score:\nall images in one bin",
                ha="center",
                va="center",
                fontsize=8,
                color="0.4",
                transform=ax.transAxes,
            )
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("score (min-max normalised)", fontsize=8)
        if p % ncols == 0:
            ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    handles = [Patch(facecolor=to_rgba(c, 0.4), edgecolor=c, linewidth=1.2) for c in _CLASS_COLORS]
    fig.legend(
        handles,
        [f"normal (n={counts[0]})", f"abnormal (n={counts[1]})"],
        loc="outside lower center",
        ncols=2,
        frameon=False,
        fontsize=9,
    )
    return fig


def _image_stack(value: Any, what: str) -> np.ndarray:
    """(n, h, w) from (n, h, w) or (n, 1, h, w)."""
    arr = np.asarray(value)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"{what} must have shape (n, h, w) or (n, 1, h, w), got {np.shape(value)}")
    return arr


def _gray_range(arr: np.ndarray) -> tuple[float, float]:
    """Display range of grayscale images: 0..255 for uint8, -1..1 or 0..1 for floats inside it
    (the model's range), else the range of the values."""
    if arr.dtype == np.uint8:
        return 0.0, 255.0
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if -1.0 <= lo and hi <= 1.0:
        return (-1.0, 1.0) if lo < 0.0 else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _is_reconstruction(name: str) -> bool:
    """Maps shown in gray like the input: ``mu_A``/``mu_B`` and anything named a reconstruction."""
    low = name.lower()
    return low.startswith("mu") or "recon" in low or low in ("x_hat", "xhat")


def _short_id(text: str, width: int = 16) -> str:
    """A row label that fits beside a small image: the file name, shortened in the middle."""
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width // 2 - 1] + "…" + name[-(width // 2) :]


def plot_score_maps(
    images: Any,
    maps: dict[str, Any],
    labels: Any | None = None,
    masks: Any | None = None,
    ids: Sequence[str] | None = None,
    max_images: int = 4,
    boxes: Sequence[Sequence[Any] | None] | None = None,
) -> Figure:
    """Input images beside their reconstructions and anomaly maps, one row per image (paper
    Fig. 1).

    ``images``: (N, S, S) or (N, 1, S, S), uint8 (shown on 0..255) or float (shown on -1..1,
    the model's range, when inside it). ``maps``: name -> (N, S, S) or (N, 1, S, S), one column
    each in the dict's order; a per-member map (K, N, 1, S, S) or (K, N, S, S), such as the
    ``rec`` of :meth:`ddadlib.detectors.DDAD.score_maps`, shows its first member. Maps
    whose name starts with ``mu`` (``mu_A``, ``mu_B``) or names a reconstruction are drawn in
    gray, on the input's range when both are float; the others (``intra``, ``inter``, ``rec``,
    ...) with the ``inferno`` colormap. ``labels`` (optional) adds "normal"/"abnormal" to the row
    labels, ``ids`` (optional) names the rows (else the row's index), ``masks`` (optional, bool,
    the shape of the images) draws the true mask's outline on the input image, ``boxes``
    (optional: per image, a list of :class:`~ddadlib.data.records.Box` or None) its boxes.

    The first ``max_images`` images are shown: pick them beforehand, e.g. with
    :func:`pick_map_examples`. ``fig.axes`` starts with the ``rows * (1 + len(maps))`` image
    axes, row by row, followed by one colorbar axes under each colormap column.
    """
    imgs = _image_stack(images, "images")
    n = imgs.shape[0]
    if n == 0:
        raise ValueError("images is empty: no images to show")
    if (
        isinstance(max_images, bool)
        or not isinstance(max_images, (int, np.integer))
        or max_images < 1
    ):
        raise ValueError(f"max_images must be an integer >= 1, got {max_images!r}")
    labs = None if labels is None else _class_labels(labels, n)
    msk = None
    if masks is not None:
        msk = _image_stack(masks, "masks").astype(bool)
        if msk.shape != imgs.shape:
            raise ValueError(
                f"masks must have the shape of the images {imgs.shape}, got {msk.shape}"
            )
    if ids is not None and len(ids) != n:
        raise ValueError(f"ids has {len(ids)} values for {n} images")
    if boxes is not None and len(boxes) != n:
        raise ValueError(f"boxes has {len(boxes)} entries for {n} images")
    columns: list[tuple[str, np.ndarray]] = []
    for name, value in maps.items():
        arr = np.asarray(value)
        title = _MAP_TITLES.get(name, name)
        per_member = arr.ndim == 5 or (
            arr.ndim == 4 and arr.shape[1] == n and (arr.shape[0] != n or n != 1)
        )
        if per_member:  # (K, N, 1, S, S) or (K, N, S, S): the first network
            title = f"{title}\n(network 1 of {arr.shape[0]})"
            arr = arr[0]
        arr = _image_stack(arr, f"map {name!r}")
        if arr.shape[0] != n:
            raise ValueError(f"map {name!r} has {arr.shape[0]} images, the input has {n}")
        columns.append((title, arr))

    rows = min(n, int(max_images))
    ncols = 1 + len(columns)
    h, w = imgs.shape[1:]
    # layout in inches: row labels on the left, column titles on top, colorbars at the bottom
    cell_w, cell_h = 1.6, 1.6 * h / w
    left, right, gap, top = 0.5, 0.08, 0.06, 0.42
    has_cbar = any(not _is_reconstruction(t) for t in maps)
    bottom = 0.5 if has_cbar else 0.06
    fig_w = left + ncols * cell_w + (ncols - 1) * gap + right
    fig_h = top + rows * cell_h + (rows - 1) * gap + bottom
    fig = Figure(figsize=(fig_w, fig_h))

    def cell(r: int, c: int) -> Any:
        x0 = left + c * (cell_w + gap)
        y0 = fig_h - top - (r + 1) * cell_h - r * gap
        ax = fig.add_axes((x0 / fig_w, y0 / fig_h, cell_w / fig_w, cell_h / fig_h))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        return ax

    grid = [[cell(r, c) for c in range(ncols)] for r in range(rows)]  # fig.axes row by row
    in_range = _gray_range(imgs[:rows])
    for r in range(rows):
        ax = grid[r][0]
        ax.imshow(imgs[r], cmap="gray", vmin=in_range[0], vmax=in_range[1], interpolation="nearest")
        if msk is not None and msk[r].any():
            ax.contour(
                msk[r].astype(np.float32), levels=[0.5], colors=[_CONTOUR_COLOR], linewidths=1.2
            )
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        for bx in (boxes[r] or []) if boxes is not None else []:
            _draw_box(ax, bx)
        name = _short_id(str(ids[r])) if ids is not None else f"#{r}"
        color = "0.1"
        if labs is not None:
            name += "\nabnormal" if labs[r] else "\nnormal"
            color = _CLASS_COLORS[int(labs[r])]
        ax.set_ylabel(name, fontsize=8, color=color)
        if r == 0:
            ax.set_title("input", fontsize=9, pad=4)

    for c, ((title, arr), key) in enumerate(zip(columns, maps), start=1):
        shown = arr[:rows].astype(np.float64)
        if _is_reconstruction(key):
            same_kind = (arr.dtype == np.uint8) == (imgs.dtype == np.uint8)
            vmin, vmax = in_range if same_kind else _gray_range(arr[:rows])
            cmap = "gray"
        else:
            # One scale per column, shared by its rows: normal and abnormal rows compare at a
            # glance (a per-image scale would stretch a normal image's faint noise to look as
            # hot as a lesion). 0 to the 99th percentile, so a few hot pixels do not wash out
            # the rest; one colorbar under the column gives the values.
            finite = shown[np.isfinite(shown)]
            vmin = min(0.0, float(np.percentile(finite, 1))) if finite.size else 0.0
            vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
            if vmax <= vmin:
                vmax = float(finite.max()) if finite.size and finite.max() > vmin else vmin + 1.0
            cmap = _MAP_CMAP
        im = None
        for r in range(rows):
            ax = grid[r][c]
            im = ax.imshow(shown[r], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if r == 0:
                ax.set_title(title, fontsize=9, pad=4)
        if cmap == _MAP_CMAP and im is not None:
            x0 = left + c * (cell_w + gap) + 0.1 * cell_w
            cax = fig.add_axes((x0 / fig_w, 0.3 / fig_h, 0.8 * cell_w / fig_w, 0.08 / fig_h))
            bar = fig.colorbar(im, cax=cax, orientation="horizontal")
            bar.locator = MaxNLocator(nbins=3)
            bar.update_ticks()
            cax.tick_params(labelsize=7, length=2, pad=1)
    return fig


def pick_map_examples(
    labels: Any,
    scores: Any | None = None,
    n_abnormal: int = 3,
    n_normal: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Indices of test images to show in :func:`plot_score_maps`: abnormal first, then normal.

    The images are a seeded random choice (``np.random.default_rng(seed)``) within each class,
    never chosen by their score: picking the best-looking maps would show the method at its
    best rather than as it is (no cherry-picking). ``scores`` is only checked to have one value
    per image; it does not influence the choice. A class with fewer images than asked gives all
    it has. Within a class the indices are in increasing order.
    """
    labs = _class_labels(labels)
    if scores is not None:
        sc = np.asarray(scores)
        if sc.shape[-1] != labs.shape[0]:
            raise ValueError(f"scores has {sc.shape[-1]} values for {labs.shape[0]} labels")
    for what, k in (("n_abnormal", n_abnormal), ("n_normal", n_normal)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"{what} must be an integer >= 0, got {k!r}")
    rng = np.random.default_rng(seed)
    picked = []
    for cls, k in ((1, n_abnormal), (0, n_normal)):
        pool = np.flatnonzero(labs == cls)
        k = min(int(k), pool.size)
        picked.append(np.sort(rng.choice(pool, size=k, replace=False)) if k else pool[:0])
    return np.concatenate(picked).astype(np.int64)


_SCORE_COLORS = {
    "inter": "#d55e00",
    "intra": "#009e73",
    "rec": "#0072b2",
    "rec_ensemble": "#56b4e9",
}


def draw_ar_curve(
    ax: Any,
    results: Any,
    scores: Sequence[str] = ("inter", "intra", "rec"),
    reference: dict[str, Sequence[float]] | None = None,
    reference_ars: Sequence[float] | None = None,
    reference_label: str = "paper, RSNA",
    marked_ar: float | None = None,
) -> None:
    """Draw the AUC-against-AR curves of :func:`plot_ar_curve` into the axes ``ax``."""

    frame = pd.DataFrame(results)
    frame = frame[frame["score"].isin(list(scores)) & frame["ar"].notna()]
    if frame.empty:
        raise ValueError("no results with an AR for the scores asked for")
    if frame["backbone"].nunique() > 1:
        raise ValueError(
            f"results hold several backbones {sorted(frame['backbone'].unique())}; give one"
        )
    for name in scores:
        part = frame[frame["score"] == name]
        if part.empty:
            continue
        stats = part.groupby("ar")["auc"].agg(["mean", "std", "count"]).reset_index()
        color = _SCORE_COLORS.get(name, "0.3")
        n = int(stats["count"].min())
        ax.plot(
            stats["ar"],
            stats["mean"],
            "o-",
            color=color,
            label=f"{SCORE_TITLES.get(name, name)} (ours, {n} seed{'s' * (n > 1)})",
        )
        if n > 1:
            ax.fill_between(
                stats["ar"],
                stats["mean"] - stats["std"],
                stats["mean"] + stats["std"],
                color=color,
                alpha=0.2,
                linewidth=0,
            )
        if marked_ar is not None:
            at = stats[np.isclose(stats["ar"], marked_ar)]
            ax.plot(at["ar"], at["mean"], "o", markersize=9, color=color, markeredgecolor="black")
        if reference and name in reference and reference_ars is not None:
            ax.plot(
                reference_ars,
                reference[name],
                "--",
                color=color,
                alpha=0.8,
                label=f"{SCORE_TITLES.get(name, name)} ({reference_label})",
            )
    if marked_ar is not None:
        ax.axvline(marked_ar, color="0.4", linewidth=1, linestyle=":")
    ax.set_xlabel("anomaly rate (AR) of the unlabeled set Du")
    ax.set_ylabel("AUC")
    ax.set_xlim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_ar_curve(
    results: Any,
    scores: Sequence[str] = ("inter", "intra", "rec"),
    reference: dict[str, Sequence[float]] | None = None,
    reference_ars: Sequence[float] | None = None,
    reference_label: str = "paper, RSNA",
    marked_ar: float | None = None,
    title: str | None = None,
) -> Figure:
    """AUC against the anomaly rate of Du (the paper's AR ablation): mean over seeds with a
    band of ± one standard deviation, one line per score.

    ``results``: the table of :func:`ddadlib.runs.grid.load_results` (columns backbone, ar,
    seed, score, auc), of one backbone. ``reference``: score -> AUCs at ``reference_ars``, drawn
    dashed (the paper's numbers). ``marked_ar``: that AR is marked.
    """
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    draw_ar_curve(ax, results, scores, reference, reference_ars, reference_label, marked_ar)
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncols=2,
        fontsize=8,
        frameon=False,
    )
    backbone = str(results["backbone"].iloc[0]).upper().replace("AEU", "AE-U")
    ax.set_title(title or f"AR ablation ({backbone})", fontsize=11)
    return fig
