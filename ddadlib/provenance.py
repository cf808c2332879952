"""What a prepared dataset or a run records about the software that made it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: Packages whose versions are recorded (read from their metadata; nothing is imported).
PACKAGES = (
    "ddadlib",
    "numpy",
    "pandas",
    "pillow",
    "pydicom",
    "pylibjpeg",
    "torch",
    "scikit-learn",
    "matplotlib",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES` (None where one is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The git commit of the ddadlib source in use, with ``-dirty`` if it has local changes;
    None when ddadlib was not installed from a git checkout."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance() -> dict:
    """Library versions, platform and git commit, for ``dataset.json`` and run configs."""
    return {
        "versions": package_versions(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }


def hardware() -> dict:
    """The processor, its core count, torch's thread count and the GPU (if any) of this run."""

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
    }
