"""Localization metrics: AUPRO (MVTec AD's definition) on hand-computable maps, and the box
metrics; also on a prepared RSNA fixture whose boxes come through `ddad prepare rsna`."""

import numpy as np
import pytest
from dicom_fixtures import make_rsna_download

from ddadlib.cli import main
from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.records import Box
from ddadlib.runs import run as run_layer
from ddadlib.scoring.localization import (
    aupro,
    box_localization,
    box_masks,
    localization_metrics,
    pro_curve,
    region_weights,
)
from ddadlib.scoring.metrics import evaluate_scores, format_metrics


def two_regions():
    """Two images of 8x8: a 2x2 region in the first, a 3x3 region in the second, and a third
    normal image."""
    masks = np.zeros((3, 8, 8), bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 4:7, 4:7] = True
    return masks


def test_a_perfect_map_gives_1_and_a_reversed_one_0():
    masks = two_regions()
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert aupro(masks, -masks.astype(float)) == pytest.approx(0.0)


def test_a_constant_map_gives_half_the_fpr_limit():
    masks = two_regions()
    assert aupro(masks, np.zeros(masks.shape)) == pytest.approx(0.15)
    assert aupro(masks, np.ones(masks.shape), fpr_limit=1.0) == pytest.approx(0.5)


def test_each_region_counts_once_whatever_its_size():
    # the small region found at once, the large one never: PRO 0.5 at every FPR below 1
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 0, 0] = True  # 1 pixel
    masks[0, 5:9, 5:9] = True  # 16 pixels
    maps = np.zeros(masks.shape)
    maps[0, 0, 0] = 10.0
    maps[0, 5:9, 5:9] = -10.0
    assert aupro(masks, maps) == pytest.approx(0.5)
    # pixel-wise, the small region is 1 of 17 anomalous pixels, so the pixel AUC is far lower
    assert localization_metrics(maps, np.array([1]), masks=masks)["pixel_auc"] < 0.1


def test_half_of_a_region_above_the_normal_pixels():
    masks = np.zeros((1, 4, 4), bool)
    masks[0, :2, :2] = True
    maps = np.zeros(masks.shape)
    maps[0, 0, :2] = 1.0  # half of the region's pixels rank above every normal pixel
    # PRO 0.5 from FPR 0; the constant part of the map (the other half and all normal pixels)
    # joins at FPR 1 with PRO 1: the curve rises from 0.5 to 1 over FPR 0..1, so up to 0.3 its
    # mean height is 0.5 + 0.5 * 0.15
    assert aupro(masks, maps) == pytest.approx(0.5 + 0.5 * 0.15)


def test_regions_are_eight_connected_per_image():
    masks = np.zeros((2, 5, 5), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region of 2
    masks[0, 4, 4] = True  # a second region
    masks[1, 0, 0] = True  # the same place in another image is another region
    w = region_weights(masks)
    assert w[0, 0, 0] == w[0, 1, 1] == 0.5 and w[0, 4, 4] == 1.0 and w[1, 0, 0] == 1.0
    assert w[~masks].min() == 1.0


def test_per_member_maps_average_and_bad_input_is_refused():
    masks = two_regions()
    stack = np.stack([masks.astype(float), np.zeros(masks.shape)])
    assert aupro(masks, stack) == pytest.approx((1.0 + 0.15) / 2)
    with pytest.raises(ValueError, match="anomalous and normal"):
        pro_curve(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(masks, masks.astype(float), fpr_limit=0)


def test_box_masks_cover_the_pixels_a_box_overlaps():
    m = box_masks([[Box(1.5, 2.0, 2.0, 1.0)], [], [Box(6.0, 6.0, 10.0, 10.0)]], 8)
    assert m[0].sum() == 3 * 1 and m[0][2, 1:4].all()
    assert not m[1].any()
    assert m[2][6:, 6:].all() and m[2].sum() == 4  # clipped to the image


def test_box_metrics_on_hand_made_maps():
    boxes = [[Box(0, 0, 2, 2)], [Box(4, 4, 2, 2)], []]
    maps = np.zeros((3, 8, 8))
    maps[0, :2, :2] = 1.0  # inside its box: found
    maps[1, 0, 0] = 1.0  # outside: the maximum misses the box
    found = box_localization(maps, boxes)
    assert found["n_images"] == 2 and found["max_in_box"] == pytest.approx(0.5)
    # pixel AUC over the 2 images with boxes: 4 perfect box pixels, 4 tied at 0 with 123
    # normal pixels of which 1 ranks above them
    inside = box_masks(boxes[:2], 8)
    from sklearn.metrics import roc_auc_score

    assert found["box_pixel_auc"] == pytest.approx(roc_auc_score(inside.ravel(), maps[:2].ravel()))
    with pytest.raises(ValueError, match="no image has a box"):
        box_localization(maps[2:], boxes[2:])


def test_localization_metrics_takes_boxes_of_abnormal_images_only():
    boxes = [[Box(0, 0, 2, 2)], [Box(0, 0, 2, 2)]]
    maps = np.zeros((2, 8, 8))
    maps[1, :2, :2] = 1.0
    labels = np.array([0, 1])
    out = localization_metrics(maps, labels, boxes=boxes)
    assert out == {"box_pixel_auc": 1.0, "max_in_box": 1.0, "n_box_images": 1}
    assert localization_metrics(maps, labels) == {}
    assert localization_metrics(maps, labels, boxes=[[], []]) == {}


def test_evaluate_scores_adds_aupro_and_prints_it():
    masks = two_regions()
    labels = np.array([1, 1, 0])
    maps = {"good": masks.astype(float), "flat": np.zeros(masks.shape)}
    scores = {"good": np.array([2.0, 3.0, 0.0]), "flat": np.array([1.0, 2.0, 0.0])}
    m = evaluate_scores(labels, scores, masks=masks, maps=maps, n_boot=0)
    assert m["good"]["aupro"] == pytest.approx(1.0) and m["good"]["pixel_auc"] == 1.0
    assert m["flat"]["aupro"] == pytest.approx(0.15)
    text = format_metrics(m)
    assert "aupro" in text and "0.150" in text


@pytest.fixture(scope="module")
def rsna32(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rsna")
    make_rsna_download(tmp / "rsna", n_normal=14, n_opacity=10, n_other=2)
    out = tmp / "rsna32"
    argv = ["prepare", "rsna", "--root", str(tmp / "rsna"), "--out", str(out), "--quiet"]
    assert main(argv + ["--n-normal", "6", "--n-test", "3", "--size", "32"]) == 0
    return out


def test_box_metrics_on_a_prepared_rsna_fixture(rsna32):
    ds = PreparedDataset.load(rsna32)
    idx = run_layer.test_indices(ds)
    labels, boxes = ds.labels[idx], [ds.boxes(i) for i in idx]
    assert all(boxes[i] for i in np.flatnonzero(labels == 1))  # the opacity boxes came through
    truth = box_masks(boxes, ds.size)
    perfect = localization_metrics(truth.astype(float), labels, boxes=boxes)
    assert perfect["box_pixel_auc"] == 1.0 and perfect["max_in_box"] == 1.0
    assert perfect["n_box_images"] == int(labels.sum())
    reversed_ = localization_metrics(-truth.astype(float), labels, boxes=boxes)
    assert reversed_["box_pixel_auc"] == 0.0 and reversed_["max_in_box"] == 0.0


def test_evaluate_reports_box_metrics_on_rsna(rsna32, tmp_path):
    from ddadlib.runs.config import run_config
    from ddadlib.runs.evaluate import evaluate_run
    from ddadlib.runs.train import train_run

    quiet = dict(log=lambda s: None)
    cfg = run_config(rsna32, k=2, epochs=1, ar=0.6, n_unlabeled=5, seed=0, device="cpu", **quiet)
    train_run(tmp_path / "run", cfg, progress=False, **quiet)
    metrics = evaluate_run(tmp_path / "run", n_boot=0, figures=False, **quiet)
    for name in ("rec", "intra", "inter"):
        m = metrics[name]
        assert m["n_box_images"] == 3 and 0 <= m["box_pixel_auc"] <= 1
        assert m["max_in_box"] * 3 == pytest.approx(round(m["max_in_box"] * 3))  # of 3 images
        assert "aupro" not in m  # no pixel masks on real data
