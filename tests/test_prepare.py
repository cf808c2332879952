import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_png
from ddadlib.dataset import PreparedDataset
from ddadlib.errors import DataError
from ddadlib.prepare import default_sizes, prepare_folder
from ddadlib.splits import group_images, split_sizes, validate_split


def test_prepare_folder_writes_a_loadable_dataset(csv_folder, tmp_path):
    out = tmp_path / "prepared"
    prepare_folder(csv_folder, out, size=32, n_normal=12, n_test=6, seed=0, log=lambda s: None)
    ds = PreparedDataset.load(out)
    assert ds.images.shape == (73, 32, 32) and ds.images.dtype == np.uint8
    assert ds.masks is None
    assert split_sizes(ds.split) == {"normal": 12, "pool_normal": 25, "pool_abnormal": 24,
                                     "test_normal": 6, "test_abnormal": 6}
    assert list(ds.manifest.columns[:3]) == ["id", "label", "patient_id"]
    assert ds.info["source"] == "folder" and ds.info["size"] == 32
    assert ds.info["counts"] == {"normal": 43, "abnormal": 30}
    # patients and exact duplicates never cross parts
    groups = group_images(ds.manifest["patient_id"].tolist(), ds.manifest["md5"].tolist())
    validate_split(ds.split, ds.ids, ds.labels, groups)
    dups = ds.manifest[ds.manifest["id"].isin(["img/a07.png", "img/dup0.png", "img/dup2.png"])]
    assert dups["md5"].nunique() == 1
    assert not (out / ".partial").exists()


def test_images_are_resized_copies_of_the_files(csv_folder, tmp_path):
    from PIL import Image

    out = tmp_path / "p"
    prepare_folder(csv_folder, out, size=24, n_normal=12, n_test=6, log=lambda s: None)
    ds = PreparedDataset.load(out)
    i = ds.ids.index("img/b03.png")
    ref = np.asarray(Image.open(csv_folder / "img" / "b03.png").resize((24, 24),
                                                                     Image.Resampling.LANCZOS))
    assert np.array_equal(ds.images[i], ref)
    assert (ds.manifest["orig_height"].iloc[i], ds.manifest["orig_width"].iloc[i]) == (40, 48)


def test_same_inputs_and_seed_write_the_same_split(class_folder, tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    for out, seed in ((a, 3), (b, 3), (c, 4)):
        prepare_folder(class_folder, out, size=16, seed=seed, log=lambda s: None)
    assert (a / "split.json").read_bytes() == (b / "split.json").read_bytes()
    assert (a / "split.json").read_bytes() != (c / "split.json").read_bytes()
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()


def test_default_sizes_are_stated_and_used(class_folder, tmp_path):
    assert default_sizes([0] * 1341 + [1] * 3875) == {"n_normal": 503, "n_test": 335}
    lines = []
    prepare_folder(class_folder, tmp_path / "d", size=16, log=lines.append)
    assert any("Dn 12 normal; pools 13 normal + 15 abnormal; test 5 normal + 5 abnormal" in l
               for l in lines)


def test_refuses_to_overwrite_without_flag(csv_folder, tmp_path):
    out = tmp_path / "p"
    kw = dict(size=16, n_normal=12, n_test=6, log=lambda s: None)
    prepare_folder(csv_folder, out, **kw)
    before = (out / "split.json").read_bytes()
    with pytest.raises(DataError, match="already holds a prepared dataset.*--overwrite"):
        prepare_folder(csv_folder, out, seed=9, **kw)
    assert (out / "split.json").read_bytes() == before
    prepare_folder(csv_folder, out, seed=9, overwrite=True, **kw)
    assert (out / "split.json").read_bytes() != before


def test_corrupt_image_fails_naming_the_file_and_keeps_progress(csv_folder, tmp_path):
    bad = csv_folder / "img" / "b05.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    out = tmp_path / "p"
    kw = dict(size=16, n_normal=12, n_test=6, log=lambda s: None, workers=1)
    with pytest.raises(DataError, match=r"(?s)1 of 73 images could not be decoded.*b05\.png"):
        prepare_folder(csv_folder, out, **kw)
    assert not (out / "dataset.json").exists()
    assert list((out / ".partial").glob("chunk_*.npz"))
    # fixed file: the rerun retries it and finishes
    write_png(bad, 505, bright=30)
    prepare_folder(csv_folder, out, **kw)
    assert len(PreparedDataset.load(out)) == 73


def test_skip_mode_reports_and_saves_skipped_files(csv_folder, tmp_path):
    (csv_folder / "img" / "b05.png").write_bytes(b"garbage")
    out, lines = tmp_path / "p", []
    prepare_folder(csv_folder, out, size=16, n_normal=12, n_test=6, on_error="skip",
                   log=lines.append)
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["id"].tolist() == ["img/b05.png"]
    assert "b05.png" in skipped["error"].iloc[0]
    assert any("skipped 1 of 73" in l for l in lines)
    ds = PreparedDataset.load(out)
    assert len(ds) == 72 and ds.info["n_skipped"] == 1


def test_resume_reuses_decoded_chunks(tmp_path, monkeypatch):
    import ddadlib.prepare as prep

    root = tmp_path / "many"
    for i in range(20):
        write_png(root / "normal" / f"{i}.png", i)
        write_png(root / "pneumonia" / f"{i}.png", 100 + i)
    monkeypatch.setattr(prep, "CHUNK", 8)
    class Interrupted(Exception):
        pass

    calls = []
    resumed = False
    real = prep._decode_chunk

    def flaky(paths, size):
        calls.append(len(paths))
        if len(calls) == 3 and not resumed:
            raise Interrupted
        return real(paths, size)

    monkeypatch.setattr(prep, "_decode_chunk", flaky)
    out = tmp_path / "p"
    with pytest.raises(Interrupted):
        prepare_folder(root, out, size=16, workers=1, log=lambda s: None)
    assert len(list((out / ".partial").glob("chunk_*.npz"))) == 2
    calls.clear()
    resumed = True
    prepare_folder(root, out, size=16, workers=1, log=lambda s: None)
    assert calls == [8, 8, 8]  # only the three chunks not done before
    assert len(PreparedDataset.load(out)) == 40


def test_parallel_decoding_matches_serial(class_folder, tmp_path):
    import ddadlib.prepare as prep

    prep_kw = dict(size=16, log=lambda s: None)
    prepare_folder(class_folder, tmp_path / "serial", workers=1, **prep_kw)
    old = prep.CHUNK
    prep.CHUNK = 7
    try:
        prepare_folder(class_folder, tmp_path / "parallel", workers=2, **prep_kw)
    finally:
        prep.CHUNK = old
    a = np.load(tmp_path / "serial" / "images.npy")
    b = np.load(tmp_path / "parallel" / "images.npy")
    assert np.array_equal(a, b)


def test_split_file_is_used_as_is(csv_folder, tmp_path):
    ids = sorted(f"img/a{i:02d}.png" for i in range(40))
    normal = [f"a{i:02d}.png" for i in list(range(0, 6)) + list(range(9, 12))]
    pool0 = [f"a{i:02d}.png" for i in range(6, 9)] + ["dup0.png", "dup1.png", "dup2.png"]
    split = {"train": {"0": normal,
                       "unlabeled": {"0": pool0 + [f"a{i:02d}.png" for i in range(12, 30)],
                                     "1": [f"b{i:02d}.png" for i in range(10, 30)]}},
             "test": {"0": [f"a{i:02d}.png" for i in range(30, 39)],
                      "1": [f"b{i:02d}.png" for i in range(10)]}}
    f = tmp_path / "authors_split.json"
    f.write_text(json.dumps(split))
    out = tmp_path / "p"
    prepare_folder(csv_folder, out, size=16, split_file=f, log=lambda s: None)
    ds = PreparedDataset.load(out)
    assert ds.split["test"]["1"][0] == "img/b00.png"
    assert split_sizes(ds.split)["normal"] == 9
    # a patient (pat0: a00-a02) split between Dn and the test set is refused
    split["test"]["0"].append("a00.png")
    split["train"]["0"].remove("a00.png")
    f.write_text(json.dumps(split))
    with pytest.raises(DataError, match=r"authors_split.json: patient 'pat0' has images in both "
                                        r"training \('img/a01.png' in normal\) and test"):
        prepare_folder(csv_folder, tmp_path / "q", size=16, split_file=f, log=lambda s: None)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        PreparedDataset.load(tmp_path / "nothing")
    with pytest.raises(DataError, match="not a prepared dataset"):
        PreparedDataset.load(tmp_path)
