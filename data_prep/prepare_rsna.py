"""Prepare the rsna data: the same as `ddad prepare rsna`; see data_prep/README.md.

Run: python data_prep/prepare_rsna.py --root DIR --out DIR [options]  (--help lists them)
"""

import sys

from ddadlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "rsna", *sys.argv[1:]]))
