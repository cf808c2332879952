"""Rebuild ddadlib/data/files/kermany64.npz from the 128-pixel Kermany chest X-ray folder.

    python scripts/build_kermany_bundle.py --shared ../shared/data/kermany-cxr128 \
        --out ddadlib/data/files/kermany64.npz

The same folder gives the same bytes (fixed order, seed and archive time stamps).
"""

import argparse
from pathlib import Path

from ddadlib.data.kermany import BUNDLE, build_bundle, bundle_sha256


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--shared",
        type=Path,
        required=True,
        help="the kermany-cxr128 folder (labels.csv, NORMAL/, PNEUMONIA/)",
    )
    p.add_argument("--out", type=Path, default=BUNDLE, help=f"file to write (default {BUNDLE})")
    args = p.parse_args()
    out = build_bundle(args.shared, args.out)
    print(f"wrote {out}: {out.stat().st_size:,} bytes, sha256 {bundle_sha256(out)}")


if __name__ == "__main__":
    main()
