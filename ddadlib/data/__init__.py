"""Data: synthetic, folder, DICOM, Kaggle and bundled sources, preparation, splits, PreparedDataset."""

from ddadlib.data.dataset import PreparedDataset
from ddadlib.data.prepare import prepare_folder, prepare_kaggle, prepare_kermany, prepare_synthetic
from ddadlib.data.splits import draw_unlabeled, make_split

__all__ = [
    "PreparedDataset",
    "draw_unlabeled",
    "make_split",
    "prepare_folder",
    "prepare_kaggle",
    "prepare_kermany",
    "prepare_synthetic",
]
