"""ddadlib: Dual-Distribution Discrepancy (DDAD) for anomaly detection in chest X-rays.

For research and teaching only; not for clinical use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ddadlib")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from ddadlib.dataset import PreparedDataset
from ddadlib.errors import DataError
from ddadlib.prepare import prepare_folder, prepare_kaggle, prepare_synthetic
from ddadlib.splits import ar_range, draw_unlabeled, make_split, max_unlabeled
from ddadlib.synthetic import ABNORMALITY_KINDS, generate_synthetic, generate_synthetic_counts

__all__ = [
    "ABNORMALITY_KINDS",
    "DataError",
    "PreparedDataset",
    "__version__",
    "ar_range",
    "draw_unlabeled",
    "generate_synthetic",
    "generate_synthetic_counts",
    "make_split",
    "max_unlabeled",
    "prepare_folder",
    "prepare_kaggle",
    "prepare_synthetic",
]
