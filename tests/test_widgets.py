"""The notebook widgets, driven without a browser: set controls' values, read what is shown."""

import base64
import json
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from ddadlib.course.widgets import ARSlider, HistogramExplorer, ImageBrowser, _png  # noqa: E402
from ddadlib.errors import DataError  # noqa: E402
from ddadlib.runs.config import run_config
from ddadlib.runs.evaluate import evaluate_run
from ddadlib.runs.train import train_run  # noqa: E402

quiet = dict(log=lambda s: None)


@pytest.fixture(scope="module")
def runs(tiny_runs, tiny_synthetic, tmp_path_factory):
    """Evaluated runs: AE at AR 0.5 and 1.0 with seeds 1 (copies of ``tiny_runs``) and 2, and
    f-AnoGAN; name -> folder."""
    parent = tmp_path_factory.mktemp("widget_runs")
    src, _ = tiny_runs
    out = {}
    for ar in (0.5, 1.0):
        out[f"ae-{ar}-s1"] = shutil.copytree(src / f"ar{ar}", parent / f"ae-{ar}-s1")
    for ar in (0.5, 1.0):
        cfg = run_config(
            tiny_synthetic, k=2, epochs=2, ar=ar, n_unlabeled=20, seed=2, device="cpu", **quiet
        )
        train_run(parent / f"ae-{ar}-s2", cfg, progress=False, **quiet)
        out[f"ae-{ar}-s2"] = parent / f"ae-{ar}-s2"
    cfg = run_config(tiny_synthetic, backbone="fanogan", epochs=1, seed=0, device="cpu", **quiet)
    train_run(parent / "fanogan", cfg, progress=False, **quiet)
    out["fanogan"] = parent / "fanogan"
    for run in out.values():
        evaluate_run(run, n_boot=20, figures=False, **quiet)
    return out


def metrics_of(run):
    return json.loads((run / "metrics.json").read_text())


def shown_png(view):
    """The image the widget's Output holds (PNG bytes)."""
    (item,) = view.output.outputs
    return base64.b64decode(item["data"]["image/png"])


def texts(fig):
    found = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        found += [ax.get_title(), ax.get_xlabel()] + [t.get_text() for t in ax.texts]
    if fig._suptitle is not None:
        found.append(fig._suptitle.get_text())
    return "\n".join(found)


# -- HistogramExplorer ---------------------------------------------------------------------------
def test_explorer_shows_each_runs_auc_from_metrics_json(runs):
    view = HistogramExplorer(list(runs.values()))
    assert [v for _, v in view.backbone.options] == ["ae", "fanogan"]
    for name, run in runs.items():
        cfg = json.loads((run / "config.json").read_text())
        view.backbone.value = cfg["backbone"]
        view.ar.value = cfg["ar"] if cfg["ar"] is not None else "none"
        view.seed.value = cfg["seed"]
        for score in [v for _, v in view.score.options]:
            view.score.value = score
            cur = view.current
            assert cur["run"] == str(run), name
            assert cur["auc"] == metrics_of(run)[score]["auc"]
            assert (cur["n_normal"], cur["n_abnormal"]) == (12, 12)
            assert f"AUC {cur['auc']:.3f}" in texts(view.figure)


def test_explorer_options_follow_the_backbone(runs):
    view = HistogramExplorer(
        [runs["fanogan"], runs["ae-0.5-s1"], runs["ae-1.0-s1"], runs["ae-1.0-s2"]], score="intra"
    )
    assert view.current["backbone"] == "ae" and view.current["score"] == "intra"
    assert [v for _, v in view.ar.options] == [0.5, 1.0] and not view.ar.disabled
    assert list(view.seed.options) == [1]  # AR 0.5 has seed 1 only
    view.ar.value = 1.0
    assert list(view.seed.options) == [1, 2]
    view.backbone.value = "fanogan"
    assert [v for _, v in view.ar.options] == ["none"] and view.ar.disabled
    assert [v for _, v in view.score.options] == ["rec"]
    assert view.current["score"] == "rec" and view.current["ar"] is None
    view.backbone.value = "ae"
    assert {v for _, v in view.score.options} == {"rec", "rec_ensemble", "intra", "inter"}
    opened = HistogramExplorer([runs["ae-0.5-s1"], runs["ae-1.0-s1"]], ar=1.0)
    assert opened.current["ar"] == 1.0  # opens on the AR asked for where it was run
    assert HistogramExplorer([runs["ae-0.5-s1"], runs["ae-1.0-s1"]]).current["ar"] == 0.5


def test_explorer_redraws_once_per_change(runs):
    view = HistogramExplorer([runs["ae-0.5-s1"], runs["ae-1.0-s1"], runs["fanogan"]])
    assert view.renders == 1 and shown_png(view) == view.png
    before = view.png
    view.bins.value = 10
    assert view.renders == 2 and view.current["bins"] == 10 and view.png != before
    bars = [p for ax in view.figure.axes for p in ax.patches]
    assert len(bars) == 2  # normal and abnormal, one step outline each
    view.backbone.value = "fanogan"  # changes AR, seed and score options too: one redraw
    assert view.renders == 3 and shown_png(view) == view.png
    assert "f-AnoGAN" in texts(view.figure) and "network 1 of" not in texts(view.figure)
    view.backbone.value = "ae"
    view.ar.value = 1.0
    assert view.current["ar"] == 1.0 and "AR 1, seed 1" in texts(view.figure)


def test_explorer_snapshot_is_the_current_view(runs):
    view = HistogramExplorer([runs["ae-0.5-s1"], runs["ae-0.5-s2"]])
    view.seed.value = 2
    view.score.value = "rec"
    snap = view.snapshot()
    assert isinstance(snap, Figure) and snap is not view.figure
    assert _png(snap) == view.png
    assert "network 1 of 2" in texts(snap)
    assert f"± {metrics_of(runs['ae-0.5-s2'])['rec']['auc_std']:.3f}" in texts(snap)


def test_explorer_errors_name_the_problem(runs, tmp_path):
    with pytest.raises(ValueError, match="no runs given"):
        HistogramExplorer([])
    unevaluated = tmp_path / "not-evaluated"
    shutil.copytree(runs["ae-0.5-s1"], unevaluated)
    (unevaluated / "scores.csv").unlink()
    with pytest.raises(DataError, match=r"not-evaluated.*no scores\.csv.*ddad evaluate"):
        HistogramExplorer([runs["ae-0.5-s1"], unevaluated])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: not a ddadlib run folder"):
        HistogramExplorer([tmp_path / "empty"])
    with pytest.raises(DataError, match="no such run folder"):
        HistogramExplorer([tmp_path / "missing"])
    twin = shutil.copytree(runs["ae-0.5-s1"], tmp_path / "twin")
    with pytest.raises(ValueError, match="twin.*one run per backbone, AR and seed"):
        HistogramExplorer([runs["ae-0.5-s1"], twin])


# -- ImageBrowser ---------------------------------------------------------------------------------
def test_browser_steps_through_test_images_computing_maps_lazily(runs):
    run = runs["ae-0.5-s1"]
    scores = pd.read_csv(run / "scores.csv", dtype={"id": str})
    view = ImageBrowser(run)
    assert view.computed == 1 and len(view.ids) == 24
    assert view.current["maps"] == ["mu_A", "mu_B", "intra", "inter"]
    assert view.current["id"] == scores["id"][0] and view.current["label"] == 0
    assert view.current["scores"]["inter"] == pytest.approx(scores["inter"][0])
    first = view.png
    view.next_button.click()
    assert view.current["position"] == 1 and view.current["id"] == scores["id"][1]
    assert view.computed == 2 and view.renders == 2 and view.png != first
    view.prev_button.click()
    view.prev_button.click()  # stays at the first image
    assert view.current["position"] == 0 and view.computed == 2  # maps kept, not recomputed
    assert view.png == first and shown_png(view) == first
    view.index.value = 23
    view.next_button.click()
    assert view.current["position"] == 23 and view.current["label"] == 1
    assert scores["id"][23] in view.info.value


def test_browser_filter_and_masks(runs):
    view = ImageBrowser(runs["ae-1.0-s1"], filter="abnormal")
    assert view.index.max == 11 and view.current["label_name"] == "abnormal"
    assert (view.labels[view.shown] == 1).all()
    view.index.value = 11
    assert view.current["label"] == 1 and view.current["test_index"] == 23
    view.index.value = 3
    with_mask = view.current["has_mask"]
    assert with_mask  # synthetic abnormal images have pixel masks
    assert view.figure.axes[0].collections  # the mask's outline on the input
    keep = view.current["id"]
    view.filter.value = "all"  # the same image, now among all 24
    assert view.current["id"] == keep and view.current["position"] == 15
    view.filter.value = "normal"
    assert view.current["position"] == 0 and view.current["label"] == 0
    assert not view.current["has_mask"] and not view.figure.axes[0].collections
    with pytest.raises(ValueError, match="filter must be"):
        ImageBrowser(runs["ae-1.0-s1"], filter="sick")


def test_browser_overlays_masks_or_boxes_as_asked(runs, tiny_synthetic, tmp_path):
    from matplotlib.patches import Rectangle

    view = ImageBrowser(runs["ae-1.0-s1"], filter="abnormal", index=3)
    assert view.current["overlay"] and view.figure.axes[0].collections
    view.overlay.value = False  # the checkbox takes the mask off
    assert not view.current["overlay"] and not view.figure.axes[0].collections
    # the same images with boxes only (as RSNA): the boxes are drawn, unless unticked
    boxed = shutil.copytree(tiny_synthetic, tmp_path / "boxed")
    (boxed / "masks.npy").unlink()
    view = ImageBrowser(runs["ae-1.0-s1"], data=boxed, filter="abnormal", index=3)
    n = view.current["n_boxes"]
    assert n >= 1 and not view.figure.axes[0].collections
    rects = [p for p in view.figure.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rects) == n
    view.overlay.value = False
    assert not [p for p in view.figure.axes[0].patches if isinstance(p, Rectangle)]
    assert not ImageBrowser(runs["ae-1.0-s1"], data=boxed, overlay=False).current["overlay"]


def test_views_show_the_refined_scores_and_maps(runs, tmp_path):
    from ddadlib.runs.refine import refine_run

    run = shutil.copytree(runs["ae-0.5-s2"], tmp_path / "refined")
    refine_run(run, "dual", epochs=1, device="cpu", progress=False, **quiet)
    evaluate_run(run, n_boot=10, figures=False, **quiet)
    view = HistogramExplorer([run], score="r_dual")
    assert view.current["score"] == "r_dual"
    assert view.current["auc"] == metrics_of(run)["r_dual"]["auc"]
    browser = ImageBrowser(run)
    assert browser.current["maps"] == ["mu_A", "mu_B", "intra", "inter", "r_dual"]


def test_browser_snapshot_and_fanogan(runs):
    view = ImageBrowser(runs["fanogan"], index=5)
    assert view.current["maps"] == ["recon", "rec"] and view.current["position"] == 5
    assert set(view.current["scores"]) == {"rec"}
    snap = view.snapshot()
    assert isinstance(snap, Figure) and _png(snap) == view.png
    assert len(snap.axes) == 3 + 1  # input, reconstruction, rec map, rec's colorbar
    assert view.computed == 1


def test_browser_refuses_an_unfinished_run(runs, tmp_path):
    unfinished = shutil.copytree(runs["ae-0.5-s1"], tmp_path / "unfinished")
    (unfinished / "model.pt").unlink()
    with pytest.raises(DataError, match="unfinished: training has not finished"):
        ImageBrowser(unfinished)


# -- ARSlider -------------------------------------------------------------------------------------
def test_ar_slider_curve_is_mean_and_sd_over_seeds(runs):
    view = ARSlider(list(runs.values()))  # f-AnoGAN (no AR) is left out
    assert view.ar.options == (("0.5", 0.5), ("1", 1.0)) and view.ar.value == 0.5
    cur = view.current
    assert cur["backbone"] == "ae" and cur["seed"] == 1 and cur["n_seeds"] == 2
    for score in ("inter", "intra", "rec"):
        aucs = [metrics_of(runs[f"ae-0.5-s{s}"])[score]["auc"] for s in (1, 2)]
        assert cur["mean_auc"][score] == pytest.approx(np.mean(aucs))
        assert cur["sd_auc"][score] == pytest.approx(np.std(aucs, ddof=1))
        assert cur["auc"][score] == metrics_of(runs["ae-0.5-s1"])[score]["auc"]
    curve_ax = view.figure.axes[-1]
    inter = curve_ax.lines[0]
    assert list(inter.get_xdata()) == [0.5, 1.0]
    means = view.curve.query("score == 'inter'").sort_values("ar")["mean"]
    assert np.allclose(inter.get_ydata(), means)
    # module B does not depend on AR: intra and rec are flat
    flat = view.curve.query("score != 'inter'").groupby("score")["mean"].nunique()
    assert (flat == 1).all()


def test_ar_slider_moves_the_marker_and_the_histograms(runs):
    view = ARSlider([runs["ae-0.5-s1"], runs["ae-1.0-s1"]])
    first = view.png
    assert "AR 0.5 (seed 1)" in texts(view.figure)
    view.ar.value = 1.0
    assert view.renders == 2 and view.png != first and shown_png(view) == view.png
    assert view.current["run"] == str(runs["ae-1.0-s1"]) and view.current["n_seeds"] == 1
    assert "AR 1 (seed 1)" in texts(view.figure)
    assert f"AUC {metrics_of(runs['ae-1.0-s1'])['inter']['auc']:.3f}" in texts(view.figure)
    marker = view.figure.axes[-1].lines[-1]  # the dashed line at the chosen AR
    assert list(marker.get_xdata()) == [1.0, 1.0]
    snap = view.snapshot()
    assert isinstance(snap, Figure) and _png(snap) == view.png


def test_ar_slider_errors(runs, tmp_path):
    with pytest.raises(ValueError, match="no run with an AR"):
        ARSlider([runs["fanogan"]])
    with pytest.raises(ValueError, match="no runs given"):
        ARSlider([])
    other = shutil.copytree(runs["ae-0.5-s1"], tmp_path / "memae")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(cfg, backbone="memae")))
    with pytest.raises(ValueError, match=r"several backbones \(ae, memae\).*backbone="):
        ARSlider([runs["ae-0.5-s1"], other])
    view = ARSlider([runs["ae-0.5-s1"], other], backbone="memae")
    assert view.current["run"] == str(other)
    with pytest.raises(ValueError, match="no run of backbone 'aeu'"):
        ARSlider([runs["ae-0.5-s1"]], backbone="aeu")
    with pytest.raises(ValueError, match="AR 0.7 was not run"):
        ARSlider([runs["ae-0.5-s1"]], ar=0.7)


# -- the course's real X-rays (no masks) ------------------------------------------------------------
def test_views_on_the_bundled_xrays(tmp_path):
    """Class mode's data: real X-rays labelled per image, without masks."""
    from ddadlib.data.prepare import prepare_kermany

    data = prepare_kermany(tmp_path / "kermany", size=32, n_normal=40, n_test=12, **quiet)
    root = tmp_path / "runs"
    cfg = run_config(data, k=2, epochs=1, ar=1.0, n_unlabeled=20, seed=0, device="cpu", **quiet)
    train_run(root / "ae-1.0", cfg, progress=False, **quiet)
    evaluate_run(root / "ae-1.0", n_boot=20, figures=False, **quiet)
    browser = ImageBrowser(root / "ae-1.0", filter="abnormal")
    assert browser.dataset.masks is None and not browser.current["has_mask"]
    assert not browser.figure.axes[0].collections  # no outline drawn
    browser.next_button.click()
    assert browser.current["label"] == 1 and browser.computed == 2
    assert isinstance(browser.snapshot(), Figure)
    explorer = HistogramExplorer([root / "ae-1.0"])
    explorer.score.value = "inter"
    assert explorer.current["auc"] == pytest.approx(metrics_of(root / "ae-1.0")["inter"]["auc"])
    assert isinstance(ARSlider([root / "ae-1.0"]).snapshot(), Figure)
