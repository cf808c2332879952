"""Prepare the vinbigdata data: the same as `ddad prepare vinbigdata`; see data_prep/README.md.

Run: python data_prep/prepare_vinbigdata.py --root DIR --out DIR [options]  (--help lists them)
"""

import sys

from ddadlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "vinbigdata", *sys.argv[1:]]))
