"""scripts/gpu_check.py runs every step on the CPU with tiny sizes (the GPU check is ready)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_the_cpu_with_tiny_sizes(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "out"
    status = gpu_check.main(
        ["--out", str(out), "--device", "cpu", "--epochs", "1", "--tiny", "--time-limit", "600"]
    )
    text = (out / "gpu_check.txt").read_text()
    assert status == 0, text
    figures = json.loads((out / "gpu_check.json").read_text())
    for b in ("ae", "memae", "aeu"):
        assert figures[f"vectorised_vs_sequential_{b}"]["ok"], text
    assert [figures[f"cli_{c}"]["rc"] for c in ("prepare", "train", "evaluate")] == [0, 0, 0]
    for name in ("vectorised fp32", "vectorised bf16"):
        assert figures[f"speed_{name}"]["projected_s"] > 0
    assert all(v is not None for v in figures["speed_concurrent"]["per_backbone_epoch_s"].values())
    assert "measured Table 1" in text  # 1 tiny epoch fits in the time left
