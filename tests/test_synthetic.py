"""Tests of the synthetic chest X-ray generator (ddadlib.data.synthetic) and of plot_sample_grid."""

from __future__ import annotations

import numpy as np
import pytest

import ddadlib.data.synthetic as synthetic
from ddadlib.data.synthetic import (
    ABNORMALITY_KINDS,
    DEFAULT_SEVERITY,
    SyntheticCXR,
    generate_synthetic,
    generate_synthetic_counts,
)


def _dilate(m: np.ndarray) -> np.ndarray:
    """Grow (n, h, w) bool masks by one pixel (4-neighbourhood)."""
    out = m.copy()
    out[:, 1:, :] |= m[:, :-1, :]
    out[:, :-1, :] |= m[:, 1:, :]
    out[:, :, 1:] |= m[:, :, :-1]
    out[:, :, :-1] |= m[:, :, 1:]
    return out


def _assert_same(a: SyntheticCXR, b: SyntheticCXR) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.severity, b.severity)
    assert a.kinds == b.kinds


@pytest.fixture(scope="module")
def batch() -> SyntheticCXR:
    return generate_synthetic(24, size=64, abnormal_fraction=0.5, seed=1)


def test_shapes_and_dtypes(batch: SyntheticCXR) -> None:
    assert len(batch) == 24
    assert batch.images.shape == (24, 64, 64) and batch.images.dtype == np.uint8
    assert batch.labels.shape == (24,) and batch.labels.dtype == np.int64
    assert batch.masks.shape == (24, 64, 64) and batch.masks.dtype == np.bool_
    assert batch.severity.shape == (24,) and batch.severity.dtype == np.float64
    assert isinstance(batch.kinds, list) and len(batch.kinds) == 24
    assert set(np.unique(batch.labels)) <= {0, 1}
    # images use the grey range: dark background, bright bone and heart
    assert batch.images.min() < 40 and batch.images.max() > 200


def test_labels_kinds_severity_masks_agree(batch: SyntheticCXR) -> None:
    lo, hi = DEFAULT_SEVERITY
    assert 0 < batch.labels.sum() < 24
    for i in range(24):
        if batch.labels[i] == 0:
            assert batch.kinds[i] == ""
            assert batch.severity[i] == 0.0
            assert not batch.masks[i].any()
        else:
            assert batch.kinds[i] in ABNORMALITY_KINDS
            assert lo <= batch.severity[i] <= hi
            assert batch.masks[i].any()


def test_deterministic() -> None:
    a = generate_synthetic(6, size=48, seed=7)
    b = generate_synthetic(6, size=48, seed=7)
    _assert_same(a, b)
    c = generate_synthetic(6, size=48, seed=8)
    assert not np.array_equal(a.images, c.images)


def test_prefix_property() -> None:
    short = generate_synthetic(5, size=64, seed=3)
    long = generate_synthetic(40, size=64, seed=3)  # more than one rendering chunk
    _assert_same(
        short,
        SyntheticCXR(
            long.images[:5], long.labels[:5], long.masks[:5], long.kinds[:5], long.severity[:5]
        ),
    )


def test_independent_of_chunking_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = generate_synthetic(12, size=32, seed=5)
    monkeypatch.setattr(synthetic, "_PIXELS_PER_CHUNK", 3 * 32 * 32)
    monkeypatch.setattr(synthetic, "_n_threads", lambda: 1)
    _assert_same(ref, generate_synthetic(12, size=32, seed=5))
    monkeypatch.setattr(synthetic, "_n_threads", lambda: 3)
    _assert_same(ref, generate_synthetic(12, size=32, seed=5))


def test_counts_exact_and_prefix_per_class() -> None:
    d = generate_synthetic_counts(4, 7, size=48, seed=2)
    assert list(d.labels) == [0] * 4 + [1] * 7
    assert d.kinds[:4] == [""] * 4
    assert d.kinds[4:] == [ABNORMALITY_KINDS[j % len(ABNORMALITY_KINDS)] for j in range(7)]
    assert not d.masks[:4].any()
    assert all(d.masks[i].any() for i in range(4, 11))
    small = generate_synthetic_counts(2, 3, size=48, seed=2)
    np.testing.assert_array_equal(small.images[:2], d.images[:2])
    np.testing.assert_array_equal(small.images[2:], d.images[4:7])
    np.testing.assert_array_equal(small.masks[2:], d.masks[4:7])
    # the two classes are different patients
    assert not np.array_equal(d.images[0], d.images[4])


def test_labels_argument_fixes_labels() -> None:
    free = generate_synthetic(10, size=48, seed=4)
    forced_labels = np.array([1, 0] * 5)
    forced = generate_synthetic(10, size=48, seed=4, labels=forced_labels)
    np.testing.assert_array_equal(forced.labels, forced_labels)
    assert all((k != "") == bool(lab) for k, lab in zip(forced.kinds, forced_labels, strict=True))
    same = free.labels == forced_labels
    assert same.any() and (~same).any()
    # where the label did not change, nothing changed
    np.testing.assert_array_equal(forced.images[same], free.images[same])
    # a normal image forced abnormal is the same patient with an abnormality
    i = int(np.nonzero(~same & (forced_labels == 1))[0][0])
    diff = forced.images[i].astype(int) - free.images[i].astype(int)
    assert np.abs(diff).mean() > 0
    assert (diff == 0).mean() > 0.5


def test_abnormal_fraction() -> None:
    d = generate_synthetic(400, size=32, abnormal_fraction=0.3, seed=0)
    assert 0.22 < d.labels.mean() < 0.38
    assert generate_synthetic(20, size=32, abnormal_fraction=0.0).labels.sum() == 0
    assert generate_synthetic(20, size=32, abnormal_fraction=1.0).labels.sum() == 20


def test_all_kinds_have_masks_inside_the_lungs_and_image() -> None:
    n = 3 * len(ABNORMALITY_KINDS)
    d = generate_synthetic_counts(0, n, size=64, seed=11, severity=(0.0, 1.0))
    assert set(d.kinds) == set(ABNORMALITY_KINDS)
    assert all(d.masks[i].any() for i in range(n))
    # never at the border of the image
    assert not d.masks[:, 0, :].any() and not d.masks[:, -1, :].any()
    assert not d.masks[:, :, 0].any() and not d.masks[:, :, -1].any()
    # every kind lies in (or at the border of) the lung fields of the same anatomy
    for kind in ABNORMALITY_KINDS:
        idx = list(range(6))
        ab, _ = synthetic._render_cases(11, idx, 64, kind, np.linspace(0.0, 1.0, 6))
        lungs = synthetic._lung_fields(11, idx, 64)
        assert all(ab.masks[i].any() for i in idx), kind
        outside = ab.masks & ~_dilate(lungs)
        assert outside.sum() == 0, kind


def test_kinds_subset_and_severity_range() -> None:
    d = generate_synthetic(
        30,
        size=32,
        abnormal_fraction=1.0,
        seed=2,
        kinds=["nodule", "effusion"],
        severity=(0.5, 0.5),
    )
    assert set(d.kinds) == {"nodule", "effusion"}
    np.testing.assert_allclose(d.severity, 0.5)


@pytest.mark.parametrize("kind", ABNORMALITY_KINDS)
def test_severity_monotonic(kind: str) -> None:
    """The change an abnormality makes to the image grows with its severity, and is there at 0."""
    idx = list(range(6))
    effects = []
    for sev in (0.0, 0.35, 0.7, 1.0):
        ab, normal = synthetic._render_cases(0, idx, 64, kind, sev)
        assert ab.kinds == [kind] * 6 and normal.kinds == [""] * 6
        effects.append(np.abs(ab.images.astype(float) - normal.images.astype(float)).mean())
    assert effects[0] > 0
    assert all(a < b for a, b in zip(effects[:-1], effects[1:], strict=True)), effects
    # mask area grows too (on average)
    small, _ = synthetic._render_cases(0, idx, 64, kind, 0.1)
    big, _ = synthetic._render_cases(0, idx, 64, kind, 1.0)
    assert big.masks.sum() > small.masks.sum()


def test_render_cases_normal_matches_generator() -> None:
    free = generate_synthetic(8, size=48, seed=9)
    _, normal = synthetic._render_cases(9, range(8), 48, "nodule", 0.5)
    norm_idx = np.nonzero(free.labels == 0)[0]
    np.testing.assert_array_equal(normal.images[norm_idx], free.images[norm_idx])


@pytest.mark.parametrize("size", [32, 64, 100, 128, 256])
def test_sizes(size: int) -> None:
    d = generate_synthetic(2, size=size, abnormal_fraction=1.0, seed=1)
    assert d.images.shape == (2, size, size) and d.masks.shape == (2, size, size)
    assert d.masks[0].any() and d.masks[1].any()


def test_same_patient_at_other_sizes() -> None:
    """Image i at two sizes is the same anatomy: the large one downsampled is near the small."""
    a = generate_synthetic(4, size=64, seed=6, abnormal_fraction=0.0).images.astype(float)
    b = generate_synthetic(4, size=128, seed=6, abnormal_fraction=0.0).images.astype(float)
    b_small = b.reshape(4, 64, 2, 64, 2).mean(axis=(2, 4))
    other = np.roll(a, 1, axis=0)
    assert np.abs(a - b_small).mean() < 0.5 * np.abs(other - b_small).mean()


def test_normal_images_vary() -> None:
    d = generate_synthetic_counts(8, 0, size=64, seed=0)
    imgs = d.images.astype(float)
    for i in range(8):
        for j in range(i + 1, 8):
            assert np.abs(imgs[i] - imgs[j]).mean() > 4.0
    # the anatomy moves: the mean image is blurrier than any single one
    assert imgs.std(axis=0).mean() > 10.0


def test_chest_like_layout() -> None:
    """Coarse anatomy: black-ish background at the top corners, dark lungs on both sides of a
    bright mediastinum, bright abdomen below."""
    imgs = generate_synthetic_counts(16, 0, size=64, seed=1).images.astype(float)
    m = imgs.mean(axis=0)
    corners = np.r_[m[:6, :6].ravel(), m[:6, -6:].ravel()].mean()
    right_lung = m[20:36, 12:22].mean()
    left_lung = m[20:36, 42:52].mean()
    mediastinum = m[16:30, 29:35].mean()
    abdomen = m[56:62, 20:44].mean()
    assert corners < 50
    assert right_lung < mediastinum - 40 and left_lung < mediastinum - 40
    assert abdomen > right_lung + 40


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": -1}, "n must be"),
        ({"n": 2.5}, "n must be"),
        ({"n": 2, "size": 16}, "size must be"),
        ({"n": 2, "size": 64.0}, "size must be"),
        ({"n": 2, "abnormal_fraction": 1.5}, "abnormal_fraction"),
        ({"n": 2, "abnormal_fraction": -0.1}, "abnormal_fraction"),
        ({"n": 2, "kinds": ["tumour"]}, "unknown abnormality kind"),
        ({"n": 2, "kinds": []}, "kinds must name"),
        ({"n": 2, "severity": (0.6, 0.2)}, "severity"),
        ({"n": 2, "severity": (-0.1, 0.5)}, "severity"),
        ({"n": 2, "severity": 0.5}, "severity"),
        ({"n": 2, "seed": -3}, "seed"),
        ({"n": 2, "labels": [0, 1, 1]}, "labels"),
        ({"n": 2, "labels": [0, 2]}, "labels"),
    ],
)
def test_argument_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_synthetic(**kwargs)


def test_counts_validation() -> None:
    with pytest.raises(ValueError, match="n_normal"):
        generate_synthetic_counts(-1, 2)
    with pytest.raises(ValueError, match="n_abnormal"):
        generate_synthetic_counts(1, -2)
    with pytest.raises(ValueError, match="unknown abnormality kind"):
        generate_synthetic_counts(1, 1, kinds=("nodule", "bogus"))


def test_zero_images() -> None:
    d = generate_synthetic(0, size=32)
    assert d.images.shape == (0, 32, 32) and d.labels.shape == (0,) and d.kinds == []


# ----------------------------------------------------------------------------------------------
# plot_sample_grid


def test_plot_sample_grid(batch: SyntheticCXR) -> None:
    from matplotlib.figure import Figure

    from ddadlib.plots import plot_sample_grid

    fig = plot_sample_grid(
        batch.images, batch.labels, batch.masks, batch.kinds, n_per_class=8, seed=0, title="samples"
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 16
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:8] == ["normal"] * 8
    assert all(t in ABNORMALITY_KINDS for t in titles[8:])
    # every abnormal one has its mask outline
    assert all(len(ax.collections) > 0 for ax in fig.axes[8:])
    # more than 8 per class: two rows per class of 8 columns
    fig2 = plot_sample_grid(batch.images[:, None], batch.labels, n_per_class=10)
    assert len(fig2.axes) == 32
    # the same seed picks the same samples
    again = plot_sample_grid(
        batch.images, batch.labels, batch.masks, batch.kinds, n_per_class=8, seed=0
    )
    assert [ax.get_images()[0].get_array().sum() for ax in again.axes] == [
        ax.get_images()[0].get_array().sum() for ax in fig.axes
    ]


def test_plot_sample_grid_boxes_and_missing_class(tmp_path) -> None:
    from ddadlib.data.records import Box
    from ddadlib.plots import plot_sample_grid

    imgs = np.random.default_rng(0).random((5, 40, 40)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    boxes = [None, None, [Box(3, 4, 10, 12, "mass")], [Box(1, 1, 5, 5), Box(20, 20, 8, 8)], []]
    fig = plot_sample_grid(imgs, labels, boxes=boxes, n_per_class=4)
    assert len(fig.axes) == 8
    n_rects = sum(len(ax.patches) for ax in fig.axes)
    assert n_rects == 3
    assert "mass" in [ax.get_title() for ax in fig.axes]
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    only_normal = plot_sample_grid(imgs[:2], labels[:2], n_per_class=2)
    assert len(only_normal.axes) == 4
    with pytest.raises(ValueError):
        plot_sample_grid(imgs, labels[:3])


def _luminance(rgb) -> float:
    """WCAG relative luminance of an sRGB colour."""
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a, b) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize(
    "kinds",
    [
        ["normal", "normal", "PNEUMONIA", "PNEUMONIA"],  # the bundled real set's findings
        ["", "", *ABNORMALITY_KINDS],
        ["normal", "normal", "bacteria", "virus", "covid", "mass", "other"],  # unknown findings
    ],
)
def test_sample_grid_captions_are_legible_on_the_page(kinds) -> None:
    """Every caption is dark text with at least WCAG AA contrast (4.5:1) against what it sits
    on: the white page, or the light box tinted with the outline's colour ("PNEUMONIA" was
    yellow on white)."""
    from matplotlib.colors import to_rgba

    from ddadlib.plots import plot_sample_grid

    n = len(kinds)
    labels = np.array([0, 0] + [1] * (n - 2))
    imgs = np.random.default_rng(0).random((n, 16, 16)).astype(np.float32)
    fig = plot_sample_grid(imgs, labels, kinds=kinds, n_per_class=n)
    checked = 0
    for ax in fig.axes:
        if not ax.get_title():
            continue
        text = to_rgba(ax.title.get_color())
        patch = ax.title.get_bbox_patch()
        background = to_rgba(patch.get_facecolor()) if patch is not None else (1, 1, 1, 1)
        assert _contrast(text, background) >= 4.5, (ax.get_title(), text, background)
        checked += 1
    assert checked == n
