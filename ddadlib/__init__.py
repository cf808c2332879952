"""ddadlib: Dual-Distribution Discrepancy (DDAD) for anomaly detection in chest X-rays.

For research and teaching only; not for clinical use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ddadlib")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.prepare import prepare_folder, prepare_kaggle, prepare_kermany, prepare_synthetic
from ddadlib.data.splits import ar_range, draw_unlabeled, make_split, max_unlabeled
from ddadlib.data.synthetic import ABNORMALITY_KINDS, generate_synthetic, generate_synthetic_counts
from ddadlib.errors import ConfigError, DataError, TrainingError

__all__ = [
    "ABNORMALITY_KINDS",
    "ConfigError",
    "DDAD",
    "DataError",
    "FAnoGAN",
    "PreparedDataset",
    "Refiner",
    "Run",
    "__version__",
    "ar_range",
    "draw_unlabeled",
    "generate_synthetic",
    "generate_synthetic_counts",
    "load_detector",
    "make_split",
    "max_unlabeled",
    "prepare_folder",
    "prepare_kaggle",
    "prepare_kermany",
    "prepare_synthetic",
    "TrainingError",
]


def __getattr__(name: str):
    # The detectors and runs need torch; importing them lazily keeps `import ddadlib` (and data
    # preparation's worker processes) free of the torch import.
    if name in ("DDAD", "FAnoGAN", "Refiner", "load_detector"):
        from ddadlib import detectors

        return getattr(detectors, name)
    if name == "Run":
        from ddadlib.runs.run import Run

        return Run
    raise AttributeError(f"module 'ddadlib' has no attribute {name!r}")
