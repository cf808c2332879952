"""How fast prepared datasets load and folder images decode.

Run: python benchmarks/bench_data.py  (uses ../shared/data/kermany-cxr128 when present)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ddadlib.data.dataset import PreparedDataset, write_dataset
from ddadlib.data.prepare import prepare_folder
from ddadlib.data.splits import make_split

KERMANY = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kermany-cxr128"


def bench_load(n: int = 10_000, size: int = 64) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % 3 == 0).astype(int)
    ids = [f"img{i:06d}.png" for i in range(n)]
    manifest = pd.DataFrame(
        {
            "id": ids,
            "label": labels,
            "patient_id": "",
            "finding": "",
            "md5": "",
            "orig_height": size,
            "orig_width": size,
            "boxes": "[]",
        }
    )
    split = make_split(ids, labels, n_normal=n // 3, n_test=n // 10, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(tmp, images, manifest, split, {"source": "bench"})
        t = time.perf_counter()
        ds = PreparedDataset.load(tmp)
        _ = ds.images.sum(), ds.part("normal")
        dt = time.perf_counter() - t
    print(f"load a prepared set of {n:,} images at {size}x{size}: {dt:.2f} s")


def bench_decode() -> None:
    if not KERMANY.is_dir():
        print(f"decode: skipped, {KERMANY} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, None):
            t = time.perf_counter()
            prepare_folder(
                KERMANY,
                Path(tmp) / f"w{workers}",
                workers=workers,
                progress=False,
                log=lambda s: None,
            )
            dt = time.perf_counter() - t
            print(
                f"prepare folder (5,216 PNG, 128 -> 64), workers={workers or 'all cores'}: "
                f"{dt:.2f} s, {5216 / dt:,.0f} images/s"
            )


if __name__ == "__main__":
    bench_load()
    bench_decode()
