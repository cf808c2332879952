"""Settings and cached runs of the course notebooks.

Every notebook starts with one parameters cell; its ``MODE`` comes from the environment variable
``DDAD_MODE``:

- ``quick``: a smoke test (CI): tiny 32x32 images and a few epochs, a minute or two a notebook.
  The numbers mean nothing.
- ``class`` (default): a class on a 2-core laptop, up to about 15 minutes a notebook the first
  time (measured on a busy 2-core CPU; the longest is 03, the AR ablation); the
  built-in synthetic set at 64x64 (the demo's) and 30 epochs, enough to show the method's point.
- ``full``: the paper's protocol (250 epochs, Du of 4,000, three seeds), for a GPU.

Data is the built-in synthetic set, generated once into the cache, unless a prepared dataset
is given (``DATA`` in the parameters cell, or ``$DDAD_DATA``). Trained runs live in the cache
(:func:`ddadlib.runs.grid.cache_dir`), so a notebook run again, or the next notebook, loads
what exists instead of training it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ddadlib.data.dataset import PreparedDataset, is_prepared
from ddadlib.data.prepare import prepare_synthetic
from ddadlib.detectors import detector_for
from ddadlib.errors import ConfigError
from ddadlib.presets import PRESETS, Preset, ablation_unlabeled
from ddadlib.runs.grid import cache_dir, ensure_run
from ddadlib.runs.run import TestSet
from ddadlib.runs.run import test_set as runs_test_set

#: The presets a notebook can run in (``DDAD_MODE``), from :data:`ddadlib.presets.PRESETS`.
MODE_NAMES = ("quick", "class", "full")
MODES = {name: PRESETS[name] for name in MODE_NAMES}


@dataclass(frozen=True)
class CourseSettings(Preset):
    """What a notebook trains: a preset (its ``name`` is the mode) and, where given, the
    prepared dataset that replaces the built-in synthetic set."""

    data: str | None = None

    @property
    def mode(self) -> str:
        return self.name

    def describe(self) -> str:
        data = self.data or (
            f"built-in synthetic set ({self.size}x{self.size}, Dn "
            f"{self.n_normal}, pools {self.n_unlabeled} + {self.n_unlabeled}, "
            f"test {self.n_test} + {self.n_test})"
        )
        return (
            f"mode {self.mode}: {data}; {self.epochs} epochs, K = {self.k}, AR {self.ar} "
            f"(ablation {', '.join(f'{a:g}' for a in self.ars)}), seeds "
            f"{', '.join(map(str, self.seeds))}"
        )


def settings(
    mode: str | None = None,
    *,
    data: str | Path | None = None,
    epochs: int | None = None,
    ars: Sequence[float] | None = None,
    k: int | None = None,
    seeds: Sequence[int] | None = None,
) -> CourseSettings:
    """The settings of ``mode`` (default ``$DDAD_MODE``, else ``class``), with the parameters
    cell's overrides (None keeps the mode's value)."""
    mode = mode or os.environ.get("DDAD_MODE") or "class"
    if mode not in MODES:
        raise ConfigError(f"DDAD_MODE={mode!r}: choose one of {', '.join(MODE_NAMES)}")
    changes: dict[str, Any] = {}
    data = data or os.environ.get("DDAD_DATA") or None
    if data is not None:
        if not is_prepared(data):
            raise ConfigError(f"{data}: not a prepared dataset; make one with `ddad prepare`")
        changes["data"] = str(Path(data).resolve())
    if epochs is not None:
        changes["epochs"] = int(epochs)
    if ars is not None:
        changes["ars"] = tuple(float(a) for a in ars)
    if k is not None:
        changes["k"] = int(k)
    if seeds is not None:
        changes["seeds"] = tuple(int(s) for s in seeds)
    return CourseSettings(**{**asdict(MODES[mode]), **changes})


def _synthetic_key(s: CourseSettings) -> str:
    spec = s.synthetic()
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def course_data(s: CourseSettings, log=print) -> Path:
    """The prepared dataset of ``s``: the given one, or the built-in synthetic set generated
    once into the cache (seed 0)."""
    if s.data is not None:
        return Path(s.data)

    out = cache_dir() / "data" / f"synthetic-{s.size}px-{_synthetic_key(s)}"
    if is_prepared(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=out.parent))
    try:
        log(f"generating the built-in synthetic set into {out} (once; later runs load it)")
        prepare_synthetic(
            tmp / "d",
            **s.synthetic(),
            seed=0,
            log=lambda line: log(line.replace(str(tmp / "d"), str(out))),
        )
        if not is_prepared(out):  # another process may have finished first
            os.replace(tmp / "d", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def runs_root(s: CourseSettings) -> Path:
    """The folder of the course's runs on the data of ``s`` (one per dataset)."""
    data = course_data(s)
    return cache_dir() / "runs" / data.name


def course_run(
    s: CourseSettings,
    backbone: str = "ae",
    ar: float | None = None,
    seed: int | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """The evaluated run of ``backbone`` at ``ar`` (default the settings' AR) with ``seed``
    (default the first seed): loaded from the cache, or trained and evaluated once."""
    data = course_data(s, log=log)
    fan = not detector_for(backbone).uses_unlabeled
    m = None if fan else ablation_unlabeled(data, s.ars + (s.ar,))
    return ensure_run(
        runs_root(s),
        data,
        backbone=backbone,
        ar=s.ar if ar is None else ar,
        seed=s.seeds[0] if seed is None else seed,
        epochs=s.fanogan_epochs if fan else s.epochs,
        n_unlabeled=m,
        **s.training(),
        figures=False,
        progress=progress,
        log=log,
    )


def course_grid(
    s: CourseSettings,
    backbones: Sequence[str] = ("ae",),
    ars: Sequence[float] | None = None,
    progress: bool = True,
    log=print,
) -> list[Path]:
    """Every run of ``backbones`` x ``ars`` (default the settings' ablation ARs) x seeds."""
    ars = s.ars if ars is None else tuple(ars)
    return [
        course_run(s, b, ar, seed, progress, log)
        for seed in s.seeds
        for b in backbones
        for ar in (ars if detector_for(b).uses_unlabeled else (None,))
    ]


def test_set(s: CourseSettings) -> TestSet:
    """The test images, labels, ids and masks (None for real data) of the settings' dataset."""

    return runs_test_set(PreparedDataset.load(course_data(s)))
