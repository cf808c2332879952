"""The DDAD estimator: fit, scores, save and load."""

import numpy as np
import pytest
import torch

from ddadlib.data.dataset import PreparedDataset
from ddadlib.detectors import DDAD
from ddadlib.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def tiny(tiny_synthetic):
    ds = PreparedDataset.load(tiny_synthetic)
    dn = ds.images[ds.part("normal")]
    du = ds.images[ds.part("pool_abnormal")][:20]
    test = np.concatenate([ds.part("test_normal"), ds.part("test_abnormal")])
    return dn, du, ds.images[test]


@pytest.fixture(scope="module")
def fitted(tiny):
    dn, du, _ = tiny
    return DDAD(backbone="aeu", k=2, epochs=1, seed=0, device="cpu", progress=False).fit(dn, du)


def test_init_does_no_work():
    m = DDAD(backbone="memae", k=3, epochs=5)
    assert m.get_params()["backbone"] == "memae"
    assert not hasattr(m, "module_a_")
    with pytest.raises(RuntimeError, match="not fitted"):
        m.score_samples(np.zeros((1, 64, 64), np.uint8))


def test_bad_settings_are_refused(tiny):
    dn, du, _ = tiny
    with pytest.raises(ConfigError, match="backbone"):
        DDAD(backbone="vae").fit(dn)
    with pytest.raises(ConfigError, match="at least 2"):
        DDAD(k=1).fit(dn)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            DDAD(device="cuda", epochs=1).fit(dn)


def test_scores_have_the_documented_shapes(fitted, tiny):
    _, _, test = tiny
    n = len(test)
    s = fitted.score_samples(test)
    assert set(s) == {"rec", "rec_ensemble", "intra", "inter"} == set(fitted.score_names)
    assert s["rec"].shape == (2, n)  # rec: each network of module B alone
    assert all(
        s[k].shape == (n,) and np.isfinite(s[k]).all() for k in ("rec_ensemble", "intra", "inter")
    )
    maps = fitted.score_maps(test)
    assert maps["rec"].shape == (2, n, 32, 32)
    assert maps["inter"].shape == maps["mu_A"].shape == maps["sigma2"].shape == (n, 32, 32)
    # the image score is the mean of the map
    assert np.allclose(s["inter"], maps["inter"].mean(axis=(1, 2)), rtol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        fitted.score_samples(test[:0])
    # scoring in chunks gives the same as at once
    s2 = fitted.score_samples(test, batch_size=5)
    assert np.allclose(s2["inter"], s["inter"], rtol=1e-5)


def test_save_and_load_give_the_same_scores(fitted, tiny, tmp_path):
    _, _, test = tiny
    path = fitted.save(tmp_path / "m.pt")
    loaded = DDAD.load(path, device="cpu")
    assert loaded.backbone == "aeu" and loaded.k == 2
    a, b = fitted.score_samples(test), loaded.score_samples(test)
    for key in a:
        assert np.array_equal(a[key], b[key])
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(DataError, match="bad.pt"):
        DDAD.load(tmp_path / "bad.pt")


def test_module_b_is_reused_as_given(fitted, tiny):
    dn, du, test = tiny
    again = DDAD(backbone="aeu", k=2, epochs=1, seed=0, device="cpu", progress=False)
    again.fit(dn, du[:10], module_b=fitted.module_b_)
    assert "B" not in again.history_ and "A" in again.history_
    assert again.module_b_[0] is fitted.module_b_[0]


def test_same_seed_same_scores(tiny):
    dn, du, test = tiny
    runs = [
        DDAD(k=2, epochs=1, seed=5, device="cpu", progress=False).fit(dn, du).score_samples(test)
        for _ in range(2)
    ]
    for key in runs[0]:
        assert np.array_equal(runs[0][key], runs[1][key])
    other = DDAD(k=2, epochs=1, seed=6, device="cpu", progress=False).fit(dn, du)
    assert not np.array_equal(other.score_samples(test)["inter"], runs[0]["inter"])
