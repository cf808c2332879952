"""The DDAD scores, checked against their formulas on hand-made reconstructions."""

import numpy as np
import pytest
import torch

from ddadlib.scoring.scores import (
    image_scores,
    inter_map,
    intra_map,
    rec_ensemble_map,
    rec_map,
    score_maps,
    uncertainty,
)


@pytest.fixture
def recon():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 8, 8, generator=g)
    a = torch.rand(3, 5, 1, 8, 8, generator=g)
    b = torch.rand(3, 5, 1, 8, 8, generator=g)
    logvar = torch.randn(3, 5, 1, 8, 8, generator=g)
    return x, a, b, logvar


def test_plain_scores(recon):
    x, a, b, _ = recon
    xn, an, bn = x.numpy(), a.numpy(), b.numpy()
    assert np.allclose(rec_map(x, b).numpy(), (xn - bn) ** 2)
    assert np.allclose(rec_ensemble_map(x, b).numpy(), (xn - bn.mean(0)) ** 2)
    assert np.allclose(intra_map(b).numpy(), bn.std(0, ddof=1), atol=1e-6)
    assert np.allclose(inter_map(a, b).numpy(), np.abs(an.mean(0) - bn.mean(0)), atol=1e-6)


def test_uncertainty_refined_scores(recon):
    x, a, b, lv = recon
    xn, an, bn, lvn = (t.numpy() for t in (x, a, b, lv))
    sigma2 = np.exp(lvn).mean(0)
    assert np.allclose(uncertainty(lv).numpy(), sigma2, rtol=1e-5)
    assert np.allclose(rec_map(x, b, lv).numpy(), (xn - bn) ** 2 * np.exp(-lvn), rtol=1e-5)
    assert np.allclose(
        rec_ensemble_map(x, b, lv).numpy(), (xn - bn.mean(0)) ** 2 / sigma2, rtol=1e-5
    )
    assert np.allclose(intra_map(b, lv).numpy(), np.sqrt(bn.var(0, ddof=1) / sigma2), rtol=1e-4)
    assert np.allclose(
        inter_map(a, b, lv).numpy(), np.abs(an.mean(0) - bn.mean(0)) / np.sqrt(sigma2), rtol=1e-4
    )


def test_score_maps_and_image_scores(recon):
    x, a, b, lv = recon
    maps = score_maps(x, b, a)
    assert set(maps) == {"rec", "rec_ensemble", "intra", "inter"}
    assert maps["rec"].shape == (3, 5, 1, 8, 8) and maps["inter"].shape == x.shape
    s = image_scores(maps["inter"])
    assert s.shape == (5,)
    assert torch.allclose(s, maps["inter"].reshape(5, -1).mean(1))
    assert image_scores(maps["rec"]).shape == (3, 5)
    # without module A there is no inter, with one member no intra
    assert "inter" not in score_maps(x, b)
    assert "intra" not in score_maps(x, b[:1])
    with pytest.raises(ValueError, match="2 members"):
        intra_map(b[:1])


def test_identical_modules_have_no_inter_discrepancy(recon):
    x, _, b, lv = recon
    assert torch.count_nonzero(inter_map(b, b)) == 0
    assert torch.count_nonzero(inter_map(b, b, lv)) == 0
