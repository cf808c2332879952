"""Training throughput: ddadlib's ensemble training against the authors' design.

Prints images per second per member for

- ``ours``: ``ddadlib.models.ensemble.train_ensemble`` on the path it picks for the device
  (CPU: members one after the other, channels-last; CUDA: the K members vectorised);
- ``sequential fp32``: the K members one after the other, float32, plain memory layout, data
  already on the device;
- ``vectorised`` and ``bf16``: the other paths, for reference;
- ``authors' design``: one member at a time, the images kept as 64x64 PIL images and turned
  into tensors item by item every epoch by a DataLoader with one worker, as the authors' code does;

on the CPU and, when there is one, on the GPU; with the ratios to the authors' design, and the
time the paper's Table 1 protocol (3 backbones, modules A and B, K = 3, 250 epochs, RSNA sizes)
would take at that speed.

Then, side by side in the same run, **a whole run's training** on the CPU: ddadlib's
(modules B on Dn and A on Dn + Du together, K = 3, fp32, the members in parallel worker
processes as :func:`ddadlib.devices.cpu_plan` chooses them) against the authors' design (the six
members one after the other through a DataLoader with one worker, torch's default threads: one
per core), on the same images and epochs; it prints the ratio, and the machine's load average
(on a shared machine both suffer, the authors' design with its several threads far more;
``--authors-threads 1`` gives it one thread). ddadlib's time includes starting its worker
processes (seconds; more on a busy machine), which a run of many epochs amortises.

Run: ``python benchmarks/bench_training.py [--images 1024] [--epochs 1] [--dn 512 --du 512
--run-epochs 5] [--skip-paths]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from ddadlib.data.synthetic import generate_synthetic
from ddadlib.models.backbones import build_backbone
from ddadlib.models.ensemble import EnsembleConfig, train_ensemble

#: Member-images of Table 1 on RSNA: 3 backbones x K = 3 x 250 epochs x (|Dn| + |Dn + Du|).
TABLE1_MEMBER_IMAGES = 3 * 3 * 250 * (3851 + 3851 + 4000)


class PILDataset(torch.utils.data.Dataset):
    """Preloaded PIL images, turned into normalised tensors one by one on every access."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = [Image.fromarray(im) for im in images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(self.images[i], dtype=np.float32) / 255.0)[None]
        return (x - 0.5) / 0.5


def authors_design(images: np.ndarray, k: int, epochs: int, device: torch.device) -> float:
    """Seconds to train k members one at a time through a DataLoader with one worker."""
    loader = torch.utils.data.DataLoader(
        PILDataset(images), batch_size=64, shuffle=True, num_workers=1, drop_last=False
    )
    t0 = time.perf_counter()
    for _ in range(k):
        net = build_backbone("ae").to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.5, 0.999))
        for _ in range(epochs):
            for x in loader:
                x = x.to(device)
                loss = net.loss(x, net(x))
                opt.zero_grad()
                loss.backward()
                opt.step()
    _sync(device)
    return time.perf_counter() - t0


def plain_sequential(images: torch.Tensor, k: int, epochs: int) -> float:
    """Seconds for k members one after the other, float32, default layout, data on device."""
    t0 = time.perf_counter()
    n = images.shape[0]
    for m in range(k):
        net = build_backbone("ae").to(images.device).train()
        opt = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.5, 0.999))
        g = torch.Generator().manual_seed(m)
        for _ in range(epochs):
            order = torch.randperm(n, generator=g).to(images.device)
            for s in range(0, n, 64):
                x = images[order[s : s + 64]]
                loss = net.loss(x, net(x))
                opt.zero_grad()
                loss.backward()
                opt.step()
    _sync(images.device)
    return time.perf_counter() - t0


def ours(
    images: torch.Tensor,
    k: int,
    epochs: int,
    vectorised: bool | None = None,
    precision: str = "fp32",
) -> float:
    cfg = EnsembleConfig(k=k, epochs=epochs, precision=precision)
    t0 = time.perf_counter()
    train_ensemble(images, cfg, vectorised=vectorised, progress=False)
    _sync(images.device)
    return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(device: torch.device, n: int, k: int, epochs: int) -> None:
    raw = generate_synthetic(n, size=64, seed=0).images
    images = torch.from_numpy(raw).float().div(127.5).sub(1.0)[:, None].to(device)
    ours(images[:128], k, 1)  # warm-up (allocator, kernels)
    work = n * k * epochs
    rows = []
    default_vec = device.type == "cuda"
    rows.append(
        (
            "ours (" + ("vectorised" if default_vec else "sequential, channels-last") + ", fp32)",
            ours(images, k, epochs),
        )
    )
    rows.append(("sequential fp32 (plain)", plain_sequential(images, k, epochs)))
    rows.append(
        (
            "vectorised fp32" if not default_vec else "sequential, ddadlib path",
            ours(images, k, epochs, vectorised=not default_vec),
        )
    )
    rows.append(("ours, bf16 autocast", ours(images, k, epochs, precision="bf16")))
    rows.append(("authors' design", authors_design(raw, k, epochs, device)))
    base = work / rows[-1][1]
    print(
        f"\n{device.type}: {n} images of 64x64, K = {k}, {epochs} epoch(s), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(f"{'path':<42}{'img/s/member':>14}{'vs authors':>12}{'Table 1 (est.)':>16}")
    for name, secs in rows:
        rate = work / secs
        table1 = TABLE1_MEMBER_IMAGES / rate
        print(f"{name:<42}{rate / k:>14.0f}{rate / base:>11.2f}x{_fmt(table1):>16}")


def full_run(dn: int, du: int, k: int, epochs: int, authors_threads: int | None = None) -> None:
    """A whole run's training (modules B and A) by ddadlib and by the authors' design (with
    ``authors_threads`` torch threads; default torch's: one per core)."""
    import os

    from ddadlib.devices import available_cores, cpu_plan
    from ddadlib.models.parallel import ModuleJob, train_ensembles

    raw = generate_synthetic(dn + du, size=64, seed=1).images
    images = torch.from_numpy(raw).float().div(127.5).sub(1.0)[:, None]
    plan = cpu_plan(tasks=2 * k)  # as for a run of many epochs (a short one gets 1 worker)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nwhole run on the CPU: module B on Dn {dn:,}, module A on Dn + Du {dn + du:,}, "
        f"K = {k}, {epochs} epoch(s), fp32; 64x64; load average {load:.1f} on "
        f"{available_cores()} cores at the start"
    )
    jobs = [
        ModuleJob(images[:dn], EnsembleConfig(k=k, epochs=epochs, module="B")),
        ModuleJob(images, EnsembleConfig(k=k, epochs=epochs, module="A")),
    ]
    t0 = time.perf_counter()
    train_ensembles(jobs, workers=plan.workers, threads=plan.threads, progress=False)
    ours_s = time.perf_counter() - t0
    print(f"  ddadlib ({plan.describe().split(': ', 1)[1].split(' (')[0]}): {ours_s:.1f} s")
    old = torch.get_num_threads()
    theirs_threads = authors_threads or available_cores()  # torch's default: one per core
    torch.set_num_threads(theirs_threads)
    try:
        t0 = time.perf_counter()
        authors_design(raw[:dn], k, epochs, torch.device("cpu"))
        authors_design(raw, k, epochs, torch.device("cpu"))
        theirs_s = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    print(
        f"  authors' design ({theirs_threads} threads, DataLoader with 1 worker): {theirs_s:.1f} s"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"  speed-up: {theirs_s / ours_s:.2f}x the authors' design "
        f"(load average {load:.1f} at the end)"
    )


def _fmt(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--devices", nargs="*", default=None, help="default: cpu and cuda if present")
    p.add_argument("--dn", type=int, default=512, help="whole run: Dn (default 512)")
    p.add_argument("--du", type=int, default=512, help="whole run: Du (default 512)")
    p.add_argument("--run-epochs", type=int, default=5, help="whole run: epochs (default 5)")
    p.add_argument(
        "--skip-paths", action="store_true", help="only the whole-run comparison on the CPU"
    )
    p.add_argument(
        "--authors-threads",
        type=int,
        default=None,
        help="whole run: torch threads of the authors' design (default torch's, one per core)",
    )
    args = p.parse_args()
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(
        "img/s/member: images per second per ensemble member (K members train K times the "
        "images); 'Table 1 (est.)' extrapolates that rate to the paper's Table 1 protocol "
        f"({TABLE1_MEMBER_IMAGES / 1e6:.1f}M member-images)"
    )
    if not args.skip_paths:
        for d in devices:
            bench(torch.device(d), args.images, args.k, args.epochs)
    full_run(args.dn, args.du, args.k, args.run_epochs, args.authors_threads)


if __name__ == "__main__":
    main()
