"""Metrics: scikit-learn AUC and AP, bootstrap interval, sensitivity at 95% specificity."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ddadlib.scoring.metrics import (
    bootstrap_auc,
    evaluate_scores,
    pixel_auc,
    score_metrics,
    sensitivity_at_specificity,
)


@pytest.fixture
def data():
    g = np.random.default_rng(0)
    labels = np.r_[np.zeros(200, int), np.ones(100, int)]
    scores = g.normal(size=300) + labels * 1.0
    return labels, scores


def test_auc_and_ap_come_from_sklearn(data):
    labels, scores = data
    m = score_metrics(labels, scores, n_boot=200)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["ap"] == pytest.approx(average_precision_score(labels, scores))
    lo, hi = m["auc_ci"]
    assert lo < m["auc"] < hi and hi - lo < 0.2
    assert m["n_normal"] == 200 and m["n_abnormal"] == 100


def test_bootstrap_is_seeded(data):
    labels, scores = data
    assert bootstrap_auc(labels, scores, 100, seed=1) == bootstrap_auc(labels, scores, 100, seed=1)
    assert bootstrap_auc(labels, scores, 100, seed=1) != bootstrap_auc(labels, scores, 100, seed=2)


def test_per_member_scores_report_mean_and_spread(data):
    labels, scores = data
    g = np.random.default_rng(1)
    members = np.stack([scores + g.normal(scale=0.5, size=300) for _ in range(3)])
    m = score_metrics(labels, members, n_boot=50)
    aucs = [roc_auc_score(labels, r) for r in members]
    assert m["auc"] == pytest.approx(np.mean(aucs))
    assert m["auc_std"] == pytest.approx(np.std(aucs, ddof=1))
    assert m["auc_members"] == pytest.approx(aucs)


def test_sensitivity_at_specificity():
    labels = np.r_[np.zeros(100, int), np.ones(10, int)]
    scores = np.r_[np.arange(100), [98.5, 97.5, 96.5, 50, 40, 30, 20, 10, 5, 1]]
    # 95% specificity allows 5 false positives: threshold above normal score 94 catches 3 of 10
    assert sensitivity_at_specificity(labels, scores) == pytest.approx(0.3)
    assert sensitivity_at_specificity(labels, np.r_[np.zeros(100), np.ones(10)]) == 1.0


def test_pixel_auc():
    masks = np.zeros((2, 4, 4), bool)
    masks[1, :2, :2] = True
    perfect = masks.astype(float)
    assert pixel_auc(masks, perfect) == 1.0
    assert pixel_auc(masks, -perfect) == 0.0
    assert pixel_auc(masks, np.stack([perfect, -perfect])) == 0.5  # mean over members
    with pytest.raises(ValueError):
        pixel_auc(np.zeros((2, 4, 4), bool), perfect)


def test_bad_input_is_refused(data):
    labels, scores = data
    with pytest.raises(ValueError, match="NaN"):
        score_metrics(labels, np.r_[scores[:-1], np.nan])
    with pytest.raises(ValueError, match="both"):
        score_metrics(np.zeros(300, int), scores)
    with pytest.raises(ValueError, match="labels"):
        score_metrics(labels[:10], scores)


def test_evaluate_scores_adds_pixel_auc_where_maps_exist(data):
    labels, scores = data
    masks = np.zeros((300, 2, 2), bool)
    masks[labels == 1, 0, 0] = True
    maps = {"inter": masks.astype(float) + 0.1}
    out = evaluate_scores(
        labels, {"inter": scores, "rec": scores}, masks=masks, maps=maps, n_boot=0
    )
    assert out["inter"]["pixel_auc"] == 1.0 and "pixel_auc" not in out["rec"]
    assert out["rec"]["auc_ci"] is None


def test_bootstrap_statistic_is_the_roc_auc(data, monkeypatch):
    """The vectorised resample AUC (Mann-Whitney U) equals scikit-learn's on each resample."""
    import ddadlib.scoring.metrics as metrics

    labels, scores = data
    scores = np.round(scores, 1)  # with ties
    g = np.random.default_rng(3)
    idx = np.r_[g.choice(200, 200), 200 + g.choice(100, 100)]
    u = metrics.mannwhitneyu(scores[idx][200:], scores[idx][:200], method="asymptotic").statistic
    assert u / (200 * 100) == pytest.approx(roc_auc_score(labels[idx], scores[idx]))
    lo, hi = bootstrap_auc(labels, scores, 2000, seed=0)
    auc = roc_auc_score(labels, scores)
    assert lo < auc < hi
    # about as wide as the Hanley-McNeil normal approximation
    n0, n1 = 200, 100
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = np.sqrt(
        (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n0 * n1)
    )
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
