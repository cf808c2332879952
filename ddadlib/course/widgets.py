"""Interactive views of run folders for the notebooks (needs ``ipywidgets``: ``pip install
ddadlib[notebooks]``).

- :class:`HistogramExplorer`: normal against abnormal score histograms (the paper's Fig. 3) of
  one run, picked by backbone, anomaly rate (AR) and seed, with the run's AUC;
- :class:`ImageBrowser`: the test images of one run one at a time, beside their reconstructions
  and anomaly maps (the paper's Fig. 1), computed only for the image shown;
- :class:`ARSlider`: an AR ablation of one backbone: AUC against AR (mean ± sd over seeds) and
  the histograms at the chosen AR.

Each view is an :class:`ipywidgets.VBox` whose controls are public attributes (set their
``.value`` to drive it from code), with an :class:`ipywidgets.Output` that is redrawn on every
change. ``current`` holds what is shown, ``figure`` the figure drawn last, ``png`` its image and
``renders`` how many times it was drawn. Widgets need a live kernel; a static page (the docs
site) shows :meth:`snapshot`, a :class:`matplotlib.figure.Figure` of the current view, instead.

The views read run folders through :class:`ddadlib.runs.Run` (its config, scores and metrics;
the image browser also its model and the test split of its prepared dataset).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
from IPython.display import Image
from matplotlib.figure import Figure

from ddadlib import plots
from ddadlib.errors import DataError
from ddadlib.paper import BACKBONE_TITLES, SCORE_TITLES, TABLE_AR
from ddadlib.runs.config import RunConfig
from ddadlib.runs.grid import load_results, summarise
from ddadlib.runs.refine import load_refiners
from ddadlib.runs.run import Run, test_indices

__all__ = ["ARSlider", "HistogramExplorer", "ImageBrowser"]

#: The AR dropdown's value for a run without unlabeled images (f-AnoGAN).
NO_AR = "none"
_DPI = 96


# -- reading run folders ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Run:
    """An evaluated run as the views show it: its config, scores and metrics, read once."""

    path: Path
    config: RunConfig
    names: list[str]
    labels: np.ndarray
    arrays: dict[str, np.ndarray]
    metrics: dict

    @property
    def backbone(self) -> str:
        return self.config.backbone

    @property
    def ar(self) -> float | None:
        return None if self.config.ar is None else float(self.config.ar)

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    def values(self, name: str) -> np.ndarray:
        """Image scores ``(N,)``; ``rec`` as ``(K, N)``, one row per network of module B (the
        form :func:`ddadlib.plots.plot_score_histograms` and ``metrics.json`` use)."""
        return self.arrays[name]


def _read_run(run: str | Path) -> _Run:
    """An evaluated run folder (a :class:`DataError` naming the folder and the fix otherwise)."""
    found = Run(run)
    if not found.path.is_dir():
        raise DataError(f"{run}: no such run folder")
    cfg = found.config
    table = found.scores()
    metrics = found.metrics()
    arrays = found.score_arrays(table)
    # the detector's scores, then the refinements' (r_intra, r_dual) where the run has them
    names = [n for n in arrays if n in metrics and np.isfinite(arrays[n]).all()]
    labels = table["label"].to_numpy(dtype=np.int64)
    return _Run(found.path, cfg, names, labels, arrays, metrics)


def _read_runs(runs: str | Path | Iterable[str | Path]) -> list[_Run]:
    if isinstance(runs, (str, Path)):
        runs = [runs]
    runs = list(runs)
    if not runs:
        raise ValueError(
            "no runs given: pass a list of run folders (written by `ddad train` "
            "and scored by `ddad evaluate`)"
        )
    out = [_read_run(r) for r in runs]
    seen: dict[tuple, Path] = {}
    for r in out:
        key = (r.backbone, r.ar, r.seed)
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {r.path} are both {r.backbone} at AR {r.ar} with "
                f"seed {r.seed}: give one run per backbone, AR and seed"
            )
        seen[key] = r.path
    return out


def _backbone_order(names: Iterable[str]) -> list[str]:
    order = list(BACKBONE_TITLES)
    return sorted(set(names), key=lambda b: (order.index(b) if b in order else len(order), b))


def _ar_key(ar: float | None) -> float | str:
    return NO_AR if ar is None else ar


def _ar_label(ar: float | None) -> str:
    return "none (Dn only)" if ar is None else f"{ar:g}"


def _set_options(control: widgets.ValueWidget, options: list, keep: Any = None) -> None:
    """Give a selection control new options, keeping ``keep`` (else its value) when offered."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    want = control.value if keep is None else keep
    if list(control.options) != list(options):
        control.options = options
    if want in values:
        control.value = want
    elif control.value not in values and values:
        control.value = values[0]


def _png(fig: Figure, dpi: int = _DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# -- the common part of the views ----------------------------------------------------------------
class _View(widgets.VBox):
    """A VBox that redraws a figure into its ``output`` when a control changes."""

    def __init__(self) -> None:
        super().__init__()
        self.output = widgets.Output()
        self.current: dict[str, Any] = {}
        self.figure: Figure | None = None
        self.png: bytes = b""
        self.renders = 0
        self._holding = False

    @contextmanager
    def _hold(self) -> Iterator[None]:
        """Change several controls without a redraw for each."""
        was, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = was

    def _watch(self, *controls: widgets.Widget) -> None:
        for control in controls:
            control.observe(self._on_change, names="value")

    def _on_change(self, change: dict) -> None:
        if self._holding:
            return
        with self._hold():
            self._sync(change["owner"])
        self._render()

    def _sync(self, changed: widgets.Widget | None) -> None:
        """Make the controls consistent after ``changed`` changed (none: at start)."""

    def _build(self) -> Figure:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _render(self) -> None:
        self.current = self._state()
        self.figure = self._build()
        self.png = _png(self.figure)
        self.renders += 1
        self.output.outputs = ()
        self.output.append_display_data(Image(data=self.png, format="png"))

    def snapshot(self) -> Figure:
        """A new static figure of exactly what the view shows now (for pages without
        JavaScript, where the widget itself cannot be drawn)."""
        return self._build()


# -- 1. histograms of one run ------------------------------------------------------------------
class HistogramExplorer(_View):
    """Normal against abnormal histograms of one score of one run, as in the paper's Fig. 3.

    ``runs``: evaluated run folders (several backbones, ARs, seeds; one run per combination).
    Controls: ``backbone``, ``ar`` (only the ARs run with that backbone; ``"none"`` for
    f-AnoGAN, which has no unlabeled set), ``seed``, ``score`` (the scores the run has:
    f-AnoGAN has ``rec`` only) and ``bins``. Scores are min-max normalised to [0, 1]; the AUC
    shown is the run's ``metrics.json`` (``rec``: the mean over module B's networks).
    ``current`` holds the run, its settings, the score, the bins, ``auc`` and ``ap``. It opens
    on ``ar`` (default the paper's 0.6) where that AR was run.
    """

    def __init__(
        self,
        runs: str | Path | Iterable[str | Path],
        score: str = "inter",
        bins: int = 40,
        ar: float | None = TABLE_AR,
    ) -> None:
        super().__init__()
        self.runs = _read_runs(runs)
        self._first_ar = ar  # shown first when the first backbone was run at it
        backbones = _backbone_order(r.backbone for r in self.runs)
        self.backbone = widgets.Dropdown(
            options=[(BACKBONE_TITLES.get(b, b), b) for b in backbones],
            value=backbones[0],
            description="backbone",
        )
        self.ar = widgets.Dropdown(description="AR")
        self.seed = widgets.Dropdown(description="seed")
        self.score = widgets.Dropdown(description="score")
        self.bins = widgets.IntSlider(
            value=bins, min=5, max=100, step=1, description="bins", continuous_update=False
        )
        with self._hold():
            self._sync(None, score=score)
        self._watch(self.backbone, self.ar, self.seed, self.score, self.bins)
        self.children = (
            widgets.HBox([self.backbone, self.ar, self.seed]),
            widgets.HBox([self.score, self.bins]),
            self.output,
        )
        self._render()

    def _sync(self, changed: widgets.Widget | None, score: str | None = None) -> None:
        mine = [r for r in self.runs if r.backbone == self.backbone.value]
        ars = sorted({r.ar for r in mine}, key=lambda a: -1.0 if a is None else a)
        _set_options(
            self.ar,
            [(_ar_label(a), _ar_key(a)) for a in ars],
            keep=_ar_key(self._first_ar) if changed is None else None,
        )
        self.ar.disabled = len(ars) == 1 and ars[0] is None
        mine = [r for r in mine if _ar_key(r.ar) == self.ar.value]
        _set_options(self.seed, sorted({r.seed for r in mine}))
        names = self.run.names
        if not names:
            raise DataError(f"{self.run.path}: metrics.json and scores.csv share no score")
        keep = score or self.score.value
        _set_options(
            self.score,
            [(SCORE_TITLES.get(n, n), n) for n in names],
            keep=keep if keep in names else ("inter" if "inter" in names else names[0]),
        )

    @property
    def run(self) -> _Run:
        """The run shown."""
        for r in self.runs:
            if (
                r.backbone == self.backbone.value
                and _ar_key(r.ar) == self.ar.value
                and r.seed == self.seed.value
            ):
                return r
        raise LookupError("no run matches the controls")  # not reachable through the controls

    def _state(self) -> dict[str, Any]:
        run, name = self.run, self.score.value
        m = run.metrics[name]
        labels = run.labels
        return {
            "run": str(run.path),
            "backbone": run.backbone,
            "ar": run.ar,
            "seed": run.seed,
            "score": name,
            "bins": int(self.bins.value),
            "auc": float(m["auc"]),
            "auc_std": m.get("auc_std"),
            "ap": m.get("ap"),
            "n_normal": int((labels == 0).sum()),
            "n_abnormal": int((labels == 1).sum()),
        }

    def _build(self) -> Figure:
        run, name = self.run, self.score.value
        title = (
            f"{BACKBONE_TITLES.get(run.backbone, run.backbone)}, AR {_ar_label(run.ar)}, "
            f"seed {run.seed}"
        )
        return plots.plot_score_histograms(
            {name: run.values(name)},
            run.labels,
            {name: run.metrics[name]},
            bins=int(self.bins.value),
            title=title,
        )


# -- 2. test images one at a time -----------------------------------------------------------------
class ImageBrowser(_View):
    """The test images of one finished run, one at a time: the input (with the true mask's
    outline when the dataset has masks, else its boxes, while ``overlay`` is ticked),
    ``mu_A``, ``mu_B``, the ``intra`` and ``inter`` maps and, where the run has been refined
    (``ddad refine``), the ``r_intra`` / ``r_dual`` maps (f-AnoGAN: its reconstruction and
    ``rec`` map).

    ``run``: a run folder with ``model.pt``; ``data``: the prepared dataset (default: the one
    it was trained on, ``config.json``'s ``data_path``). The model is loaded once; maps are
    computed only for the images shown (``computed`` counts them). Controls: ``filter``
    (``"all"``, ``"normal"``, ``"abnormal"``), ``index`` (position among the filtered images),
    ``prev_button``, ``next_button`` and ``overlay`` (a checkbox: draw the mask or boxes). The
    test images are in ``scores.csv``'s order (normal, then abnormal); ``current`` holds the
    image's id, label, position, its image scores (from ``scores.csv`` when the run was
    evaluated), the maps shown and what is overlaid (``overlay``, ``has_mask``, ``n_boxes``).
    """

    def __init__(
        self,
        run: str | Path,
        data: str | Path | None = None,
        filter: str = "all",
        index: int = 0,
        device: str | None = "cpu",
        overlay: bool = True,
    ) -> None:

        super().__init__()
        self.run = Run(run)
        self.path = self.run.path
        self.run.require_finished()
        self.config = self.run.config
        self.dataset = self.run.dataset(data)
        if self.dataset.size != self.config.size:
            raise DataError(
                f"{self.dataset.root}: images are {self.dataset.size} pixels, the "
                f"run was trained on {self.config.size}"
            )
        self.rows = test_indices(self.dataset)
        self.labels = self.dataset.labels[self.rows]
        all_ids = self.dataset.ids
        self.ids = [all_ids[i] for i in self.rows]
        self.scores: pd.DataFrame | None = None
        own = data is None or Path(data).resolve() == Path(self.config.data_path).resolve()
        if own and self.run.is_evaluated and self.run.scores_path.is_file():
            table = self.run.scores()
            if table["id"].tolist() == self.ids:
                self.scores = table
        self.model = self.run.model(device=device)
        # the run's refinements (ddad refine) add their maps, r_intra and r_dual
        self.refiners = load_refiners(self.run.path, self.model, device) if own else []
        self.computed = 0
        self._maps: dict[int, dict[str, np.ndarray]] = {}

        if filter not in ("all", "normal", "abnormal"):
            raise ValueError(f"filter must be 'all', 'normal' or 'abnormal', got {filter!r}")
        self.filter = widgets.ToggleButtons(
            options=["all", "normal", "abnormal"], value=filter, description="show"
        )
        self.index = widgets.IntSlider(
            value=0,
            min=0,
            max=max(len(self.shown) - 1, 0),
            description="image",
            continuous_update=False,
        )
        self.index.value = int(np.clip(index, 0, self.index.max))
        self.prev_button = widgets.Button(description="◀ previous", tooltip="previous image")
        self.next_button = widgets.Button(description="next ▶", tooltip="next image")
        self.prev_button.on_click(lambda _: self.step(-1))
        self.next_button.on_click(lambda _: self.step(+1))
        self.overlay = widgets.Checkbox(value=bool(overlay), description="mask / boxes")
        self.info = widgets.HTML()
        self._watch(self.filter, self.index, self.overlay)
        self.children = (
            self.filter,
            widgets.HBox([self.prev_button, self.index, self.next_button, self.overlay]),
            self.info,
            self.output,
        )
        self._render()

    @property
    def shown(self) -> np.ndarray:
        """Positions in the test set of the images the filter lets through."""
        if self.filter.value == "all":
            return np.arange(len(self.rows))
        return np.flatnonzero(self.labels == (1 if self.filter.value == "abnormal" else 0))

    def step(self, by: int) -> None:
        """Go ``by`` images forward (negative: back), staying within the filtered images."""
        self.index.value = int(np.clip(self.index.value + by, 0, self.index.max))

    def _sync(self, changed: widgets.Widget | None) -> None:
        if changed is self.filter:
            before = self.current.get("test_index")
            shown = self.shown
            self.index.max = max(len(shown) - 1, 0)
            hit = np.flatnonzero(shown == before)
            self.index.value = int(hit[0]) if hit.size else 0

    def maps(self, test_index: int) -> dict[str, np.ndarray]:
        """The maps shown for one test image, ``(1, S, S)`` each (computed once, then kept)."""
        if test_index not in self._maps:
            x = np.array(self.dataset.images[self.rows[test_index]][None])  # a writable copy
            maps = self.model.score_maps(x)
            shown = self.model.shown_maps(maps)
            shown.update({r.score_name: r.refine_maps(maps) for r in self.refiners})
            self._maps[test_index] = shown
            self.computed += 1
        return self._maps[test_index]

    def _state(self) -> dict[str, Any]:
        shown = self.shown
        i = int(shown[self.index.value])
        label = int(self.labels[i])
        scores = {}
        if self.scores is not None:
            row = self.scores.iloc[i]
            scores = {
                n: float(row[n]) for n in self.model.score_names if n in row and pd.notna(row[n])
            }
        masks = self.dataset.masks
        state = {
            "test_index": i,
            "position": int(self.index.value),
            "n_shown": len(shown),
            "filter": self.filter.value,
            "id": self.ids[i],
            "label": label,
            "label_name": "abnormal" if label else "normal",
            "scores": scores,
            "has_mask": bool(masks is not None and masks[self.rows[i]].any()),
            "overlay": bool(self.overlay.value),
            "n_boxes": len(self._boxes(i)),
            "maps": list(self.maps(i)),
        }
        text = " · ".join(f"{SCORE_TITLES.get(n, n)} {v:.4g}" for n, v in scores.items())
        self.info.value = (
            f"<b>{state['id']}</b> ({state['label_name']}), image "
            f"{state['position'] + 1} of {len(shown)}"
            + (f"<br>image scores: {text}" if text else "")
        )
        return state

    def _boxes(self, test_index: int) -> list:
        """The boxes of a test image where the dataset has no masks (RSNA, VinBigData)."""
        if self.dataset.masks is not None:
            return []
        return self.dataset.boxes(int(self.rows[test_index]))

    def _build(self) -> Figure:
        i = self.current["test_index"]
        row = self.rows[i]
        masks = self.dataset.masks if self.overlay.value else None
        return plots.plot_score_maps(
            np.asarray(self.dataset.images[row])[None],
            self.maps(i),
            labels=self.labels[i : i + 1],
            masks=np.asarray(masks[row])[None] if masks is not None else None,
            ids=[self.ids[i]],
            boxes=[self._boxes(i)] if self.overlay.value else None,
        )


# -- 3. the anomaly-rate ablation -----------------------------------------------------------------
class ARSlider(_View):
    """AUC against the anomaly rate (AR) of Du for one backbone, with the histograms at one AR.

    ``runs``: evaluated runs of an AR ablation (several ARs, optionally several seeds);
    f-AnoGAN runs (no AR) are left out. ``backbone`` picks one when the runs hold several.
    The curve shows the mean AUC over seeds at each AR (band: ± one standard deviation, with
    two seeds or more) of ``inter``, ``intra`` and the baseline ``rec``; the control ``ar`` (a
    selection slider) marks one AR, whose histograms (of the run with the smallest seed at
    that AR) are drawn below. ``table`` is :func:`ddadlib.runs.grid.load_results` of the
    runs (rows of the curve's scores), ``curve`` its mean, sd and count per score and AR;
    ``current`` holds the AR, the run shown, its AUCs and the means and sds at that AR.
    """

    CURVE_SCORES = ("inter", "intra", "rec")

    def __init__(
        self,
        runs: str | Path | Iterable[str | Path],
        backbone: str | None = None,
        ar: float | None = None,
        bins: int = 30,
    ) -> None:

        super().__init__()
        loaded = [r for r in _read_runs(runs) if r.ar is not None]
        if not loaded:
            raise ValueError(
                "no run with an AR among the runs (f-AnoGAN trains on Dn only); "
                "give the runs of an AR ablation"
            )
        backbones = _backbone_order(r.backbone for r in loaded)
        if backbone is None:
            if len(backbones) > 1:
                raise ValueError(
                    f"the runs hold several backbones ({', '.join(backbones)}); "
                    "choose one with backbone="
                )
            backbone = backbones[0]
        elif backbone not in backbones:
            raise ValueError(
                f"no run of backbone {backbone!r}; the runs hold {', '.join(backbones)}"
            )
        self.backbone_name = backbone
        self.runs = [r for r in loaded if r.backbone == backbone]
        self.bins = int(bins)
        results = load_results([r.path for r in self.runs])
        self.table = results[results["score"].isin(self.CURVE_SCORES)].reset_index(drop=True)
        self.curve = summarise(self.table, by=("score", "ar")).rename(
            columns={"std": "sd", "count": "n"}
        )
        ars = sorted({r.ar for r in self.runs})
        if ar is None:
            ar = TABLE_AR if TABLE_AR in ars else ars[0]
        if ar not in ars:
            have = ", ".join(f"{a:g}" for a in ars)
            raise ValueError(f"AR {ar} was not run; the runs have {have}")
        self.ar = widgets.SelectionSlider(
            options=[(f"{a:g}", a) for a in ars],
            value=ar,
            description="AR",
            continuous_update=False,
        )
        self._watch(self.ar)
        self.children = (self.ar, self.output)
        self._render()

    @property
    def run(self) -> _Run:
        """The run whose histograms are shown: the smallest seed at the chosen AR."""
        return min((r for r in self.runs if r.ar == self.ar.value), key=lambda r: r.seed)

    def _state(self) -> dict[str, Any]:
        run = self.run
        at = self.curve[self.curve["ar"] == self.ar.value].set_index("score")
        return {
            "backbone": self.backbone_name,
            "ar": float(self.ar.value),
            "seed": run.seed,
            "run": str(run.path),
            "scores": [n for n in self.CURVE_SCORES if n in run.names],
            "auc": {n: float(run.metrics[n]["auc"]) for n in self.CURVE_SCORES if n in run.names},
            "mean_auc": at["mean"].to_dict(),
            "sd_auc": at["sd"].to_dict(),
            "n_seeds": int(at["n"].max()),
        }

    def _build(self) -> Figure:
        run, chosen = self.run, float(self.ar.value)
        names = [n for n in self.CURVE_SCORES if n in run.names]
        title = (
            f"{BACKBONE_TITLES.get(self.backbone_name, self.backbone_name)}: AR ablation; "
            f"below, the histograms at AR {chosen:g} (seed {run.seed})"
        )
        fig = plots.plot_score_histograms(
            {n: run.values(n) for n in names}, run.labels, run.metrics, bins=self.bins, title=title
        )
        # the AUC-against-AR curve goes above the histogram panels, in the same figure
        hist_axes = list(fig.axes)
        width, height = fig.get_size_inches()
        fig.set_size_inches(max(width, 7.0), height + 3.2)
        grid = fig.add_gridspec(2, len(hist_axes), height_ratios=[3.2, height])
        for col, ax in enumerate(hist_axes):
            ax.set_subplotspec(grid[1, col])
        ax = fig.add_subplot(grid[0, :])
        plots.draw_ar_curve(ax, self.table, names, marked_ar=chosen)
        ax.set_xlabel(
            f"anomaly rate of the unlabeled set (AR); marked: AR {chosen:g}, shown below",
            fontsize=9,
        )
        ax.set_ylabel("AUC", fontsize=9)
        ax.legend(
            fontsize=8,
            frameon=False,
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncols=len(names),
        )
        ax.tick_params(labelsize=8)
        return fig
