"""The course's settings, data and helpers: real X-rays in class mode, the environment check,
the training images of a run, the findings."""

import numpy as np
import pytest

from ddadlib import course
from ddadlib.data.dataset import PreparedDataset
from ddadlib.errors import ConfigError
from ddadlib.presets import PRESETS
from ddadlib.runs import Run
from ddadlib.runs.config import run_config

quiet = dict(log=lambda line: None)


def test_class_mode_trains_on_the_bundled_xrays(monkeypatch):
    monkeypatch.delenv("DDAD_DATA", raising=False)
    s = course.settings("class")
    assert s.source == "kermany" and s.data is None and "real chest X-rays" in s.describe()
    assert s.epochs_for("ae") == PRESETS["class"].epochs and s.epochs_for("aeu") > s.epochs
    assert course.settings("quick").source == "synthetic"
    assert course.settings("class", data="synthetic").source == "synthetic"
    # EPOCHS in the parameters cell is the same for every backbone
    assert course.settings("class", epochs=7).epochs_for("aeu") == 7
    with pytest.raises(ConfigError, match="'kermany', 'synthetic'"):
        course.settings("class", data="no-such-folder")


def test_course_data_prepares_the_bundled_set_once(monkeypatch, tmp_path):
    monkeypatch.setenv("DDAD_CACHE", str(tmp_path))
    s = course.settings("class")
    s = type(s)(**{**s.__dict__, "size": 16})
    data = course.course_data(s, **quiet)
    assert data == tmp_path / "data" / "kermany-16px"
    stamp = (data / "images.npy").stat().st_mtime_ns
    assert course.course_data(s, **quiet) == data
    assert (data / "images.npy").stat().st_mtime_ns == stamp
    x, y, ids, masks = course.test_set(s)
    assert masks is None and x.shape[1:] == (16, 16) and set(np.unique(y)) == {0, 1}
    # the images fit gets are the ones a run of these settings draws
    normal, unlabeled = course.training_images(s, ar=0.2, seed=3)
    m = len(unlabeled)
    cfg = run_config(data, ar=0.2, n_unlabeled=m, seed=3, k=2, epochs=1, **quiet)
    d = PreparedDataset.load(data)
    assert np.array_equal(d.images[d.indices(list(cfg.du_ids))], unlabeled)
    assert np.array_equal(d.images[d.part("normal")], normal)
    model = course.course_detector(s, "aeu", seed=3, latent=4)
    assert (model.backbone, model.epochs, model.seed, model.latent) == (
        "aeu",
        s.epochs_for("aeu"),
        3,
        4,
    )


def test_check_environment_says_what_to_run(capsys):
    missing = course.check_environment(needs=("ipywidgets", "no_such_module_xyz"), mode="class")
    out = capsys.readouterr().out.splitlines()
    assert missing == ["no_such_module_xyz"]
    assert out[0].startswith("ddadlib ") and "torch" in out[0]
    (line,) = [x for x in out if x.startswith("missing")]
    assert "no_such_module_xyz" in line and course.INSTALL_COMMAND in line
    assert "no GPU found: class mode uses the CPU" in out  # this machine has no GPU


def test_a_finding_holds_only_by_more_than_its_margin():
    f = course.Finding("02", "inter > rec", 0.80, 0.70, margin=0.05)
    assert f.holds and "holds" in str(f) and "+0.100" in str(f)
    g = course.Finding("02", "inter > rec", 0.73, 0.70, margin=0.05)
    assert not g.holds and "does NOT hold" in str(g)
    assert not course.Finding("04", "AE-U > AE", 0.5, 0.5).holds


def test_findings_read_the_course_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("DDAD_CACHE", str(tmp_path))
    s = course.settings("quick", epochs=1, ars=[0.0, 1.0], k=2)
    s = type(s)(**{**s.__dict__, "n_normal": 30, "n_test": 8, "n_unlabeled": 20})
    found = course.findings(s)
    assert [f.notebook for f in found] == ["02", "02", "03", "03", "04"]
    ae = Run(course.course_run(s, "ae", progress=False, **quiet)).metrics()
    assert found[0].ours == ae["inter"]["auc"] and found[0].against == ae["rec_ensemble"]["auc"]
    assert found[0].margin == course.CLEAR_MARGIN
    aeu = Run(course.course_run(s, "aeu", progress=False, **quiet)).metrics()
    assert (found[4].ours, found[4].against) == (aeu["inter"]["auc"], ae["inter"]["auc"])


def test_the_patch_check_tells_visible_patches_from_invisible_ones():
    class Maps:
        """A stand-in DDAD: 'intra' marks every pixel that differs from the image's median
        (so it sees the patches), 'inter' is flat (it sees nothing)."""

        def score_maps(self, x):
            x = x.numpy()[:, 0]
            med = np.median(x.reshape(len(x), -1), axis=1)[:, None, None]
            return {"intra": np.abs(x - med) + 1.0, "inter": np.ones_like(x), "mu_A": x}

    # one grey level per image, so that a patch from another image changes its pixels
    normal = np.repeat(np.linspace(0, 255, 40).astype(np.uint8), 32 * 32).reshape(40, 32, 32)
    table = course.synthetic_patch_check(Maps(), normal, n=40, seed=3)
    assert list(table.index) == ["intra", "inter"]
    assert table.loc["intra", "pixel AUROC of the patches"] > 0.95
    assert table.loc["inter", "pixel AUROC of the patches"] == pytest.approx(0.5)
    assert table["clean map, in patch / outside"].tolist() == pytest.approx([1.0, 1.0])
