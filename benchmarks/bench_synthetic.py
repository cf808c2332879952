"""How fast the built-in synthetic chest X-ray generator is.

Run: python benchmarks/bench_synthetic.py  [--quick]
"""

from __future__ import annotations

import argparse
import time

from ddadlib.data import synthetic
from ddadlib.data.synthetic import generate_synthetic


def bench(n: int, size: int) -> float:
    """Seconds to generate ``n`` images of ``size`` x ``size`` (half abnormal); prints a line."""
    t = time.perf_counter()
    d = generate_synthetic(n, size=size, abnormal_fraction=0.5, seed=0)
    dt = time.perf_counter() - t
    assert d.images.shape == (n, size, size)
    print(f"{n:>6,} images at {size}x{size}: {dt:6.2f} s, {n / dt:8,.0f} images/s")
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the images")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"synthetic chest X-rays, {synthetic._n_threads()} rendering thread(s)")
    generate_synthetic(8, size=64)  # warm up (imports, caches)
    bench(10_000 // scale, 64)
    bench(1_000 // scale, 128)
    bench(1_000 // scale, 256)


if __name__ == "__main__":
    main()
