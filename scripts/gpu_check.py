"""One prepared check of ddadlib on a GPU: correctness first, then the speed of Table 1's protocol.

Run by ``scripts/gpu_check.sh`` (at most 8 minutes, everything into one folder): ``python
scripts/gpu_check.py --out DIR [--device cuda] [--epochs 250] [--tiny] [--time-limit 450]``.

1. Correctness on the device: the vectorised path (``vmap`` over ``functional_call``) against
   the K members one after the other, float32 with TF32 off (max weight difference), and a quick
   ``ddad prepare synthetic`` + ``ddad train`` + ``ddad evaluate`` through the command line.
2. Speed of one Table 1 protocol on an RSNA-size synthetic set (Dn 3,851, Du 4,000, test 2,000,
   64 px; AE, MemAE and AE-U; K = 3; modules A and B; 250 epochs): seconds per epoch with the
   images resident on the device and the members vectorised, in fp32 and bf16 autocast, with
   ``torch.compile(mode="reduce-overhead")`` (CUDA graphs; falls back and says why when it
   fails), and the three backbones' runs at once on one device (separate processes); each with
   the projected total, and the measured total when the best one fits the time left.

``--device cpu --epochs 1 --tiny`` runs every step on tiny sizes (``tests/test_gpu_check.py``).
Figures go to ``gpu_check.json`` and, as text, to ``gpu_check.txt`` in ``--out``; nothing is
invented where a step fails: the step says it failed and why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddadlib.data.synthetic import generate_synthetic  # noqa: E402
from ddadlib.models import ensemble  # noqa: E402
from ddadlib.models.ensemble import EnsembleConfig, train_ensemble  # noqa: E402

BACKBONES = ("ae", "memae", "aeu")
RSNA = {"dn": 3851, "du": 4000, "test": 2000, "size": 64}
TINY = {"dn": 24, "du": 24, "test": 8, "size": 32}


class Report:
    """Lines to ``gpu_check.txt`` (and stdout) and figures to ``gpu_check.json``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.text = open(out / "gpu_check.txt", "w", buffering=1)  # noqa: SIM115
        self.figures: dict = {}

    def line(self, text: str) -> None:
        print(text, flush=True)
        self.text.write(text + "\n")

    def record(self, key: str, value) -> None:
        self.figures[key] = value
        (self.out / "gpu_check.json").write_text(json.dumps(self.figures, indent=1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _images(n: int, size: int, seed: int, device: torch.device) -> torch.Tensor:
    raw = generate_synthetic(n, size=size, seed=seed).images
    return torch.from_numpy(raw).float().div(127.5).sub(1.0)[:, None].to(device)


def check_vectorised(rep: Report, device: torch.device, size: int) -> None:
    """Vectorised against sequential on ``device`` in float64 (in float32, Adam's first steps
    turn rounding differences of near-zero gradients into steps of the learning rate)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        x = _images(96, size, 7, device).double()
        for backbone in BACKBONES:
            cfg = EnsembleConfig(backbone=backbone, k=3, epochs=2, batch_size=32, size=size)
            seq = train_ensemble(x, cfg, vectorised=False, progress=False).members
            vec = train_ensemble(x, cfg, vectorised=True, progress=False).members
            diff = max(
                (a.double() - b.double()).abs().max().item()
                for ms, mv in zip(seq, vec)
                for a, b in zip(ms.state_dict().values(), mv.state_dict().values())
                if a.is_floating_point()
            )
            ok = diff < 1e-8
            rep.line(
                f"  {backbone}: max weight difference vectorised vs sequential, float64, after "
                f"2 epochs (6 steps): {diff:.2e} {'OK' if ok else 'TOO LARGE'}"
            )
            rep.record(f"vectorised_vs_sequential_{backbone}", {"max_diff": diff, "ok": ok})
    finally:
        torch.set_default_dtype(old)


def check_cli(rep: Report, device: str, out: Path, tiny: bool) -> None:
    """``ddad prepare synthetic`` + ``ddad train`` + ``ddad evaluate`` on the device."""
    data, run = out / "cli-data", out / "cli-run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    size = "32" if tiny else "64"
    steps = [
        ["prepare", "synthetic", "--out", str(data), "--size", size, "--n-normal", "64",
         "--n-test", "32", "--n-unlabeled", "64", "--overwrite"],
        ["train", "--data", str(data), "--out", str(run), "--k", "3", "--epochs", "2",
         "--n-unlabeled", "32", "--device", device, "--quiet"],
        ["evaluate", "--run", str(run), "--n-boot", "0", "--overwrite"],
    ]  # fmt: skip
    for args in steps:
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "ddadlib.cli", *args], env=env, capture_output=True, text=True
        )
        secs = time.perf_counter() - t0
        rep.line(f"  ddad {' '.join(args[:2])}: exit {res.returncode} ({secs:.1f} s)")
        tail = (res.stdout + res.stderr).strip().splitlines()[-8:]
        for ln in tail:
            rep.line(f"    | {ln}")
        rep.record(f"cli_{args[0]}", {"rc": res.returncode, "seconds": round(secs, 2)})
        if res.returncode != 0:
            return


@contextlib.contextmanager
def compiled_steps(enabled: bool, notes: list[str]):
    """While active, the vectorised trainer's step runs under
    ``torch.compile(mode="reduce-overhead")``; a failure to compile falls back to eager."""
    if not enabled:
        yield
        return
    base = ensemble._Vectorised

    class Compiled(base):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            eager = self.step_losses
            try:
                compiled = torch.compile(eager, mode="reduce-overhead", dynamic=False)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"torch.compile refused: {exc!r}"[:300])
                return
            state = {"ok": True}

            def step(*args):
                if state["ok"]:
                    try:
                        return compiled(*args)
                    except Exception as exc:  # noqa: BLE001
                        state["ok"] = False
                        notes.append(f"compiled step failed, eager from then on: {exc!r}"[:300])
                return eager(*args)

            self.step_losses = step

    ensemble._Vectorised = Compiled
    try:
        yield
    finally:
        ensemble._Vectorised = base


def time_run(
    backbone: str,
    dn: torch.Tensor,
    da: torch.Tensor,
    epochs: int,
    precision: str,
    compile_: bool = False,
) -> dict:
    """Seconds per epoch of modules B and A (after one warm-up epoch, not counted)."""
    notes: list[str] = []
    out = {}
    with compiled_steps(compile_, notes):
        for module, x in (("B", dn), ("A", da)):
            cfg = EnsembleConfig(
                backbone=backbone, k=3, epochs=1, module=module, precision=precision,
                size=x.shape[-1],
            )  # fmt: skip
            train_ensemble(x, cfg, vectorised=True, progress=False)  # warm-up, compile
            _sync(x.device)
            cfg.epochs = epochs
            t0 = time.perf_counter()
            train_ensemble(x, cfg, vectorised=True, progress=False)
            _sync(x.device)
            out[module] = (time.perf_counter() - t0) / epochs
    out["notes"] = notes
    return out


def concurrent(rep: Report, device: str, sizes: dict, epochs: int, precision: str) -> dict:
    """The three backbones' runs at once, one process each, on one device."""
    code = (
        "import sys, time, torch; sys.path.insert(0, {root!r});"
        "from scripts.gpu_check import _images, time_run;"
        "d = torch.device({device!r});"
        "dn = _images({dn}, {size}, 1, d); du = _images({du}, {size}, 2, d);"
        "r = time_run(sys.argv[1], dn, torch.cat([dn, du]), {epochs}, {precision!r});"
        "print('RESULT', r['A'] + r['B'])"
    ).format(root=str(ROOT), device=device, epochs=epochs, precision=precision, **sizes)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1")
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, b], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for b in BACKBONES
    ]  # fmt: skip
    per = {}
    for b, p in zip(BACKBONES, procs):
        so, se = p.communicate()
        got = [ln for ln in so.splitlines() if ln.startswith("RESULT")]
        per[b] = float(got[-1].split()[1]) if got else None
        if not got:
            rep.line(f"    {b} failed: {(se.strip().splitlines() or ['?'])[-1]}")
    wall = time.perf_counter() - t0
    return {"per_backbone_epoch_s": per, "wall_s": round(wall, 1)}


def speed(rep: Report, device: torch.device, sizes: dict, epochs: int, deadline: float,
          tiny: bool) -> None:  # fmt: skip
    """Seconds per epoch of the Table 1 protocol in each configuration, and its projection."""
    t0 = time.perf_counter()
    dn = _images(sizes["dn"], sizes["size"], 1, device)
    du = _images(sizes["du"], sizes["size"], 2, device)
    test = _images(sizes["test"], sizes["size"], 3, device)
    da = torch.cat([dn, du])
    rep.line(
        f"  data: Dn {len(dn):,}, Du {len(du):,}, test {len(test):,} at {sizes['size']} px, "
        f"resident on {device} ({(dn.numel() + da.numel()) * 4 / 2**20:.0f} MiB; "
        f"{time.perf_counter() - t0:.1f} s to make)"
    )
    measure = 1 if tiny else 3
    configs = [("vectorised fp32", "fp32", False), ("vectorised bf16", "bf16", False)]
    if device.type == "cuda":
        configs += [("vectorised bf16 + compile", "bf16", True)]
    best = None
    for name, precision, comp in configs:
        if time.perf_counter() > deadline:
            rep.line(f"  {name}: skipped (time limit)")
            continue
        try:
            per_epoch = {}
            notes = []
            for b in BACKBONES:
                r = time_run(b, dn, da, measure, precision, comp)
                per_epoch[b] = r["A"] + r["B"]
                notes += r["notes"]
        except Exception as exc:  # noqa: BLE001
            rep.line(f"  {name}: failed: {exc!r}"[:300])
            rep.record(f"speed_{name}", {"error": repr(exc)[:300]})
            continue
        total = sum(per_epoch.values()) * epochs
        rep.line(
            f"  {name}: s/epoch (A + B) "
            + ", ".join(f"{b} {v:.3f}" for b, v in per_epoch.items())
            + f"; projected Table 1 ({epochs} epochs, 3 backbones one after the other): "
            f"{total:.1f} s"
        )
        for n in notes:
            rep.line(f"    note: {n}")
        rep.record(f"speed_{name}", {"s_per_epoch": per_epoch, "projected_s": total})
        if best is None or total < best[1]:
            best = (name, total, precision, comp)
    if best is None:
        return
    if time.perf_counter() < deadline:
        r = concurrent(rep, str(device), sizes, measure, best[2])
        per = r["per_backbone_epoch_s"]
        ok = all(v is not None for v in per.values())
        proj = max(per.values()) * epochs if ok else None
        rep.line(
            f"  3 runs at once ({best[2]}): s/epoch each "
            + ", ".join(f"{b} {v:.3f}" if v else f"{b} failed" for b, v in per.items())
            + (f"; projected Table 1: {proj:.1f} s" if proj else "")
        )
        rep.record("speed_concurrent", {**r, "projected_s": proj})
    left = deadline - time.perf_counter()
    rep.line(f"  best one after the other: {best[0]}, projected {best[1]:.1f} s; {left:.0f} s left")
    if best[1] * 1.2 < left:
        t1 = time.perf_counter()
        for b in BACKBONES:
            time_run(b, dn, da, epochs, best[2], best[3])
        measured = time.perf_counter() - t1
        rep.line(f"  measured Table 1 ({epochs} epochs, {best[0]}): {measured:.1f} s")
        rep.record("measured_total_s", measured)
    else:
        rep.line("  measured total: not run (does not fit in the time left)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    p.add_argument("--device", default="cuda")
    p.add_argument("--epochs", type=int, default=250)
    p.add_argument("--tiny", action="store_true", help="tiny sizes (a test on the CPU)")
    p.add_argument("--time-limit", type=float, default=450.0, help="seconds for everything")
    args = p.parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.time_limit
    rep = Report(args.out)
    device = torch.device(args.device)
    rep.line(f"ddadlib gpu_check: torch {torch.__version__}, device {device}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            rep.line("no CUDA device: nothing measured")
            return 1
        rep.line(f"  GPU: {torch.cuda.get_device_name(0)}")
        rep.record("gpu", torch.cuda.get_device_name(0))
    sizes = TINY if args.tiny else RSNA
    status = 0
    for title, step in (
        ("1a. vectorised equals sequential", lambda: check_vectorised(rep, device, sizes["size"])),
        ("1b. command line", lambda: check_cli(rep, args.device, args.out, args.tiny)),
        ("2. speed", lambda: speed(rep, device, sizes, args.epochs, deadline, args.tiny)),
    ):
        rep.line(f"{title} ({time.perf_counter() - start:.0f} s)")
        try:
            step()
        except Exception:  # noqa: BLE001 (reported; the next step still runs)
            status = 1
            rep.line("  FAILED:\n" + traceback.format_exc())
    rep.line(f"done in {time.perf_counter() - start:.0f} s")
    rep.record("seconds", round(time.perf_counter() - start, 1))
    return status


if __name__ == "__main__":
    sys.exit(main())
