"""The ``ddad`` command line."""

from __future__ import annotations

import argparse
import errno
import json
import math
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ddadlib import __version__
from ddadlib.data import prepare
from ddadlib.data.dataset import PreparedDataset, is_prepared
from ddadlib.data.folder import image_files
from ddadlib.data.imaging import IMAGE_EXTENSIONS, MAX_SIZE, MIN_SIZE, read_image, resize
from ddadlib.data.splits import ar_range, format_sizes, split_sizes
from ddadlib.data.synthetic import ABNORMALITY_KINDS
from ddadlib.errors import ConfigError, DataError, TrainingError, disk_full_message
from ddadlib.fileio import atomic_write_bytes, atomic_write_json
from ddadlib.paper import (
    ASR_BATCH_SIZE,
    ASR_EPOCHS,
    ASR_LR,
    BACKBONE_TITLES,
    PAPER_BATCH_SIZE,
    PAPER_K,
    PAPER_LATENT,
    PAPER_LR,
    PAPER_UNLABELED,
    TABLE_AR,
)
from ddadlib.presets import PRESETS

# Each command imports torch, pandas, matplotlib, tqdm and the run layer inside its function, so
# that `ddad --help` and `ddad prepare` start without them.

# --- argument types, shared by every command: a bad value fails at parse time, in one line ---


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def fraction(text: str) -> float:
    """A finite number from 0 to 1 (an anomaly rate, a severity)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a learning rate)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def int_range(lo: int, hi: int | None = None, why: str = "") -> Callable[[str], int]:
    """A type for whole numbers from ``lo`` to ``hi`` (no upper bound when None); ``why`` is
    added to the message of a value above ``hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            bounds = f"at least {lo:,}" if hi is None else f"from {lo:,} to {hi:,}"
            reason = f": {why}" if why and hi is not None and value > hi else ""
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}{reason}")
        return value

    parse.__name__ = "whole number"
    return parse


nonneg_int = int_range(0)
positive_int = int_range(1)
seed_int = int_range(0, 2**32 - 1, "seeds are 32-bit")
image_size = int_range(
    MIN_SIZE,
    MAX_SIZE,
    "larger images outgrow memory and the networks, which are built for the paper's 64 px",
)
#: More samples per class than fit a readable grid take minutes and gigabytes to draw.
MAX_SAMPLES = 64
n_samples = int_range(1, MAX_SAMPLES, "a larger grid is unreadable and slow to draw")
#: Bootstrap resamples: 0 skips the AUC interval; beyond 10,000 it gets no more precise.
n_boot = int_range(
    0, 10_000, "more resamples do not make the interval more precise but cost minutes and memory"
)


def device_name(text: str) -> str:
    """auto, cpu, cuda, cuda:N or mps (whether the device is there is checked when used)."""
    if text in ("auto", "cpu", "mps", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown device {text!r}; choose auto, cpu, cuda, cuda:N or mps"
    )


def _no_file_above(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")
            return


def out_folder(text: str) -> Path:
    """A folder to write into: it may not exist yet, but must not be a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file; --out must be a folder")
    _no_file_above(path)
    return path


def out_file(text: str) -> Path:
    """A file to write: not an existing folder, and not below a file."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; --out must be a file name")
    _no_file_above(path)
    return path


class _Parser(argparse.ArgumentParser):
    """Reports a usage error in one line, ``ddad <cmd>: error: ...``, as every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _add_split_options(p: argparse.ArgumentParser, n_normal_help: str, n_test_help: str) -> None:
    p.add_argument(
        "--out", type=out_folder, required=True, help="folder to write the prepared dataset"
    )
    p.add_argument(
        "--size",
        type=image_size,
        default=64,
        help=f"square image size in pixels, {MIN_SIZE} to {MAX_SIZE} (default 64)",
    )
    p.add_argument("--n-normal", type=positive_int, default=None, help=n_normal_help)
    p.add_argument("--n-test", type=positive_int, default=None, help=n_test_help)
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the split (default 0)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a dataset already prepared in --out"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_file_options(p: argparse.ArgumentParser, on_error: str) -> None:
    p.add_argument("--root", type=Path, required=True, help="folder of the download or images")
    p.add_argument(
        "--split",
        type=Path,
        default=None,
        dest="split_file",
        help="use this split file (authors' layout; names matched by file stem) "
        "instead of sampling one",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="decoding processes (default and most: all cores)",
    )
    p.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default=on_error,
        help="an image that does not decode: stop with an error, or leave it out and "
        f"list it in skipped.csv (default {on_error})",
    )


#: The backbones of ddadlib.detectors.DETECTORS (named in the paper's vocabulary: no torch import).
BACKBONE_CHOICES = tuple(BACKBONE_TITLES)
#: The demo's data sets (the bundled real X-rays by default); its settings are the preset
#: ``demo`` (:data:`ddadlib.presets.PRESETS`), the same on every device so its numbers compare.
DEMO_SETS = {
    "kermany": "the bundled Kermany chest X-rays",
    "synthetic": "the built-in synthetic set",
}


def _add_train_options(p: argparse.ArgumentParser, epochs: int) -> None:
    p.add_argument(
        "--backbone",
        choices=BACKBONE_CHOICES,
        default="ae",
        help="reconstruction network (default ae; fanogan trains on Dn only)",
    )
    p.add_argument(
        "--k", type=positive_int, default=PAPER_K, help=f"networks per module (default {PAPER_K})"
    )
    p.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs (default {epochs})")
    p.add_argument(
        "--latent",
        type=positive_int,
        default=PAPER_LATENT,
        help=f"size of the autoencoders' latent code (default {PAPER_LATENT}, the authors')",
    )
    p.add_argument(
        "--ar", type=fraction, default=TABLE_AR, help=f"anomaly rate of Du (default {TABLE_AR})"
    )
    p.add_argument(
        "--n-unlabeled",
        type=nonneg_int,
        default=None,
        help=f"M, the size of Du (default {PAPER_UNLABELED} where the pools allow it at --ar, "
        "else the most they allow)",
    )
    p.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        help="seed of initialisation, data order and the Du draw (default 0)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=PAPER_BATCH_SIZE,
        help=f"batch size (default {PAPER_BATCH_SIZE})",
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        default=PAPER_LR,
        help=f"Adam learning rate (default {PAPER_LR:g})",
    )
    p.add_argument(
        "--device",
        type=device_name,
        default="auto",
        help="auto (CUDA, then MPS, then CPU), cuda, cuda:N, mps or cpu",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="training precision (default auto = fp32)",
    )
    _add_cpu_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars and no time estimate")


#: More workers or threads than this is a typo, not a machine.
MAX_CPU_WORKERS = 1024


def _add_cpu_options(p: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--threads`` of a training on the CPU (ddadlib.devices.cpu_plan)."""
    p.add_argument(
        "--workers",
        type=int_range(1, MAX_CPU_WORKERS),
        default=None,
        help="CPU: processes that train the networks in parallel (default: one per core; "
        "1: one process); ignored on a GPU",
    )
    p.add_argument(
        "--threads",
        type=int_range(1, MAX_CPU_WORKERS),
        default=None,
        help="CPU: torch threads per worker (default: from the cores that are free, so that "
        "workers x threads stays within the cores)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ddad`` (exposed for tests and docs)."""
    parser = _Parser(
        prog="ddad",
        description="DDAD (Dual-Distribution Discrepancy) anomaly detection for chest X-rays. "
        "For research and teaching, not for clinical use.",
    )
    parser.add_argument("--version", action="version", version=f"ddadlib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    prep = sub.add_parser(
        "prepare",
        help="turn a data source into a prepared dataset",
        description="Turn a data source into a prepared dataset folder "
        "(images.npy, manifest.csv, split.json, dataset.json).",
    )
    psub = prep.add_subparsers(dest="source", metavar="SOURCE", required=True)

    syn = psub.add_parser(
        "synthetic",
        help="the built-in synthetic chest X-ray set",
        description="Generate the built-in synthetic chest X-ray set.",
    )
    _add_split_options(
        syn,
        "Dn: known-normal training images (default 1000)",
        "test images per class (default 250)",
    )
    syn.add_argument(
        "--n-unlabeled", type=nonneg_int, default=1000, help="M, the size of Du (default 1000)"
    )
    syn.add_argument(
        "--kinds",
        default=None,
        help=f"comma-separated abnormality kinds (default: all of {','.join(ABNORMALITY_KINDS)})",
    )
    syn.add_argument(
        "--severity",
        type=fraction,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="range the severity of an abnormality is drawn from (default 0.2 1.0)",
    )
    syn.add_argument(
        "--ar",
        type=fraction,
        default=None,
        help="anomaly rate of Du; without it the pools hold M normal and M abnormal "
        "images so that any AR from 0 to 1 can be drawn later",
    )

    ker = psub.add_parser(
        "kermany",
        help="the bundled real chest X-rays (Kermany et al., CC BY 4.0)",
        description="Prepare the real chest X-rays that come with ddadlib: "
        "1,341 normal and 1,350 pneumonia images (pediatric, "
        "64x64) from Kermany, Zhang, Goldbaum et al., Mendeley "
        "Data v2, CC BY 4.0. No path and no network needed.",
    )
    _add_split_options(
        ker,
        "Dn size (default 541, which leaves 500 normal images in the pools "
        "so that M = 500 can be drawn at every AR from 0 to 1)",
        "test images per class (default 300)",
    )

    fol = psub.add_parser(
        "folder",
        help="your own images: labels.csv or class subfolders",
        description="Prepare a folder of PNG/JPEG/DICOM images, labelled by "
        "labels.csv (filename,label[,patient_id]) or by class "
        "subfolders (normal, 0, no_finding: normal; 1, "
        "abnormal and common finding names such as pneumonia: "
        "abnormal; any other name must be given with "
        "--normal-names or --abnormal-names).",
    )
    _add_split_options(
        fol,
        "Dn size (default: half the normal images left after the test set, at most 4000)",
        "test images per class (default: a quarter of the smaller class, at most 1000)",
    )
    _add_file_options(fol, on_error="fail")
    fol.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels CSV (default ROOT/labels.csv when present)",
    )
    fol.add_argument(
        "--patient-regex",
        default=None,
        metavar="REGEX",
        help="derive patient ids from the file paths below ROOT: the named group "
        "'patient', else the first group, else the whole match (e.g. "
        "'(person\\d+)' for Kermany); a file it does not match is an error",
    )
    fol.add_argument(
        "--normal-names",
        default="",
        metavar="NAMES",
        help="comma-separated class subfolders that hold normal images",
    )
    fol.add_argument(
        "--abnormal-names",
        default="",
        metavar="NAMES",
        help="comma-separated class subfolders that hold abnormal images",
    )

    for kind, title, dn in (
        ("rsna", "RSNA Pneumonia Detection Challenge", 3851),
        ("vinbigdata", "VinBigData Chest X-ray Abnormalities Detection", 4000),
    ):
        k = psub.add_parser(
            kind,
            help=f"the Kaggle {title} download",
            description=f"Prepare the unpacked Kaggle {title} download "
            "(see data_prep/README.md). Nothing is downloaded.",
        )
        _add_split_options(
            k,
            f"Dn size (default {dn}, as the authors)",
            "test images per class (default 1000, as the authors)",
        )
        _add_file_options(k, on_error="skip")

    info = sub.add_parser(
        "info",
        help="summarise a prepared dataset",
        description="Print a prepared dataset's sizes and the AR range its pools can meet.",
    )
    info.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    info.add_argument(
        "--n-unlabeled",
        type=nonneg_int,
        default=None,
        help="M to report the AR range for (default: the pools' normal size)",
    )

    sam = sub.add_parser(
        "samples",
        help="draw a grid of normal and abnormal images",
        description="Save a PNG grid of normal and abnormal images of a "
        "prepared dataset, with mask outlines or boxes.",
    )
    sam.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    sam.add_argument("--out", type=out_file, required=True, help="PNG file to write")
    sam.add_argument(
        "--n", type=n_samples, default=8, help=f"images per class, 1 to {MAX_SAMPLES} (default 8)"
    )
    sam.add_argument("--seed", type=seed_int, default=0, help="seed of the sample choice")
    sam.add_argument("--overwrite", action="store_true", help="replace an existing PNG")

    tr = sub.add_parser(
        "train",
        help="train DDAD (modules A and B) on a prepared dataset",
        description="Train module B (K networks on Dn) and module A (K networks "
        "on Dn plus a Du drawn from the pools at --ar) into a run "
        "folder. An existing run with the same settings is resumed "
        "or reused; module B is reused from a finished sibling run "
        "that differs only in AR.",
    )
    tr.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    tr.add_argument("--out", type=out_folder, required=True, help="run folder to write")
    _add_train_options(tr, epochs=250)

    ev = sub.add_parser(
        "evaluate",
        help="score a run's test split and write metrics",
        description="Score the test split (Dt) of the run's dataset, or of "
        "another prepared dataset, and write metrics.json, "
        "scores.csv and figures. The scores include r_intra / r_dual where the run has "
        "been refined (`ddad refine`); on data with pixel masks each score also gets its "
        "pixel AUROC and AUPRO, on data with boxes the pixel AUROC inside the boxes and the "
        "share of abnormal images whose map peaks inside one.",
    )
    ev.add_argument("--run", type=Path, required=True, help="finished run folder")
    ev.add_argument(
        "--data",
        type=Path,
        default=None,
        help="another prepared dataset whose test split to score (default: the "
        "run's own); results go to RUN/eval-<name>-<fingerprint>",
    )
    ev.add_argument(
        "--n-boot",
        type=n_boot,
        default=1000,
        help="bootstrap resamples for the AUC interval, 0 (none) to 10,000 (default 1000)",
    )
    ev.add_argument("--overwrite", action="store_true", help="evaluate again over earlier results")

    rf = sub.add_parser(
        "refine",
        help="train the journal's refinement (ASR-Net, DDAD-ASR) on a finished run",
        description="Train ASR-Net (Cai et al., Medical Image Analysis 2023) on a finished "
        "DDAD run: a three-layer CNN that turns the intra-discrepancy map (--inputs intra: "
        "R_intra) or the inter- and intra-discrepancy maps (--inputs dual: R_dual) into an "
        "anomaly map. It trains on the run's normal images Dn only, half of them with a "
        "synthetic anomaly (a blended square patch of another normal image) each epoch; focal "
        "loss, Adam with betas (0.5, 0.999). The network of the last epoch is kept: nothing is "
        "selected on the test set. It goes into RUN/refine-INPUTS; the same command resumes "
        "a stopped refinement or reuses a finished one. Then `ddad evaluate --run RUN` "
        "reports r_intra / r_dual beside the other scores.",
    )
    rf.add_argument("--run", type=Path, required=True, help="finished DDAD run folder")
    rf.add_argument(
        "--inputs",
        choices=("intra", "dual"),
        default="dual",
        help="intra (R_intra) or inter + intra (R_dual; the default)",
    )
    rf.add_argument(
        "--epochs",
        type=positive_int,
        default=ASR_EPOCHS,
        help=f"epochs (default {ASR_EPOCHS}, the journal's)",
    )
    rf.add_argument(
        "--batch-size",
        type=int_range(2),
        default=ASR_BATCH_SIZE,
        help=f"batch size (default {ASR_BATCH_SIZE})",
    )
    rf.add_argument(
        "--lr", type=positive_float, default=ASR_LR, help=f"Adam learning rate (default {ASR_LR:g})"
    )
    rf.add_argument(
        "--seed",
        type=seed_int,
        default=None,
        help="seed of initialisation, data order and synthetic anomalies (default: the run's)",
    )
    rf.add_argument(
        "--device", type=device_name, default="auto", help="auto (CUDA, MPS, CPU), cuda, mps or cpu"
    )
    rf.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a refinement of other settings (or train a finished one again)",
    )
    rf.add_argument("--quiet", action="store_true", help="no progress bars")

    sc = sub.add_parser(
        "score",
        help="score new, unlabeled images with a trained run",
        description="Write a CSV of the scores (rec, rec_ensemble, intra, inter) "
        "of every image (PNG/JPEG/DICOM) under a folder, each with "
        "its percentile among the run's normal test images (*_pct) "
        "and its flag at 95% specificity (*_flag) when the run has "
        "been evaluated (`ddad evaluate`).",
    )
    sc.add_argument("--run", type=Path, required=True, help="finished run folder")
    sc.add_argument(
        "--images", type=Path, required=True, help="folder of images (searched recursively)"
    )
    sc.add_argument("--out", type=Path, required=True, help="CSV file to write")
    sc.add_argument("--overwrite", action="store_true", help="replace an existing CSV")

    demo = sub.add_parser(
        "demo",
        help="the main job: DDAD end to end on the bundled data",
        description="Prepare the bundled real chest X-rays (Kermany et al., "
        "CC BY 4.0: Dn 541 normal images; pools of 500 normal and "
        "1,050 pneumonia; test 300 + 300), train DDAD on them (AE "
        "backbone, K = 3, AR 0.6, Du of 500), evaluate it and draw "
        "the figures: minutes on a laptop's CPU. --data "
        "synthetic runs it on the built-in synthetic set instead "
        "(Dn 500; pools 500 + 500; test 250 + 250; a mild lobar "
        "pneumonia). A folder is reused only by the same demo.",
    )
    demo.add_argument(
        "--data",
        choices=tuple(DEMO_SETS),
        default="kermany",
        help="kermany (default): the bundled real chest X-rays; synthetic: the "
        "built-in synthetic set",
    )
    demo.add_argument(
        "--out",
        type=out_folder,
        default=Path("ddad-demo"),
        help="output folder (default ./ddad-demo)",
    )
    demo.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"training epochs (default {PRESETS['demo'].epochs}, the same on every device)",
    )
    demo.add_argument(
        "--backbone", choices=BACKBONE_CHOICES, default="ae", help="backbone (default ae)"
    )
    demo.add_argument("--seed", type=seed_int, default=0, help="seed (default 0)")
    demo.add_argument(
        "--device", type=device_name, default="auto", help="auto (CUDA, MPS, CPU), cuda, mps or cpu"
    )
    _add_cpu_options(demo)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    rp = sub.add_parser(
        "reproduce",
        help="the paper's Tables 1 and 2, AR ablation and histograms",
        description="Train and evaluate every run of the paper's experiments on a prepared "
        "dataset (Table 1: AE, MemAE, AE-U at AR 0.6; Table 2: adds f-AnoGAN; the AR "
        "ablation 0 to 1 with the AE; the score histograms), over several seeds, and "
        "write results.md (ours beside the paper's), results.csv and figures. Finished "
        "runs are reused; run the same command again to resume a stopped one.",
    )
    rp.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    rp.add_argument(
        "--out", type=out_folder, required=True, help="output folder (runs and results)"
    )
    rp.add_argument(
        "--protocol",
        default="cpu",
        choices=("paper", "cpu", "quick"),
        help="a preset (paper: for a GPU; cpu, the default; quick: a smoke test): "
        + "; ".join(PRESETS[p].describe() for p in ("paper", "cpu", "quick")),
    )
    rp.add_argument(
        "--experiments",
        nargs="+",
        default=None,
        choices=("table1", "table2", "ablation", "histograms", "refine"),
        help="which experiments (default: the paper's four; refine, asked for by name: "
        "R_intra and R_dual, the journal's refinement, of the AE and AE-U runs at AR 0.6, for "
        "the protocol's refine epochs: quick 1, cpu 5, paper 100; results.md shows the "
        "experiments of the call, so name all that it should show)",
    )
    rp.add_argument(
        "--backbones",
        nargs="+",
        default=None,
        choices=BACKBONE_CHOICES,
        help="only these rows of Tables 1 and 2 (default all; e.g. fanogan to add Table 2's "
        "baseline to Table 1's runs); the AR ablation is the AE's",
    )
    rp.add_argument(
        "--seeds",
        type=seed_int,
        nargs="+",
        default=None,
        help="seeds instead of the protocol's (paper and cpu: 0 1 2; quick: 0)",
    )
    rp.add_argument(
        "--epochs", type=positive_int, default=None, help="epochs instead of the protocol's"
    )
    rp.add_argument(
        "--fanogan-epochs",
        type=positive_int,
        default=None,
        help="f-AnoGAN epochs instead of the protocol's",
    )
    rp.add_argument(
        "--n-boot",
        type=n_boot,
        default=1000,
        help="bootstrap resamples for the AUC intervals, 0 to 10,000 (default 1000)",
    )
    rp.add_argument(
        "--device", type=device_name, default="auto", help="auto (CUDA, MPS, CPU), cuda, mps or cpu"
    )
    rp.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto (float32) or bf16",
    )
    rp.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: tabulate the runs finished so far (e.g. while another "
        "process trains them)",
    )
    rp.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="runs at once, in local processes of one torch thread each (default 1: one "
        "after the other in this process); at most the CPU cores",
    )
    rp.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help='local (default; see --jobs) or ray: each run a Ray task (pip install "ddadlib[ray]")',
    )
    rp.add_argument(
        "--ray-address",
        default=None,
        help="the Ray cluster to submit to (default: a new local Ray); its nodes must see "
        "--out and --data at the same paths",
    )
    rp.add_argument(
        "--ray-cpus-per-task",
        type=positive_float,
        default=None,
        help="CPUs (and torch threads) of each Ray task (default 1)",
    )
    rp.add_argument(
        "--ray-gpus-per-task",
        type=fraction,
        default=None,
        help="GPUs of each Ray task, 0 to 1 (default 0; 0.25: four runs share a GPU)",
    )
    rp.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _cmd_prepare(args: argparse.Namespace) -> None:
    # A failed preparation removes the folder it created (an interrupted one keeps it: the next
    # run resumes from the images decoded so far).
    created = next((p for p in reversed((args.out, *args.out.parents)) if not p.exists()), None)
    try:
        _prepare_source(args)
    except Exception:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _prepare_source(args: argparse.Namespace) -> None:
    common = dict(
        size=args.size,
        n_normal=args.n_normal,
        n_test=args.n_test,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    if args.source == "synthetic":
        kinds = args.kinds.split(",") if args.kinds else None
        prepare.prepare_synthetic(
            args.out,
            n_unlabeled=args.n_unlabeled,
            ar=args.ar,
            kinds=kinds,
            severity=args.severity,
            **common,
        )
        return
    if args.source == "kermany":
        prepare.prepare_kermany(args.out, **common)
        return
    common.update(
        split_file=args.split_file,
        workers=args.workers,
        on_error=args.on_error,
        progress=not args.quiet,
    )
    if args.source == "folder":
        prepare.prepare_folder(
            args.root,
            args.out,
            labels=args.labels,
            patient_regex=args.patient_regex,
            normal_names=[n for n in args.normal_names.split(",") if n],
            abnormal_names=[n for n in args.abnormal_names.split(",") if n],
            **common,
        )
    else:
        prepare.prepare_kaggle(args.source, args.root, args.out, **common)


def _cmd_info(args: argparse.Namespace) -> None:
    ds = PreparedDataset.load(args.data, mmap=True)
    s = split_sizes(ds.split)
    print(f"{ds.root}: {len(ds):,} images of {ds.size}x{ds.size}, source {ds.info.get('source')}")
    print(f"  {format_sizes(ds.split)}")
    m = args.n_unlabeled if args.n_unlabeled is not None else s["pool_normal"]
    r = ar_range(ds.split, m)
    if r is None:
        print(f"  M = {m:,} unlabeled images: more than the pools hold")
    else:
        print(f"  M = {m:,} unlabeled images: AR from {r[0]:.4g} to {r[1]:.4g}")
    about = ds.info.get("data") or {}
    if about.get("licence"):
        print(
            f"  data: {about.get('name')}; licence {about['licence']}; credit: "
            f"{about.get('credit')}"
        )


def _cmd_samples(args: argparse.Namespace) -> None:
    from ddadlib.plots import sample_grid_of, save_figure

    if args.out.exists() and not args.overwrite:
        raise DataError(f"{args.out}: exists; pass --overwrite to replace it")
    ds = PreparedDataset.load(args.data)
    fig = sample_grid_of(ds, n_per_class=args.n, seed=args.seed)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


def _cmd_train(args: argparse.Namespace) -> None:
    from ddadlib.runs.config import run_config
    from ddadlib.runs.train import train_run

    cfg = run_config(
        args.data,
        backbone=args.backbone,
        k=args.k,
        epochs=args.epochs,
        ar=args.ar,
        n_unlabeled=args.n_unlabeled,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        latent=args.latent,
        device=args.device,
        precision=args.precision,
    )
    train_run(args.out, cfg, progress=not args.quiet, workers=args.workers, threads=args.threads)
    print(f"next: ddad evaluate --run {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from ddadlib.runs.evaluate import evaluate_run
    from ddadlib.scoring.metrics import format_metrics

    metrics = evaluate_run(args.run, args.data, n_boot=args.n_boot, overwrite=args.overwrite)
    print(format_metrics(metrics))


def _cmd_refine(args: argparse.Namespace) -> None:
    from ddadlib.runs.refine import refine_run

    refine_run(
        args.run,
        args.inputs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )


def _cmd_score(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from ddadlib.runs.config import FLOAT_FORMAT
    from ddadlib.runs.run import Run
    from ddadlib.runs.score import score_images

    if args.out.is_dir():
        raise DataError(f"{args.out}: is a folder; --out takes the path of the CSV file to write")
    if args.out.exists() and not args.overwrite:
        raise DataError(f"{args.out}: exists; pass --overwrite to replace it")
    if not args.images.is_dir():
        raise DataError(f"{args.images}: no such folder")
    files, links = image_files(args.images)
    if links:
        print(
            f"{args.images}: left out {links} symbolic link(s) that point outside the folder "
            "or to folders"
        )
    if not files:
        raise DataError(f"{args.images}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    size = Run(args.run).config.size

    def read(p: Path) -> np.ndarray:
        try:
            return resize(read_image(p), size)
        except Image.DecompressionBombError as exc:
            raise DataError(f"{p}: too large to read safely ({exc})") from None

    images = np.stack([read(p) for p in tqdm(files, desc="reading")])
    frame = score_images(args.run, images, [str(p.relative_to(args.images)) for p in files])
    atomic_write_bytes(args.out, frame.to_csv(index=False, float_format=FLOAT_FORMAT).encode())
    print(f"wrote {args.out}: {len(frame):,} images scored")
    cuts = frame.attrs["thresholds"]
    if cuts:
        flagged = ", ".join(
            f"{n} {int(frame[f'{n}_flag'].sum())} (above {v:.6g})" for n, v in cuts.items()
        )
        print(
            f"flagged at 95% specificity of the run's evaluation: {flagged} of {len(frame):,}; "
            "*_pct: percentile among its normal test images"
        )
    else:
        print(
            f"{args.run}: not evaluated, so the CSV holds raw scores only (no *_pct "
            f"percentiles, no *_flag); run `ddad evaluate --run {args.run}` first to get them"
        )


def _demo_folder(out: Path, record: dict) -> None:
    """Refuse an output folder that holds anything but this same demo; mark it as this demo."""

    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    marker = out / "demo.json"
    if marker.is_file():
        try:
            old = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{marker}: cannot read it ({exc}); choose another --out") from None
        diff = [f"{k}: {old.get(k)} -> {v}" for k, v in record.items() if old.get(k) != v]
        if diff:
            raise DataError(
                f"{out}: holds a demo with other settings ({'; '.join(diff)}); choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise DataError(
            f"{out}: folder exists and holds files that are not from this demo (no "
            "demo.json); choose another --out"
        )
    else:
        atomic_write_json(marker, record)


def _cmd_demo(args: argparse.Namespace) -> None:
    from ddadlib.detectors import make_detector
    from ddadlib.devices import pick_device
    from ddadlib.plots import sample_grid_of, save_figure
    from ddadlib.runs.config import run_config
    from ddadlib.runs.evaluate import evaluate_run
    from ddadlib.runs.grid import run_name
    from ddadlib.runs.train import train_run
    from ddadlib.scoring.metrics import format_metrics

    t0 = time.perf_counter()
    demo = PRESETS["demo"]
    epochs = args.epochs if args.epochs is not None else demo.epochs
    # Bad settings fail before any image is prepared.
    make_detector(args.backbone, epochs=epochs)
    pick_device(args.device)
    _demo_folder(
        args.out,
        {"demo": args.data, "backbone": args.backbone, "epochs": epochs, "seed": args.seed},
    )
    data = args.out / "data"
    if is_prepared(data):
        print(f"{data}: using {DEMO_SETS[args.data]} prepared earlier")
    elif args.data == "kermany":
        prepare.prepare_kermany(data, overwrite=True)
    else:
        prepare.prepare_synthetic(data, overwrite=True, **demo.synthetic())
    grid = args.out / "samples.png"
    if not grid.exists():
        save_figure(sample_grid_of(PreparedDataset.load(data)), grid)
        print(f"wrote {grid}")
    cfg = run_config(
        data,
        backbone=args.backbone,
        epochs=epochs,
        ar=demo.ar,
        n_unlabeled=demo.m,
        seed=args.seed,
        device=args.device,
        precision="fp32",
        **demo.training(),
    )
    run = args.out / run_name(args.backbone, demo.ar, args.seed, epochs, cfg.k, cfg.n_unlabeled)
    train_run(run, cfg, progress=not args.quiet, workers=args.workers, threads=args.threads)
    metrics = evaluate_run(run, out=args.out)
    print(
        f"\nDDAD ({args.backbone}) on {DEMO_SETS[args.data]}, AR {demo.ar}, "
        f"test {cfg.test_size[0]} normal + {cfg.test_size[1]} abnormal "
        f"({epochs} epochs, K = {cfg.k}, seed {args.seed}, {cfg.device}):"
    )
    print(format_metrics(metrics))
    print(
        f"\nfigures: {args.out / 'histograms.png'}, {args.out / 'maps.png'}, {grid}; "
        f"run folder {run}; {time.perf_counter() - t0:.0f} s in all"
    )


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from ddadlib.runs.executors import make_executor
    from ddadlib.runs.reproduce import PAPER_EXPERIMENTS, reproduce

    executor = make_executor(
        args.executor,
        jobs=args.jobs,
        address=args.ray_address,
        cpus_per_task=args.ray_cpus_per_task,
        gpus_per_task=args.ray_gpus_per_task,
    )
    reproduce(
        args.data,
        args.out,
        args.protocol,
        experiments=args.experiments or PAPER_EXPERIMENTS,
        seeds=args.seeds,
        epochs=args.epochs,
        fanogan_epochs=args.fanogan_epochs,
        backbones=args.backbones,
        device=args.device,
        precision=args.precision,
        n_boot=args.n_boot,
        progress=not args.quiet,
        report_only=args.report_only,
        executor=executor,
        command="ddad " + shlex.join(args.argv),
    )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ddad`` console script."""
    args = build_parser().parse_args(argv)
    if argv is None:  # as a program: `kill` stops it as Ctrl-C does (runs resume, tables kept)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handlers = {
        "prepare": _cmd_prepare,
        "info": _cmd_info,
        "samples": _cmd_samples,
        "train": _cmd_train,
        "evaluate": _cmd_evaluate,
        "refine": _cmd_refine,
        "score": _cmd_score,
        "demo": _cmd_demo,
        "reproduce": _cmd_reproduce,
    }
    try:
        handlers[args.command](args)
    except (ConfigError, DataError, TrainingError) as exc:
        print(f"ddad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"ddad {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"ddad {args.command}: error: {disk_full_message(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
