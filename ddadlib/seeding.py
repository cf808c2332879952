"""Seeds: every random choice of a run derives from its one seed and a few keys.

A key path such as ``(seed, "A", member)`` gives an independent stream for module A's member
``member``, so members differ only in initialisation and data order, and adding a member or an
epoch never changes the streams of the others.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import numpy as np
import torch


def _key(part: int | str) -> int:
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part)


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream named by ``keys`` under ``seed``."""
    ss = np.random.SeedSequence([_key(seed)] + [_key(k) for k in keys])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1


def rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A numpy generator for the stream named by ``keys`` under ``seed``."""
    return np.random.default_rng(derive_seed(seed, *keys))


def epoch_order(n: int, seed: int, *keys: int | str, epoch: int) -> np.ndarray:
    """The order in which ``n`` training images are visited in ``epoch`` (0-based)."""
    return rng(seed, *keys, "epoch", epoch).permutation(n)


@contextlib.contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block, restoring the caller's state afterwards
    (network initialisation draws from it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
