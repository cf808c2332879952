"""The ``ddad`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ddadlib import __version__
from ddadlib.errors import DataError


def _add_split_options(p: argparse.ArgumentParser, n_normal_help: str, n_test_help: str) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder to write the prepared dataset")
    p.add_argument("--size", type=int, default=64, help="square image size in pixels (default 64)")
    p.add_argument("--n-normal", type=int, default=None, help=n_normal_help)
    p.add_argument("--n-test", type=int, default=None, help=n_test_help)
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset already prepared in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_file_options(p: argparse.ArgumentParser, on_error: str) -> None:
    p.add_argument("--root", type=Path, required=True, help="folder of the download or images")
    p.add_argument("--split", type=Path, default=None, dest="split_file",
                   help="use this split file (authors' layout; names matched by file stem) "
                        "instead of sampling one")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: all cores)")
    p.add_argument("--on-error", choices=("fail", "skip"), default=on_error,
                   help="an image that does not decode: stop with an error, or leave it out and "
                        f"list it in skipped.csv (default {on_error})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ddad`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="ddad",
        description="DDAD (Dual-Distribution Discrepancy) anomaly detection for chest X-rays. "
                    "For research and teaching, not for clinical use.")
    parser.add_argument("--version", action="version", version=f"ddadlib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    prep = sub.add_parser("prepare", help="turn a data source into a prepared dataset",
                          description="Turn a data source into a prepared dataset folder "
                                      "(images.npy, manifest.csv, split.json, dataset.json).")
    psub = prep.add_subparsers(dest="source", metavar="SOURCE", required=True)

    syn = psub.add_parser("synthetic", help="the built-in synthetic chest X-ray set",
                          description="Generate the built-in synthetic chest X-ray set.")
    _add_split_options(syn, "Dn: known-normal training images (default 1000)",
                       "test images per class (default 250)")
    syn.add_argument("--n-unlabeled", type=int, default=1000,
                     help="M, the size of Du (default 1000)")
    syn.add_argument("--ar", type=float, default=None,
                     help="anomaly rate of Du; without it the pools hold M normal and M abnormal "
                          "images so that any AR from 0 to 1 can be drawn later")

    fol = psub.add_parser("folder", help="your own images: labels.csv or class subfolders",
                          description="Prepare a folder of PNG/JPEG/DICOM images, labelled by "
                                      "labels.csv (filename,label[,patient_id]) or by class "
                                      "subfolders (normal, 0, no_finding: normal; others: "
                                      "abnormal).")
    _add_split_options(fol, "Dn size (default: half the normal images left after the test set, "
                            "at most 4000)",
                       "test images per class (default: a quarter of the smaller class, at most "
                       "1000)")
    _add_file_options(fol, on_error="fail")
    fol.add_argument("--labels", type=Path, default=None,
                     help="labels CSV (default ROOT/labels.csv when present)")

    for kind, title, dn in (("rsna", "RSNA Pneumonia Detection Challenge", 3851),
                            ("vinbigdata", "VinBigData Chest X-ray Abnormalities Detection", 4000)):
        k = psub.add_parser(kind, help=f"the Kaggle {title} download",
                            description=f"Prepare the unpacked Kaggle {title} download "
                                        "(see data_prep/README.md). Nothing is downloaded.")
        _add_split_options(k, f"Dn size (default {dn}, as the authors)",
                           "test images per class (default 1000, as the authors)")
        _add_file_options(k, on_error="skip")

    info = sub.add_parser("info", help="summarise a prepared dataset",
                          description="Print a prepared dataset's sizes and the AR range its "
                                      "pools can meet.")
    info.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    info.add_argument("--n-unlabeled", type=int, default=None,
                      help="M to report the AR range for (default: the pools' normal size)")

    sam = sub.add_parser("samples", help="draw a grid of normal and abnormal images",
                         description="Save a PNG grid of normal and abnormal images of a "
                                     "prepared dataset, with mask outlines or boxes.")
    sam.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    sam.add_argument("--out", type=Path, required=True, help="PNG file to write")
    sam.add_argument("--n", type=int, default=8, help="images per class (default 8)")
    sam.add_argument("--seed", type=int, default=0, help="seed of the sample choice")
    sam.add_argument("--overwrite", action="store_true", help="replace an existing PNG")

    demo = sub.add_parser("demo", help="the main job on the built-in synthetic data",
                          description="Run DDAD end to end on the built-in synthetic set.")
    demo.add_argument("--out", type=Path, default=Path("ddad-demo"),
                      help="output folder (default ./ddad-demo)")
    return parser


def _cmd_prepare(args: argparse.Namespace) -> None:
    from ddadlib import prepare

    common = dict(size=args.size, n_normal=args.n_normal, n_test=args.n_test, seed=args.seed,
                  overwrite=args.overwrite)
    if args.source == "synthetic":
        prepare.prepare_synthetic(args.out, n_unlabeled=args.n_unlabeled, ar=args.ar, **common)
        return
    common.update(split_file=args.split_file, workers=args.workers, on_error=args.on_error,
                  progress=not args.quiet)
    if args.source == "folder":
        prepare.prepare_folder(args.root, args.out, labels=args.labels, **common)
    else:
        prepare.prepare_kaggle(args.source, args.root, args.out, **common)


def _cmd_info(args: argparse.Namespace) -> None:
    from ddadlib.dataset import PreparedDataset
    from ddadlib.splits import ar_range, format_sizes, split_sizes

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


def _cmd_samples(args: argparse.Namespace) -> None:
    from ddadlib.dataset import PreparedDataset
    from ddadlib.plots import save_figure, sample_grid_of

    if args.out.exists() and not args.overwrite:
        raise DataError(f"{args.out}: exists; pass --overwrite to replace it")
    ds = PreparedDataset.load(args.data)
    fig = sample_grid_of(ds, n_per_class=args.n, seed=args.seed)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from ddadlib import prepare
    from ddadlib.dataset import PreparedDataset, is_prepared
    from ddadlib.plots import save_figure, sample_grid_of

    data = args.out / "data"
    if is_prepared(data):
        print(f"{data}: using the synthetic set prepared earlier")
    else:
        prepare.prepare_synthetic(data)
    grid = args.out / "samples.png"
    if not grid.exists():
        save_figure(sample_grid_of(PreparedDataset.load(data)), grid)
        print(f"wrote {grid}")
    print("\nThe demo's training and scoring (modules A and B, intra and inter discrepancy) are "
          "not implemented yet: they arrive with the 'DDAD core' milestone. This run prepared "
          f"the built-in data in {data} and drew sample images in {grid}.")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ddad`` console script."""
    args = build_parser().parse_args(argv)
    handlers = {"prepare": _cmd_prepare, "info": _cmd_info, "samples": _cmd_samples,
                "demo": _cmd_demo}
    try:
        handlers[args.command](args)
    except DataError as exc:
        print(f"ddad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddad {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
