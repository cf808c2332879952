"""Faults on the data side: a replacement that fails midway, files changed during a resume,
tampered dataset files and non-finite pixels."""

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png
from PIL import Image

import ddadlib.data.dataset as dataset_mod
import ddadlib.data.prepare as prep
from ddadlib.data.dataset import STAGING, PreparedDataset, settle_dataset
from ddadlib.data.imaging import read_image
from ddadlib.data.prepare import prepare_folder
from ddadlib.errors import DataError

KW = {"size": 16, "n_normal": 12, "n_test": 6, "log": lambda s: None, "workers": 1}


def _snapshot(out):
    return {
        name: (out / name).read_bytes()
        for name in ("images.npy", "manifest.csv", "split.json", "dataset.json")
    }


@pytest.mark.parametrize(
    "fault", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_overwrite_that_fails_midway_keeps_the_old_dataset(
    csv_folder, tmp_path, monkeypatch, fault
):
    out = tmp_path / "p"
    prepare_folder(csv_folder, out, seed=0, **KW)
    before = _snapshot(out)
    real = dataset_mod.atomic_write_json

    def failing(path, obj):
        if path.name == "split.json":  # images.npy and manifest.csv are written by now
            raise fault
        real(path, obj)

    monkeypatch.setattr(dataset_mod, "atomic_write_json", failing)
    with pytest.raises(type(fault)):
        prepare_folder(csv_folder, out, seed=9, overwrite=True, **KW)
    assert _snapshot(out) == before
    assert len(PreparedDataset.load(out)) == 73
    assert not (out / STAGING).exists()
    monkeypatch.setattr(dataset_mod, "atomic_write_json", real)
    prepare_folder(csv_folder, out, seed=9, overwrite=True, **KW)
    assert (out / "split.json").read_bytes() != before["split.json"]


def test_kill_during_the_swap_is_finished_by_the_next_run(csv_folder, tmp_path, monkeypatch):
    out = tmp_path / "p"
    prepare_folder(csv_folder, out, seed=0, **KW)
    old_split = (out / "split.json").read_bytes()
    real, calls = os.replace, []

    def killed(src, dst):  # the process dies after moving the first new file in
        if STAGING in str(src) and STAGING not in str(dst):
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(dataset_mod.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_folder(csv_folder, out, seed=9, overwrite=True, **KW)
    monkeypatch.setattr(dataset_mod.os, "replace", real)
    with pytest.raises(DataError, match="not a prepared dataset"):
        PreparedDataset.load(out)  # half swapped: never taken for a finished dataset
    with pytest.raises(DataError, match="already holds a prepared dataset"):
        prepare_folder(csv_folder, out, seed=9, **KW)  # settles it first
    ds = PreparedDataset.load(out)
    assert (out / "split.json").read_bytes() != old_split and ds.info["seed"] == 9
    assert not (out / STAGING).exists()


def test_an_unfinished_staging_folder_is_dropped(csv_folder, tmp_path):
    out = tmp_path / "p"
    prepare_folder(csv_folder, out, **KW)
    before = _snapshot(out)
    (out / STAGING).mkdir()
    np.save(out / STAGING / "images.npy", np.zeros((3, 4, 4), np.uint8))  # a kill -9 left it
    settle_dataset(out)
    assert not (out / STAGING).exists() and _snapshot(out) == before


def test_resume_decodes_again_a_file_changed_since_the_interruption(
    class_folder, tmp_path, monkeypatch
):
    monkeypatch.setattr(prep, "CHUNK", 16)  # 50 images: 4 chunks
    real, calls, interrupt = prep._decode_chunk, [], [True]

    def flaky(paths, size):
        calls.append(paths)
        if len(calls) == 2 and interrupt[0]:
            raise KeyboardInterrupt
        return real(paths, size)

    monkeypatch.setattr(prep, "_decode_chunk", flaky)
    out, kw = tmp_path / "p", {"size": 16, "workers": 1, "log": lambda s: None}
    with pytest.raises(KeyboardInterrupt):
        prepare_folder(class_folder, out, **kw)
    changed = Path(calls[0][0])  # decoded in the first chunk, then edited by the user
    write_png(changed, 999, size=24)
    calls.clear()
    interrupt[0] = False
    prepare_folder(class_folder, out, **kw)
    assert len(calls) == 4  # the edited chunk and the three never decoded
    ds = PreparedDataset.load(out)
    i = ds.ids.index(changed.relative_to(class_folder).as_posix())
    ref = np.asarray(Image.open(changed).resize((16, 16), Image.Resampling.LANCZOS))
    assert np.array_equal(ds.images[i], ref)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_pixel_is_refused_naming_the_image(tmp_path, value):
    arr = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(arr, mode="F").save(tmp_path / "fine.tif")
    assert read_image(tmp_path / "fine.tif").max() == 255
    arr[3, 4] = value
    Image.fromarray(arr, mode="F").save(tmp_path / "bad.tif")
    with pytest.raises(DataError, match=r"bad\.tif: 1 of 1,024 pixels are NaN or infinite"):
        read_image(tmp_path / "bad.tif")


@pytest.fixture
def prepared(csv_folder, tmp_path):
    out = tmp_path / "p"
    prepare_folder(csv_folder, out, **KW)
    return out


def _edit_split(out, edit):
    split = json.loads((out / "split.json").read_text())
    edit(split)
    (out / "split.json").write_text(json.dumps(split))


def test_load_refuses_test_images_copied_into_dn(prepared):
    _edit_split(prepared, lambda s: s["train"]["0"].extend(s["test"]["0"][:2]))
    with pytest.raises(DataError, match=r"split\.json: image .* is in both"):
        PreparedDataset.load(prepared)


def test_load_refuses_abnormal_test_images_moved_into_dn(prepared):
    def move(s):
        s["train"]["0"].append(s["test"]["1"].pop())

    _edit_split(prepared, move)
    with pytest.raises(DataError, match=r"split\.json: image .* has label 1 but is in normal"):
        PreparedDataset.load(prepared)


def test_load_refuses_a_patient_on_both_sides_of_train_and_test(prepared):
    ds = PreparedDataset.load(prepared)
    patient = ds.manifest.set_index("id")["patient_id"]
    dn = ds.split["train"]["0"]
    # an image of Dn whose patient has another image in Dn, moved to the test set
    moved = next(i for i in dn if sum(patient[j] == patient[i] for j in dn) > 1)

    def move(s):
        s["train"]["0"].remove(moved)
        s["test"]["0"].append(moved)

    _edit_split(prepared, move)
    with pytest.raises(
        DataError, match=r"split\.json: patient .* has images in both training .* and test"
    ):
        PreparedDataset.load(prepared)


def test_load_refuses_unknown_ids(prepared):
    _edit_split(prepared, lambda s: s["test"]["0"].append("img/nothing.png"))
    with pytest.raises(DataError, match=r"split\.json: image 'img/nothing.png' .*not in the"):
        PreparedDataset.load(prepared)


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda a: a.astype(np.float32), r"images\.npy: expected a uint8 array.*float32"),
        (lambda a: a.reshape(len(a), -1), r"images\.npy: expected a uint8 array.*\(73, 256\)"),
        (lambda a: a[:, :, :8], r"images\.npy: expected a uint8 array.*\(73, 16, 8\)"),
        (lambda a: a[:70], r"images\.npy: holds 70 images but manifest\.csv has 73 rows"),
        (lambda a: a[:, :8, :8], r"images\.npy: images are 8x8 but dataset\.json says 16x16"),
    ],
)
def test_load_refuses_images_of_the_wrong_dtype_or_shape(prepared, bad, message):
    images = np.load(prepared / "images.npy")
    np.save(prepared / "images.npy", np.ascontiguousarray(bad(images)))
    for mmap in (False, True):
        with pytest.raises(DataError, match=message):
            PreparedDataset.load(prepared, mmap=mmap)
