"""An independent recomputation of a run's inter-discrepancy, for tests that check what
``evaluate`` reports against the method's definition (``docs/method.md`` "Scores").

Import from test files as ``from reference_scores import inter_from_networks``.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ddadlib.data.dataset import PreparedDataset
from ddadlib.detectors import DDAD


def inter_from_networks(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The labels and inter scores of a run's test images (in ``scores.csv``'s order),
    recomputed straight from the networks: ``mean over pixels |mu_A - mu_B|`` for an AE run."""
    cfg = json.loads((run / "config.json").read_text())
    frame = pd.read_csv(run / "scores.csv")
    ds = PreparedDataset.load(cfg["data_path"])
    # uint8 images in [-1, 1], one channel, as the library feeds its networks
    x = torch.from_numpy(ds.images[ds.indices(frame["id"])].astype(np.float32))[:, None]
    x = x / 127.5 - 1.0
    model = DDAD.load(run / "model.pt", device="cpu")
    with torch.no_grad():
        mu = [
            torch.stack([net.eval()(x)["recon"] for net in module]).mean(0)
            for module in (model.module_a_, model.module_b_)
        ]
    return frame["label"].to_numpy(), (mu[0] - mu[1]).abs().mean(dim=(1, 2, 3)).numpy()
