"""Tests of the score figures in ddadlib.plots: histograms (paper Fig. 3), maps (Fig. 1) and the
choice of example images."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402

from ddadlib.plots import (  # noqa: E402
    pick_map_examples,
    plot_score_histograms,
    plot_score_maps,
    save_figure,
)

N = 30
LABELS = np.r_[np.zeros(18, int), np.ones(12, int)]


def _scores(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shift = LABELS * 0.5
    return {
        "rec": rng.normal(5.0, 1.0, (3, N)) + shift,
        "rec_ensemble": rng.normal(5.0, 1.0, N) + shift,
        "intra": rng.gamma(2.0, 0.01, N) + shift * 0.01,
        "inter": rng.gamma(2.0, 0.02, N) + shift * 0.05,
    }


def _hist_axes(fig):
    return [ax for ax in fig.axes if ax.patches]


def _bars(patch, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges and heights of one stepfilled histogram outline."""
    v = patch.get_path().vertices
    return v[0 : 2 * bins + 1 : 2, 0], v[1 : 2 * bins + 1 : 2, 1]


# --- plot_score_histograms -------------------------------------------------------------------


def test_histograms_one_panel_per_score_in_order_with_auc():
    scores = _scores()
    metrics = {
        "rec": {"auc": 0.71234, "auc_std": 0.0213},
        "rec_ensemble": {"auc": 0.674},
        "intra": {"auc": 0.761},
        "inter": {"auc": 0.8275},
    }
    fig = plot_score_histograms(scores, LABELS, metrics, title="demo")
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("Rec (single network)")
    assert "network 1 of 3" in titles[0]
    assert "AUC 0.712 ± 0.021" in titles[0]
    assert titles[1].startswith("Rec (ensemble)") and "AUC 0.674" in titles[1]
    assert titles[2].startswith("Intra-discrepancy") and "AUC 0.761" in titles[2]
    assert titles[3].startswith("Inter-discrepancy") and "AUC 0.828" in titles[3]
    assert "±" not in titles[1]
    for ax in fig.axes:
        assert ax.get_xlabel() == "score (min-max normalised)"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["normal (n=18)", "abnormal (n=12)"]
    assert fig.get_suptitle() == "demo"


def test_histograms_without_metrics_have_no_auc_and_unknown_names_as_given():
    fig = plot_score_histograms({"my_score": np.arange(N, dtype=float)}, LABELS)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_title() == "my_score"
    fig = plot_score_histograms(
        {"inter": np.arange(N, dtype=float)}, LABELS, metrics={"intra": {"auc": 0.5}}
    )
    assert "AUC" not in fig.axes[0].get_title()


def test_histograms_are_min_max_normalised_over_all_images():
    rng = np.random.default_rng(3)
    values = np.where(LABELS == 1, rng.uniform(200.0, 300.0, N), rng.uniform(100.0, 250.0, N))
    fig = plot_score_histograms({"inter": values}, LABELS, bins=10)
    (ax,) = fig.axes
    assert len(ax.patches) == 2  # normal, then abnormal
    assert ax.get_xlim() == (0.0, 1.0)
    unit = (values - values.min()) / (values.max() - values.min())
    for cls, patch in enumerate(ax.patches):
        edges, heights = _bars(patch, 10)
        np.testing.assert_allclose(edges, np.linspace(0.0, 1.0, 11))
        want, _ = np.histogram(unit[LABELS == cls], bins=edges, density=True)
        np.testing.assert_allclose(heights, want)
        assert np.sum(heights * np.diff(edges)) == pytest.approx(1.0)  # a density
    # the two classes get distinct colours
    assert ax.patches[0].get_edgecolor() != ax.patches[1].get_edgecolor()


def test_histograms_per_member_scores_use_first_row():
    rows = np.stack([np.linspace(0, 1, N) ** 2, np.linspace(0, 1, N)[::-1] ** 3])
    fig = plot_score_histograms({"rec": rows}, LABELS, bins=5)
    first = plot_score_histograms({"rec": rows[0]}, LABELS, bins=5)
    other = plot_score_histograms({"rec": rows[1]}, LABELS, bins=5)
    assert "network 1 of 2" in fig.axes[0].get_title()
    got = [_bars(p, 5)[1] for p in fig.axes[0].patches]
    np.testing.assert_allclose(got, [_bars(p, 5)[1] for p in first.axes[0].patches])
    assert not np.allclose(got, [_bars(p, 5)[1] for p in other.axes[0].patches])


def test_histograms_constant_score_does_not_crash(tmp_path):
    fig = plot_score_histograms(
        {"flat": np.full(N, 3.0), "inter": _scores()["inter"]}, LABELS, bins=10
    )
    assert len(fig.axes) == 2
    for patch in fig.axes[0].patches:
        _, heights = _bars(patch, 10)
        np.testing.assert_allclose(heights, [10.0] + [0.0] * 9)  # all in the first bin
    save_figure(fig, tmp_path / "flat.png")
    assert (tmp_path / "flat.png").stat().st_size > 0


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_histograms_one_to_six_panels(k):
    rng = np.random.default_rng(k)
    scores = {f"s{i}": rng.normal(size=N) for i in range(k)}
    fig = plot_score_histograms(scores, LABELS)
    assert len(fig.axes) == k
    nrows = len({round(ax.get_position().y0, 3) for ax in fig.axes})
    assert nrows == (1 if k <= 4 else 2)


@pytest.mark.parametrize(
    "scores, labels",
    [
        ({}, LABELS),
        ({"inter": np.zeros(N - 1)}, LABELS),
        ({"inter": np.zeros((2, 2, N))}, LABELS),
        ({"inter": np.r_[np.nan, np.zeros(N - 1)]}, LABELS),
        ({"inter": np.zeros(N)}, LABELS * 2),
    ],
)
def test_histograms_reject_bad_input(scores, labels):
    with pytest.raises(ValueError):
        plot_score_histograms(scores, labels)


# --- plot_score_maps -------------------------------------------------------------------------

S = 16


def _maps_data(n: int = 6, float_images: bool = True):
    rng = np.random.default_rng(0)
    labels = np.array([1, 0] * (n // 2))
    yy, xx = np.mgrid[0:S, 0:S]
    blob = (yy - 8) ** 2 + (xx - 8) ** 2 < 9
    masks = np.array([blob if lab else np.zeros_like(blob) for lab in labels])
    imgs = rng.uniform(-1, 1, (n, 1, S, S)).astype(np.float32)
    if not float_images:
        imgs = ((imgs[:, 0] + 1) * 127.5).astype(np.uint8)
    maps = {
        "mu_A": rng.uniform(-1, 1, (n, 1, S, S)),
        "mu_B": rng.uniform(-1, 1, (n, S, S)),
        "intra": rng.uniform(0, 0.1, (n, S, S)) + 0.3 * masks,
        "inter": rng.uniform(0, 0.1, (n, 1, S, S)) + 0.5 * masks[:, None],
    }
    return imgs, maps, labels, masks


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_maps_grid_has_rows_times_columns_image_axes():
    imgs, maps, labels, masks = _maps_data()
    fig = plot_score_maps(imgs, maps, labels=labels, masks=masks, ids=[f"im{i}" for i in range(6)])
    axes = _image_axes(fig)
    assert len(axes) == 4 * 5  # max_images=4 rows, input + 4 maps
    titles = [ax.get_title() for ax in axes if ax.get_title()]
    assert titles[0] == "input"
    assert "module A" in titles[1] and "mu_A" in titles[1]
    assert "module B" in titles[2] and "mu_B" in titles[2]
    assert titles[3:] == ["intra", "inter"]
    ylabels = [ax.get_ylabel() for ax in axes if ax.get_ylabel()]
    assert ylabels == ["im0\nabnormal", "im1\nnormal", "im2\nabnormal", "im3\nnormal"]
    # reconstructions in gray, discrepancies with a colormap and one colorbar each
    cmaps = [ax.images[0].get_cmap().name for ax in axes[:5]]
    assert cmaps == ["gray", "gray", "gray", "inferno", "inferno"]
    assert len(fig.axes) - len(axes) == 2


def test_maps_share_one_scale_per_column():
    imgs, maps, labels, masks = _maps_data()
    fig = plot_score_maps(imgs, {"inter": maps["inter"]}, max_images=4)
    axes = _image_axes(fig)
    inter_axes = [ax for i, ax in enumerate(axes) if i % 2 == 1]
    clims = {ax.images[0].get_clim() for ax in inter_axes}
    assert len(clims) == 1
    vmin, vmax = clims.pop()
    assert vmin == 0.0 and 0.0 < vmax <= maps["inter"][:4].max()


@pytest.mark.parametrize("max_images", [1, 3, 10])
def test_maps_rows_limited_by_max_images(max_images):
    imgs, maps, _, _ = _maps_data()
    fig = plot_score_maps(imgs, maps, max_images=max_images)
    assert len(_image_axes(fig)) == min(6, max_images) * 5
    ylabels = [ax.get_ylabel() for ax in _image_axes(fig) if ax.get_ylabel()]
    assert ylabels == [f"#{i}" for i in range(min(6, max_images))]


def test_maps_contour_only_with_masks_and_only_on_abnormal_inputs():
    imgs, maps, labels, masks = _maps_data()

    def contours(ax):
        return [a for a in ax.get_children() if isinstance(a, ContourSet)]

    with_masks = _image_axes(plot_score_maps(imgs, maps, labels, masks))
    without = _image_axes(plot_score_maps(imgs, maps, labels))
    inputs_with = with_masks[::5]
    assert [bool(contours(ax)) for ax in inputs_with] == [True, False, True, False]
    assert not any(contours(ax) for ax in without)
    assert not any(contours(ax) for i, ax in enumerate(with_masks) if i % 5)


def test_maps_uint8_images_and_display_ranges():
    imgs, maps, labels, _ = _maps_data(float_images=False)
    fig = plot_score_maps(imgs, maps, labels)
    axes = _image_axes(fig)
    assert axes[0].images[0].get_clim() == (0.0, 255.0)
    assert axes[1].images[0].get_clim() == (-1.0, 1.0)  # float reconstructions, own range
    imgs_f, *_ = _maps_data()
    axes = _image_axes(plot_score_maps(imgs_f, maps))
    assert axes[0].images[0].get_clim() == (-1.0, 1.0)
    assert axes[1].images[0].get_clim() == (-1.0, 1.0)


def test_maps_constant_map_and_save(tmp_path):
    imgs, maps, labels, masks = _maps_data()
    maps["inter"] = np.zeros_like(maps["inter"])
    fig = plot_score_maps(imgs, maps, labels, masks)
    save_figure(fig, tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 0


@pytest.mark.parametrize("what", ["map_n", "labels", "masks", "ids", "max_images", "images"])
def test_maps_reject_bad_input(what):
    imgs, maps, labels, masks = _maps_data()
    kwargs = dict(images=imgs, maps=maps, labels=labels, masks=masks, ids=None, max_images=4)
    if what == "map_n":
        kwargs["maps"] = {"inter": maps["inter"][:3]}
    elif what == "labels":
        kwargs["labels"] = labels[:3]
    elif what == "masks":
        kwargs["masks"] = masks[:, :8]
    elif what == "ids":
        kwargs["ids"] = ["a"]
    elif what == "max_images":
        kwargs["max_images"] = 0
    else:
        kwargs["images"] = imgs[:, :, :, 0]
    with pytest.raises(ValueError):
        plot_score_maps(**kwargs)


# --- pick_map_examples -----------------------------------------------------------------------


def test_pick_returns_requested_counts_with_right_labels():
    labels = np.r_[np.zeros(50, int), np.ones(20, int)]
    idx = pick_map_examples(labels, n_abnormal=3, n_normal=2, seed=1)
    assert idx.shape == (5,)
    assert labels[idx].tolist() == [1, 1, 1, 0, 0]
    assert len(set(idx.tolist())) == 5


def test_pick_is_deterministic_per_seed_and_varies_with_seed():
    labels = np.r_[np.zeros(50, int), np.ones(50, int)]
    a = pick_map_examples(labels, seed=3)
    np.testing.assert_array_equal(a, pick_map_examples(labels, seed=3))
    draws = {tuple(pick_map_examples(labels, seed=s)) for s in range(10)}
    assert len(draws) > 1


def test_pick_ignores_scores():
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    scores = np.random.default_rng(0).normal(size=80)
    a = pick_map_examples(labels, scores, seed=7)
    b = pick_map_examples(labels, -scores, seed=7)
    c = pick_map_examples(labels, None, seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError):
        pick_map_examples(labels, scores[:10])


def test_pick_small_classes_give_what_they_have():
    labels = np.array([0, 0, 0, 1])
    idx = pick_map_examples(labels, n_abnormal=3, n_normal=1)
    assert labels[idx].tolist() == [1, 0]
    assert pick_map_examples(labels, n_abnormal=0, n_normal=0).size == 0


def test_every_ddad_score_has_a_readable_panel_title():
    pytest.importorskip("torch")
    from ddadlib.paper import SCORE_NAMES as SCORES

    fig = plot_score_histograms({name: np.arange(N, dtype=float) for name in SCORES}, LABELS)
    titles = [ax.get_title() for ax in fig.axes]
    assert all(t.split("\n")[0] != name for t, name in zip(titles, SCORES))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_maps_accept_score_maps_per_member_rec(n):
    """``DDAD.score_maps(x)["rec"]`` is (K, N, S, S): the first network is drawn, also when N is
    1 or equals K."""
    imgs, maps, labels, _ = _maps_data()
    rec = np.stack([np.full((n, S, S), float(k + 1)) for k in range(3)])  # (K=3, N, S, S)
    fig = plot_score_maps(imgs[:n], {"rec": rec}, max_images=n)
    axes = _image_axes(fig)
    assert len(axes) == 2 * n and "network 1 of 3" in axes[1].get_title()
    assert all(np.all(ax.images[0].get_array() == 1.0) for ax in axes[1::2])
