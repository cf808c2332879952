from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
KERMANY = SHARED_DATA / "kermany-cxr128"


def write_png(path: Path, seed: int, size: int = 40, bright: int = 0) -> Path:
    """A small random grayscale PNG (different seeds give different pixels)."""
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.integers(0, 200, (size, size + 8)) + bright, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def class_folder(tmp_path):
    """A folder with class subfolders: 30 normal (two spellings), 20 pneumonia."""
    root = tmp_path / "cxr"
    for i in range(20):
        write_png(root / "Normal" / f"n{i:02d}.png", i)
    for i in range(10):
        write_png(root / "No Finding" / "sub" / f"m{i:02d}.png", 100 + i)
    for i in range(20):
        write_png(root / "PNEUMONIA" / f"p{i:02d}.png", 200 + i, bright=40)
    return root


@pytest.fixture
def csv_folder(tmp_path):
    """A folder with labels.csv, patients with several images, and exact duplicate images."""
    root = tmp_path / "csvdata"
    rows = ["filename,label,patient_id"]
    for i in range(40):
        write_png(root / "img" / f"a{i:02d}.png", i)
        rows.append(f"img/a{i:02d}.png,0,pat{i // 3}")
    for i in range(30):
        write_png(root / "img" / f"b{i:02d}.png", 500 + i, bright=30)
        rows.append(f"img/b{i:02d}.png,1,q{i}")
    # exact duplicates of a normal image under other names and patients
    for j in range(3):
        write_png(root / "img" / f"dup{j}.png", 7)
        rows.append(f"img/dup{j}.png,0,dup_patient{j}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def requires_kermany():
    return pytest.mark.skipif(
        not (KERMANY / "labels.csv").is_file(),
        reason=f"real data not found at {KERMANY} (see ../shared/data)",
    )


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small prepared synthetic set at 32x32 (fast to train on)."""
    from ddadlib.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("tiny") / "syn32"
    prepare_synthetic(out, size=32, n_normal=40, n_test=12, n_unlabeled=30, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_synthetic):
    """Two finished runs (AR 0.5 and AR 1.0, same seed) in one parent folder, with logs."""
    from ddadlib.runs.config import run_config
    from ddadlib.runs.train import train_run

    parent = tmp_path_factory.mktemp("runs")
    logs = {}
    for ar in (0.5, 1.0):
        lines: list[str] = []
        cfg = run_config(
            tiny_synthetic,
            k=2,
            epochs=2,
            ar=ar,
            n_unlabeled=20,
            seed=1,
            device="cpu",
            log=lines.append,
        )
        train_run(parent / f"ar{ar}", cfg, progress=False, log=lines.append)
        logs[ar] = lines
    return parent, logs


@pytest.fixture
def nih_folder(tmp_path):
    """A ChestX-ray14-style folder (NORMAL/, PNEUMONIA/, ``PATIENT_VISIT.png``) with labels.csv
    ``filename,label,finding,patient_id``: 40 patients, of whom 8 (20%) have a normal and a
    pneumonia visit; 32 normal and 36 pneumonia images of 16x24 pixels."""
    root = tmp_path / "nih"
    rows = ["filename,label,finding,patient_id"]
    seed = 0
    for p in range(40):
        pid = f"{1990 + p:08d}"
        if p % 5 == 0:
            visits = [0, 1] if p % 10 == 0 else [0, 1, 1]
        else:
            visits = [0 if p % 5 in (1, 2) else 1] * (1 + p % 2)
        for v, label in enumerate(visits):
            folder, finding = ("NORMAL", "No Finding") if label == 0 else ("PNEUMONIA", "Pneumonia")
            name = f"{folder}/{pid}_{v:03d}.png"
            write_png(root / name, seed, size=16, bright=40 * label)
            seed += 1
            rows.append(f"{name},{label},{finding},{pid}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
