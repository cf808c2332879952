"""Settings and cached runs of the course notebooks.

Every notebook starts with one parameters cell; its ``MODE`` comes from the environment variable
``DDAD_MODE``:

- ``quick``: a smoke test (CI): the built-in synthetic set at 32x32 and a few epochs, under a
  minute a notebook. The numbers mean nothing.
- ``class`` (default): a class on a 2-core laptop: the bundled real chest X-rays (Kermany et al.,
  :func:`ddadlib.data.prepare.prepare_kermany`) at 64x64, at the budgets of the preset
  ``class`` (:data:`ddadlib.presets.PRESETS`), chosen so that the paper's findings show; each
  notebook's header gives its time.
- ``full``: the paper's protocol (250 epochs, three seeds), for a GPU.

The data is the mode's (``class`` and ``full``: the bundled X-rays; ``quick``: the synthetic
set, whose lesions come with pixel masks), prepared once into the cache, unless another is given:
``DATA`` in the parameters cell (or ``$DDAD_DATA``) takes a prepared dataset folder, or
``"kermany"`` or ``"synthetic"``. Trained runs live in the cache
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

import numpy as np
import pandas as pd

from ddadlib.data.dataset import PreparedDataset, is_prepared
from ddadlib.data.prepare import prepare_kermany, prepare_synthetic
from ddadlib.data.splits import draw_unlabeled
from ddadlib.detectors import Detector, detector_for, make_detector
from ddadlib.errors import ConfigError
from ddadlib.paper import BACKBONE_TITLES, PAPER_LATENT
from ddadlib.presets import PRESETS, Preset, ablation_unlabeled
from ddadlib.runs.grid import cache_dir, ensure_run
from ddadlib.runs.run import TestSet
from ddadlib.runs.run import test_set as runs_test_set

#: The presets a notebook can run in (``DDAD_MODE``), from :data:`ddadlib.presets.PRESETS`.
MODE_NAMES = ("quick", "class", "full")
MODES = {name: PRESETS[name] for name in MODE_NAMES}


#: The data sets a notebook can name instead of a folder (``DATA``), as :attr:`Preset.source`.
SOURCES = {
    "kermany": "the bundled real chest X-rays (Kermany et al., CC BY 4.0)",
    "synthetic": "the built-in synthetic set",
}


@dataclass(frozen=True)
class CourseSettings(Preset):
    """What a notebook trains: a preset (its ``name`` is the mode) and, where given, the
    prepared dataset that replaces the preset's ``source``."""

    data: str | None = None

    @property
    def mode(self) -> str:
        return self.name

    def describe(self) -> str:
        if self.data is not None:
            data = self.data
        elif self.source == "synthetic":
            data = (
                f"{SOURCES['synthetic']} ({self.size}x{self.size}, Dn "
                f"{self.n_normal}, pools {self.n_unlabeled} + {self.n_unlabeled}, "
                f"test {self.n_test} + {self.n_test})"
            )
        else:
            data = f"{SOURCES[self.source]} ({self.size}x{self.size})"
        epochs = f"{self.epochs} epochs" + "".join(
            f" ({BACKBONE_TITLES.get(b, b)} {e})" for b, e in self.backbone_epochs
        )
        return (
            f"mode {self.mode}: {data}; {epochs}, K = {self.k}, AR {self.ar} "
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
    if data is not None and str(data) in SOURCES:
        changes["source"] = str(data)
    elif data is not None:
        if not is_prepared(data):
            raise ConfigError(
                f"{data}: not a prepared dataset; make one with `ddad prepare`, or name one of "
                f"{', '.join(map(repr, SOURCES))}"
            )
        changes["data"] = str(Path(data).resolve())
    if epochs is not None:  # the same for every backbone
        changes["epochs"] = int(epochs)
        changes["backbone_epochs"] = ()
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
    """The prepared dataset of ``s``: the given one, or its ``source`` (the bundled X-rays or
    the built-in synthetic set) prepared once into the cache (seed 0)."""
    if s.data is not None:
        return Path(s.data)
    if s.source not in SOURCES:
        raise ConfigError(f"unknown data source {s.source!r}; choose one of {', '.join(SOURCES)}")
    if s.source == "kermany":
        out = cache_dir() / "data" / f"kermany-{s.size}px"
    else:
        out = cache_dir() / "data" / f"synthetic-{s.size}px-{_synthetic_key(s)}"
    if is_prepared(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{s.source}-", dir=out.parent))
    try:
        log(f"preparing {SOURCES[s.source]} into {out} (once; later runs load it)")
        quiet = {"log": lambda line: log(line.replace(str(tmp / "d"), str(out)))}
        if s.source == "kermany":
            prepare_kermany(tmp / "d", size=s.size, seed=0, **quiet)
        else:
            prepare_synthetic(tmp / "d", **s.synthetic(), seed=0, **quiet)
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
    latent: int = PAPER_LATENT,
) -> Path:
    """The evaluated run of ``backbone`` at ``ar`` (default the settings' AR) with ``seed``
    (default the first seed) and a ``latent``-d code: loaded from the cache, or trained and
    evaluated once.

    Training is ``make_detector(backbone, ...).fit(normal, unlabeled)`` on the images of
    :func:`training_images`, with the settings of :func:`course_detector`
    (:func:`ddadlib.runs.train.train_run`); the fitted model and its test scores are kept in
    the run folder, and read through :class:`ddadlib.runs.Run`."""
    data = course_data(s, log=log)
    fan = not detector_for(backbone).uses_unlabeled
    m = None if fan else ablation_unlabeled(data, s.ars + (s.ar,))
    return ensure_run(
        runs_root(s),
        data,
        backbone=backbone,
        ar=s.ar if ar is None else ar,
        seed=s.seeds[0] if seed is None else seed,
        epochs=s.fanogan_epochs if fan else s.epochs_for(backbone),
        n_unlabeled=m,
        **s.training(),
        latent=latent,
        figures=False,
        progress=progress,
        log=log,
    )


def course_detector(
    s: CourseSettings, backbone: str = "ae", seed: int | None = None, latent: int = PAPER_LATENT
) -> Detector:
    """The unfitted detector that :func:`course_run` trains for ``backbone`` and ``seed``
    (default the first seed)."""
    fan = not detector_for(backbone).uses_unlabeled
    return make_detector(
        backbone,
        **s.training(),
        epochs=s.fanogan_epochs if fan else s.epochs_for(backbone),
        seed=s.seeds[0] if seed is None else seed,
        latent=latent,
    )


def training_images(
    s: CourseSettings, ar: float | None = None, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The images :func:`course_run` trains on at ``ar`` (default the settings' AR) with
    ``seed`` (default the first): Dn, and Du drawn from the pools with that seed, as uint8
    arrays ``(N, S, S)`` for :meth:`ddadlib.detectors.DDAD.fit`."""
    data = course_data(s)
    ds = PreparedDataset.load(data)
    m = ablation_unlabeled(data, s.ars + (s.ar,))
    du = draw_unlabeled(
        ds.split, m, s.ar if ar is None else ar, s.seeds[0] if seed is None else seed
    )
    return ds.images[ds.part("normal")], ds.images[ds.indices(du)]


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


#: The README's command that installs ddadlib with the course's extras (run in its folder).
INSTALL_COMMAND = 'pip install -e ".[notebooks]"'


def check_environment(needs: Sequence[str] = (), mode: str | None = None, log=print) -> list[str]:
    """Check what a notebook needs, in a few lines: ddadlib's version, the modules ``needs``
    (e.g. ``("ipywidgets",)``), and the device. A missing module gets one line saying what to
    run (:data:`INSTALL_COMMAND`) instead of a traceback later; without a GPU, the line "no GPU
    found: <mode> mode uses the CPU". Returns the missing modules."""
    import importlib.util

    import torch

    import ddadlib
    from ddadlib.devices import pick_device

    mode = mode or os.environ.get("DDAD_MODE") or "class"
    log(
        f"ddadlib {ddadlib.__version__} ({Path(ddadlib.__file__).parent}), torch "
        f"{torch.__version__}, {torch.get_num_threads()} torch thread(s)"
    )
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        log(
            f"missing: {', '.join(missing)}; run  {INSTALL_COMMAND}  in the ddadlib folder, "
            "then restart the kernel"
        )
    device = pick_device("auto")
    if device.type == "cpu":
        log(f"no GPU found: {mode} mode uses the CPU")
    else:
        log(
            f"device: {device}"
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        )
    return missing


#: How far notebook 02's inter must lead the reconstruction ensemble to count as a clear lead.
CLEAR_MARGIN = 0.05


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings as a course run shows it: ``ours`` (an AUC) against
    ``against`` (the AUC it should beat, by more than ``margin``)."""

    notebook: str
    claim: str
    ours: float
    against: float
    margin: float = 0.0

    @property
    def holds(self) -> bool:
        return self.ours - self.against > self.margin

    def __str__(self) -> str:
        by = f" (needs more than {self.margin:.2f})" if self.margin else ""
        verdict = "holds" if self.holds else "does NOT hold"
        return (
            f"{self.claim}: {self.ours:.3f} against {self.against:.3f}, "
            f"{self.ours - self.against:+.3f}{by}: {verdict}"
        )


def _aucs(run: str | Path) -> dict[str, float]:
    from ddadlib.runs.run import Run

    return {name: m["auc"] for name, m in Run(run).metrics().items()}


def findings(
    s: CourseSettings, notebooks: Sequence[str] = ("02", "03", "04"), seed: int | None = None
) -> list[Finding]:
    """The paper's three findings in the course's runs of ``seed`` (default the first seed),
    trained where missing: notebook 02, the AE's inter above the reconstruction ensemble by
    more than :data:`CLEAR_MARGIN` and intra above it; notebook 03, inter rising from the
    lowest AR of the ablation to the highest and, from the settings' AR up, above the flat
    intra and rec lines; notebook 04, AE-U's inter above the AE's."""
    seed = s.seeds[0] if seed is None else seed
    ae = _aucs(course_run(s, "ae", seed=seed, log=lambda _: None))
    out = []
    if "02" in notebooks:
        out += [
            Finding(
                "02", "AE inter > rec (ensemble)", ae["inter"], ae["rec_ensemble"], CLEAR_MARGIN
            ),
            Finding("02", "AE intra > rec (ensemble)", ae["intra"], ae["rec_ensemble"]),
        ]
    if "03" in notebooks:
        ars = sorted(set(s.ars))
        inter = {
            ar: _aucs(course_run(s, "ae", ar, seed, log=lambda _: None))["inter"] for ar in ars
        }
        flat = max(ae["intra"], ae["rec"], ae["rec_ensemble"])
        high = min(v for ar, v in inter.items() if ar >= s.ar)
        out += [
            Finding(
                "03",
                f"inter at AR {ars[-1]:g} > inter at AR {ars[0]:g}",
                inter[ars[-1]],
                inter[ars[0]],
            ),
            Finding(
                "03", f"inter at AR >= {s.ar:g} (lowest) > intra and rec (highest)", high, flat
            ),
        ]
    if "04" in notebooks:
        aeu = _aucs(course_run(s, "aeu", seed=seed, log=lambda _: None))
        out.append(Finding("04", "AE-U inter > AE inter", aeu["inter"], ae["inter"]))
    return out


def synthetic_patch_check(
    model: Any, normal: np.ndarray, n: int = 200, seed: int = 0
) -> pd.DataFrame:
    """Do the maps of ``model`` (a fitted DDAD or Refiner) see ASR-Net's synthetic anomalies?
    On the first ``n`` Dn images ``normal``, each given a synthetic anomaly
    (:func:`ddadlib.models.asr.synthetic_anomalies`, ``p=1``): per map, the pixel AUROC of the
    altered images' map against the patches, and how the *unaltered* image's map at the patch's
    pixels compares with its other pixels (a ratio below 1: the patches land where the map is
    low anyway). Uses Dn only, never the test set."""
    import torch

    from ddadlib.devices import to_tensor
    from ddadlib.models.asr import synthetic_anomalies
    from ddadlib.scoring.metrics import pixel_auc

    x = to_tensor(np.asarray(normal[:n]), torch.device("cpu"))
    altered, target = synthetic_anomalies(x, seed, "patch-check", p=1.0)
    masks = target.numpy()
    seen, clean = model.score_maps(altered), model.score_maps(x)
    names = [m for m in ("rec_ensemble", "intra", "inter", "r_intra", "r_dual") if m in seen]
    return pd.DataFrame(
        {
            "pixel AUROC of the patches": [pixel_auc(masks, seen[m]) for m in names],
            "clean map, in patch / outside": [
                float(clean[m][masks].mean() / clean[m][~masks].mean()) for m in names
            ],
        },
        index=names,
    )
