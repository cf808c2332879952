"""Bad flags, tampered datasets and a full disk end in one line, never a traceback."""

import errno
import os
import shutil

import numpy as np
import pytest

import ddadlib.data.prepare as prep
from ddadlib.cli import main
from ddadlib.errors import DiskFullError, disk_full_message


def _one_line_error(argv, capsys, *expect) -> None:
    """``main(argv)`` stops at parse time with status 2 and one line on stderr."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("ddad "), err
    for text in expect:
        assert text in err


@pytest.mark.parametrize(
    "flags, expect",
    [
        (["--ar", "nan"], "--ar: 'nan' is not a finite number"),
        (["--ar", "inf"], "--ar: 'inf' is not a finite number"),
        (["--ar", "1.5"], "--ar: must be between 0 and 1, not 1.5"),
        (["--seed", "-1"], "--seed: must be from 0 to"),
        (["--device", "banana"], "--device: unknown device 'banana'"),
        (["--device", "meta"], "--device: unknown device 'meta'"),
        (["--lr", "nan"], "--lr: 'nan' is not a finite number"),
        (["--lr", "0"], "--lr: must be above 0"),
        (["--epochs", "0"], "--epochs: must be at least 1"),
        (["--batch-size", "-3"], "--batch-size: must be at least 1"),
    ],
)
def test_bad_train_flags(flags, expect, tiny_synthetic, tmp_path, capsys):
    _one_line_error(
        [
            "train",
            "--data",
            str(tiny_synthetic),
            "--out",
            str(tmp_path / "r"),
            "--k",
            "1",
            "--epochs",
            "1",
            *flags,
        ],
        capsys,
        "ddad train: error: ",
        expect,
    )
    assert not (tmp_path / "r").exists()


def test_bad_size_workers_and_counts(class_folder, tiny_synthetic, tmp_path, capsys):
    out = str(tmp_path / "o")
    _one_line_error(
        ["prepare", "synthetic", "--out", out, "--size", "20000"],
        capsys,
        "--size: must be from 16 to 1,024, not 20000: larger images outgrow memory",
    )
    _one_line_error(
        ["prepare", "folder", "--root", str(class_folder), "--out", out, "--size", "8"],
        capsys,
        "--size: must be from 16",
    )
    _one_line_error(
        ["prepare", "folder", "--root", str(class_folder), "--out", out, "--workers", "0"],
        capsys,
        "--workers: must be at least 1",
    )
    _one_line_error(
        ["prepare", "synthetic", "--out", out, "--n-test", "-2"],
        capsys,
        "--n-test: must be at least 1",
    )
    _one_line_error(
        ["prepare", "synthetic", "--out", out, "--severity", "0.1", "nan"],
        capsys,
        "--severity: 'nan' is not a finite number",
    )
    _one_line_error(
        ["info", "--data", str(tiny_synthetic), "--n-unlabeled", "x"],
        capsys,
        "--n-unlabeled: 'x' is not a whole number",
    )
    _one_line_error(
        ["evaluate", "--run", str(tmp_path), "--n-boot", "-1"],
        capsys,
        "--n-boot: must be from 0 to 10,000, not -1",
    )
    _one_line_error(
        ["reproduce", "--data", str(tiny_synthetic), "--out", out, "--seeds", "0", "-1"],
        capsys,
        "--seeds: must be from 0",
    )


@pytest.mark.parametrize("n", ["0", "100000"])
def test_samples_n_is_bounded(n, tiny_synthetic, tmp_path, capsys):
    _one_line_error(
        ["samples", "--data", str(tiny_synthetic), "--out", str(tmp_path / "g.png"), "--n", n],
        capsys,
        "--n: must be from 1 to 64",
    )
    assert not (tmp_path / "g.png").exists()


def test_out_that_is_a_file_or_a_folder(tiny_synthetic, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("mine\n")
    data = str(tiny_synthetic)
    for argv in (
        ["prepare", "synthetic", "--out", str(f)],
        ["train", "--data", data, "--out", str(f)],
        ["demo", "--out", str(f)],
        ["reproduce", "--data", data, "--out", str(f)],
        ["train", "--data", data, "--out", str(f / "run")],
    ):
        _one_line_error(argv, capsys, "--out: ", f"{f} is a file")
    _one_line_error(
        ["samples", "--data", data, "--out", str(tmp_path)],
        capsys,
        f"--out: {tmp_path} is a folder; --out must be a file name",
    )
    assert f.read_text() == "mine\n"


def test_ar_out_of_range_prints_nothing_before_its_error(tiny_synthetic, tmp_path, capsys):
    _one_line_error(
        ["train", "--data", str(tiny_synthetic), "--out", str(tmp_path / "r"), "--ar", "1.5"],
        capsys,
        "--ar: must be between 0 and 1",
    )


def test_workers_beyond_the_cores_are_capped_with_a_note(
    class_folder, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(prep, "available_cores", lambda: 2)
    monkeypatch.setattr(prep, "CHUNK", 16)
    real_context, pools = prep.mp.get_context, []

    class Context:
        def __init__(self, method):
            self.real = real_context(method)

        def Pool(self, n, **kw):  # the name multiprocessing uses
            pools.append(n)
            return self.real.Pool(n, **kw)

    monkeypatch.setattr(prep.mp, "get_context", Context)
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(class_folder),
                "--out",
                str(tmp_path / "o"),
                "--size",
                "16",
                "--quiet",
                "--workers",
                "999",
            ]
        )
        == 0
    )
    assert (
        "999 workers asked for, but 2 cores are available; decoding with 2"
        in capsys.readouterr().err
    )
    assert pools == [2]


@pytest.mark.parametrize(
    "bad, expect",
    [
        (
            lambda a: a.astype(np.float64),
            "expected a uint8 array of N x S x S images, found float64",
        ),
        (lambda a: a[:, :, :16], "found uint8 of shape (124, 32, 16)"),
    ],
)
def test_images_npy_of_the_wrong_dtype_or_shape(bad, expect, tiny_synthetic, tmp_path, capsys):
    data = tmp_path / "copy"
    shutil.copytree(tiny_synthetic, data)
    np.save(data / "images.npy", np.ascontiguousarray(bad(np.load(data / "images.npy"))))
    for argv in (
        ["info", "--data", str(data)],
        ["samples", "--data", str(data), "--out", str(tmp_path / "g.png")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"error: {data / 'images.npy'}: " in err and expect in err


def _fill_disk(monkeypatch, after: int = 0) -> None:
    """Every file write after the first ``after`` fails as on a full disk."""
    real, seen = os.fsync, []

    def fsync(fd):
        seen.append(fd)
        if len(seen) > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_while_preparing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "syn"
    _fill_disk(monkeypatch)
    assert (
        main(
            [
                "prepare",
                "synthetic",
                "--out",
                str(out),
                "--size",
                "32",
                "--n-normal",
                "20",
                "--n-test",
                "5",
                "--n-unlabeled",
                "10",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    n_images = 20 + 5 + 10 + 5 + 10
    assert (
        f"ddad prepare: error: no space left on device in {out} (writing images.npy: "
        f"{n_images * 32 * 32 + 128:,} bytes needed, "
    ) in err
    assert "free some space, or write to another disk" in err
    assert not (out / "images.npy").exists() and not (out / ".incoming").exists()


def test_disk_full_while_drawing_samples(tiny_synthetic, tmp_path, capsys, monkeypatch):
    _fill_disk(monkeypatch)
    png = tmp_path / "grid.png"
    assert main(["samples", "--data", str(tiny_synthetic), "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"no space left on device in {tmp_path} (writing grid.png: " in err
    assert not png.exists() and not list(tmp_path.glob(".grid.png.*"))


def test_disk_full_outside_atomic_write(tiny_synthetic, tmp_path, capsys, monkeypatch):
    from ddadlib import plots

    def full(fig, path, dpi=120):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(plots, "save_figure", full)
    png = tmp_path / "grid.png"
    assert main(["samples", "--data", str(tiny_synthetic), "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"no space left on device in {tmp_path} (writing grid.png: bytes needed unknown" in err


def test_disk_full_messages(tmp_path):
    assert disk_full_message(OSError(errno.ENOSPC, "No space left on device")).startswith(
        "no space left on device (free some space"
    )
    exc = DiskFullError(tmp_path / "a.bin", written=4096)
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert f"in {tmp_path} (writing a.bin: more than 4,096 bytes needed, " in str(exc)


def test_disk_full_as_numpy_reports_it(tmp_path, capsys, monkeypatch):
    """On a full disk numpy's array.tofile raises an OSError without an errno (a short write)."""
    import shutil as shutil_mod
    from collections import namedtuple

    def short_write(fh, array):
        fh.write(b"x" * 100)
        raise OSError(f"{array.nbytes} requested and 100 written")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(np, "save", short_write)
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda path: usage(10**6, 10**6 - 50, 50))
    out = tmp_path / "syn"
    assert (
        main(
            [
                "prepare",
                "synthetic",
                "--out",
                str(out),
                "--size",
                "32",
                "--n-normal",
                "20",
                "--n-test",
                "5",
                "--n-unlabeled",
                "10",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err == (
        f"ddad prepare: error: no space left on device in {out} (writing images.npy: "
        f"{50 * 32 * 32 + 128:,} bytes needed, 50 free); free some space, or write "
        "to another disk\n"
    )
