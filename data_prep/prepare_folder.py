"""Prepare the folder data: the same as `ddad prepare folder`; see data_prep/README.md.

Run: python data_prep/prepare_folder.py --root DIR --out DIR [options]  (--help lists them)
"""

import sys

from ddadlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "folder", *sys.argv[1:]]))
