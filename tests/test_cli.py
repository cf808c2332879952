import subprocess
import sys

import pytest

from ddadlib.cli import build_parser, main


def _subcommands(parser):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield [name]
                yield from ([name, *rest] for rest in _subcommands(sub))


@pytest.mark.parametrize("words", [[]] + list(_subcommands(build_parser())))
def test_every_command_has_help(words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    assert exc.value.code == 0
    assert "usage: ddad" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "ddadlib.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("ddadlib ")


def test_prepare_folder_info_and_samples(class_folder, tmp_path, capsys):
    out = tmp_path / "prep"
    assert (
        main(
            [
                "prepare",
                "folder",
                "--root",
                str(class_folder),
                "--out",
                str(out),
                "--size",
                "32",
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "PNEUMONIA/ -> 1 (abnormal, 20 images)" in printed
    assert "Dn 12 normal; pools 13 normal + 15 abnormal; test 5 normal + 5 abnormal" in printed
    assert main(["info", "--data", str(out), "--n-unlabeled", "20"]) == 0
    assert "AR from 0.35 to 0.75" in capsys.readouterr().out
    png = tmp_path / "grid.png"
    assert main(["samples", "--data", str(out), "--out", str(png), "--n", "4"]) == 0
    assert png.stat().st_size > 1000
    assert main(["samples", "--data", str(out), "--out", str(png)]) == 2
    assert "exists" in capsys.readouterr().err


def test_errors_are_one_line_without_traceback(tmp_path, class_folder):
    bad = tmp_path / "labels.csv"
    bad.write_text("filename,label\nNormal/n00.png,7\n")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddadlib.cli",
            "prepare",
            "folder",
            "--root",
            str(class_folder),
            "--labels",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("ddad prepare: error: ")
    assert "labels.csv: line 2: label '7'" in res.stderr


def test_overwrite_refused_then_allowed(class_folder, tmp_path, capsys):
    args = [
        "prepare",
        "folder",
        "--root",
        str(class_folder),
        "--out",
        str(tmp_path / "o"),
        "--size",
        "16",
        "--quiet",
    ]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a prepared dataset" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
