"""A built-in generator of synthetic chest X-ray-like images, with and without abnormalities.

It needs no data and downloads nothing, so it is the default data of the demo, the notebooks and
the tests. Each image is a frontal (PA) view as it is displayed: background and air black-ish,
lungs dark, soft tissue grey, heart, mediastinum, spine and ribs bright. Anatomy, position,
exposure, noise and blur vary from image to image, so that normal images differ the way real ones
do and an autoencoder trained on them has something to learn.

How it is made: every image is rendered analytically on a coordinate grid, in a batch with
vectorised numpy. Anatomy is described by a few dozen random parameters (lung shape, heart size,
rib spacing, ...) in a normalised frame of the patient, ``X`` (left to right of the image,
``-1..1``) and ``Y`` (top to bottom, ``-1..1``); shapes are implicit functions (approximate signed
distances) whose edges are softened with a smoothstep. Tissues add up to a projected *density*, the
way X-ray attenuation does, and a tone curve turns density into brightness. Because every length
is in normalised units, any square size works and the anatomy scales with it.

Determinism: image ``i`` depends only on ``(seed, i)`` (its random numbers come from
``numpy.random.SeedSequence(seed).spawn(...)[i]``), not on ``n`` or on the other images, so
``generate_synthetic(100, seed=3)`` is the first 100 images of ``generate_synthetic(1000, seed=3)``.
An image draws the same amount of random numbers whatever its label and kind, and those that do
not depend on the image size first, so the same ``(seed, i)`` at another size is the same
"patient" at another resolution, and fixing its label (``labels=``) changes nothing else.

Abnormalities (:data:`ABNORMALITY_KINDS`), each with a pixel mask of where it is:

``opacity``
    a blotchy consolidation: air in part of one lung replaced by fluid (brighter, ill-defined).
``nodule``
    one to three small round dense spots inside the lungs.
``effusion``
    pleural fluid filling the bottom of one lung, with a meniscus rising along the chest wall;
    it blunts the costophrenic angle and hides the diaphragm. Mask: the fluid inside the lung field.
``cardiomegaly``
    the heart shadow widened (cardiothoracic ratio up). Mask: the area the heart takes beyond the
    normal heart of the same image, where it covers lung.
``pneumothorax``
    air between the chest wall and a collapsed lung at one apex and lateral edge: darker, without
    lung markings, bounded by a thin bright pleural line. Mask: the air rim.
``atelectasis``
    plate-like (linear) atelectasis at one lung base: one to three thin dense streaks, and the
    hemidiaphragm pulled up by the loss of volume. Mask: the streaks and the lung lost to the
    raised diaphragm.

``pneumonia``
    lobar pneumonia: an even haze over the lower zone of one lung (the upper zone in a third of
    the cases). Large and always of one shape, so it is the kind a network trained on images
    that contain it learns to reconstruct (module A), and one trained on normal images does not
    (module B): the contrast that DDAD's inter-discrepancy measures. Mask: the hazy zone.

``severity`` in ``[0, 1]`` scales the size and contrast of an abnormality from subtle to obvious.
The range it is drawn from is a parameter, so that the difficulty can be calibrated.

Example::

    from ddadlib.data.synthetic import generate_synthetic, generate_synthetic_counts
    data = generate_synthetic(1000, size=64, abnormal_fraction=0.3, seed=0)
    data.images.shape, data.labels.mean(), data.kinds[:3]
    train = generate_synthetic_counts(2000, 0, size=64, seed=1)  # normal images only
    test = generate_synthetic_counts(500, 500, size=64, seed=2, severity=(0.5, 1.0))

Speed: about a thousand 64 x 64 images a second on two cores (numpy releases the GIL, so batches
are rendered in threads); run ``python benchmarks/bench_synthetic.py``.

For research and teaching only: these pictures are not medical images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ddadlib.data.imaging import MAX_SIZE

__all__ = [
    "ABNORMALITY_KINDS",
    "DEFAULT_SEVERITY",
    "SyntheticCXR",
    "generate_synthetic",
    "generate_synthetic_counts",
]

ABNORMALITY_KINDS: tuple[str, ...] = (
    "opacity",
    "nodule",
    "effusion",
    "cardiomegaly",
    "pneumothorax",
    "atelectasis",
    "pneumonia",
)
"""The kinds of abnormality the generator draws, in a fixed order."""

DEFAULT_SEVERITY: tuple[float, float] = (0.2, 1.0)
"""The default range the severity of an abnormal image is drawn from (uniformly)."""

MIN_SIZE = 32
"""The smallest image size (pixels per side) the generator accepts."""

# Namespaces of the per-image seed keys: generate_synthetic uses (i,); generate_synthetic_counts
# uses (_NORMAL_STREAM, j) and (_ABNORMAL_STREAM, j), so that its two classes never share a patient.
_NORMAL_STREAM = 1 << 30
_ABNORMAL_STREAM = (1 << 30) + 1

# Sizes of the random draws made for every image, whatever it turns out to be; they are fixed, so
# the stream of an image never depends on its label, kind or size.
_N_ANATOMY = 96
_N_ABNORMAL = 16
# polar grid (angle x distance from the hilum) of the noise behind the lung markings
_V_THETA, _V_R = 50, 8
_V_RMAX = 1.0
_G_BLOB = 14  # grid of the smooth noise that makes consolidations blotchy
_PIXELS_PER_CHUNK = 1 << 16  # pixels rendered at once (per thread): cache-sized arrays

# Anatomy parameters: name, low, high (uniform). Lengths are in normalised units (image = 2 wide);
# the suffixes _r and _l are the patient's right (image left) and left (image right).
_ANATOMY_SPEC: tuple[tuple[str, float, float], ...] = (
    # placement of the patient in the image
    ("scale", 0.86, 0.98),
    ("aspect", 0.93, 1.07),
    ("tx", -0.045, 0.045),
    ("ty", -0.05, 0.05),
    ("rot", -3.5, 3.5),  # degrees
    # body outline
    ("body_w", 0.86, 0.97),
    ("shoulder_y", -1.0, -0.88),
    ("shoulder_w", 0.10, 0.24),  # shoulders and arms beyond the chest wall
    ("shoulder_k", 0.8, 1.4),
    ("neck_w", 0.2, 0.27),
    ("soft", 0.92, 1.08),  # soft-tissue density
    # lungs
    ("apex_y", -0.84, -0.72),
    ("apex_dy", -0.03, 0.03),  # left apex minus right apex
    ("apex_l", 0.30, 0.37),
    ("lat_r", 0.74, 0.84),
    ("lat_dl", -0.03, 0.03),
    ("med", 0.11, 0.15),
    ("cp_y", 0.6, 0.74),  # costophrenic angles
    ("cp_dy", -0.01, 0.05),
    ("dome_h", 0.11, 0.2),  # height of the diaphragm dome above the costophrenic angle
    ("dome_dr", 0.02, 0.07),  # right dome higher than the left by this much
    ("dome_l", 0.36, 0.50),  # lateral position of the top of the dome
    ("dome_med", 0.04, 0.09),  # fall of the dome towards the heart
    ("air", 0.76, 0.86),  # density of tissue replaced by air in the lungs
    ("air_base", 0.05, 0.2),  # lungs denser at the bases
    # heart and mediastinum
    ("heart_x", 0.1, 0.16),
    ("heart_dy", -0.16, -0.08),  # heart centre relative to the left dome
    ("heart_a", 0.36, 0.44),
    ("heart_b", 0.26, 0.31),
    ("heart_tilt", 28.0, 44.0),  # degrees
    ("heart_d", 0.0, 0.06),  # extra density of the heart
    ("knob_x", -0.01, 0.025),  # aortic knob beyond the mediastinum edge
    ("knob_y", -0.42, -0.32),
    ("knob_r", 0.05, 0.07),
    ("trachea_x", -0.02, 0.02),
    ("hilum_y", -0.12, 0.0),
    # spine
    ("spine_x", -0.02, 0.02),
    ("spine_curve", -0.04, 0.04),
    ("spine_w", 0.065, 0.085),
    ("spine_d", 0.12, 0.2),
    # ribs and clavicles
    ("rib_p", 0.115, 0.14),  # vertical spacing of the posterior ribs
    ("rib_warp", 0.0, 0.035),  # spacing grows downwards
    ("rib_a1", 0.10, 0.24),  # posterior ribs: Y = y0 + n p - a1 L + a2 L^2 + 0.7 L^4
    ("rib_a2", 0.3, 0.5),
    ("rib_w", 0.17, 0.24),  # half-width of a rib (fraction of the spacing)
    ("rib_d", 0.06, 0.11),
    ("rib_y0", -0.08, 0.0),  # first rib relative to the apex
    ("rib_off", -0.15, 0.15),  # phase of the left ribs relative to the right
    ("arib_s", 0.32, 0.48),  # anterior ribs: slope down medially
    ("arib_ph", 0.0, 1.0),
    ("clav_y", -0.74, -0.62),
    ("clav_rise", 0.12, 0.22),
    ("clav_w", 0.022, 0.03),
    ("clav_d", 0.24, 0.36),
    # abdomen
    ("bubble", 0.0, 1.0),  # gastric bubble present if > 0.4
    ("bubble_x", 0.30, 0.50),
    ("bubble_r", 0.06, 0.11),
    # rendering
    ("vessel_d", 0.12, 0.2),
    ("k", 1.0, 1.4),  # tone curve: 1 - exp(-k D)
    ("gamma", 0.8, 1.25),
    ("black", 0.0, 0.05),
    ("white", 0.88, 1.0),
    ("grad_x", -0.06, 0.06),
    ("grad_y", -0.06, 0.06),
    ("blur", 0.003, 0.011),  # Gaussian blur sigma, normalised units
    ("noise", 0.01, 0.035),
)
assert len(_ANATOMY_SPEC) <= _N_ANATOMY


@dataclass
class SyntheticCXR:
    """A batch of synthetic chest X-rays.

    ``images`` (n, size, size) uint8; ``labels`` (n,) int64, 0 normal and 1 abnormal; ``masks``
    (n, size, size) bool, where the abnormality is (all False for normal images); ``kinds`` the
    kind of each image ("" for normal, else one of :data:`ABNORMALITY_KINDS`); ``severity`` (n,)
    float64 in [0, 1], 0 for normal images.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    kinds: list[str]
    severity: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


def generate_synthetic(
    n: int,
    size: int = 64,
    abnormal_fraction: float = 0.5,
    seed: int = 0,
    kinds: Sequence[str] = ABNORMALITY_KINDS,
    severity: tuple[float, float] = DEFAULT_SEVERITY,
    labels: np.ndarray | Sequence[int] | None = None,
) -> SyntheticCXR:
    """Generate ``n`` synthetic chest X-rays of ``size`` x ``size`` pixels.

    Each image is abnormal with probability ``abnormal_fraction`` (drawn per image, so the
    fraction is approximate; pass ``labels`` or use :func:`generate_synthetic_counts` for exact
    numbers). An abnormal image gets a kind drawn uniformly from ``kinds`` and a severity drawn
    uniformly from the range ``severity``. ``labels`` (n values, 0 or 1), if given, fixes the
    label of each image instead (``abnormal_fraction`` is then ignored).

    Image ``i`` depends only on ``(seed, i)`` (and on the arguments), never on ``n``: a shorter
    call gives a prefix of a longer one.
    """
    n = _check_count(n, "n")
    size = _check_size(size)
    if not isinstance(abnormal_fraction, (int, float, np.integer, np.floating)) or not (
        0.0 <= float(abnormal_fraction) <= 1.0
    ):
        raise ValueError(f"abnormal_fraction must be a number in [0, 1], got {abnormal_fraction!r}")
    seed = _check_seed(seed)
    kinds = _check_kinds(kinds)
    sev_range = _check_severity(severity)
    forced = None
    if labels is not None:
        forced = np.asarray(labels)
        if forced.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {forced.shape}")
        if forced.size and not np.isin(forced, (0, 1)).all():
            raise ValueError("labels must be 0 (normal) or 1 (abnormal)")
        forced = forced.astype(np.int64)
    keys = [(i,) for i in range(n)]
    lab = np.empty(n, dtype=np.int64)
    kind_names: list[str] = []
    sev = np.zeros(n, dtype=np.float64)
    for i, key in enumerate(keys):
        u_label, u_kind, u_sev = _head(seed, key)
        lab[i] = int(u_label < abnormal_fraction) if forced is None else int(forced[i])
        if lab[i]:
            kind_names.append(kinds[min(int(u_kind * len(kinds)), len(kinds) - 1)])
            sev[i] = sev_range[0] + (sev_range[1] - sev_range[0]) * u_sev
        else:
            kind_names.append("")
    return _render_all(seed, keys, size, lab, kind_names, sev)


def generate_synthetic_counts(
    n_normal: int,
    n_abnormal: int,
    size: int = 64,
    seed: int = 0,
    kinds: Sequence[str] = ABNORMALITY_KINDS,
    severity: tuple[float, float] = DEFAULT_SEVERITY,
) -> SyntheticCXR:
    """Generate exactly ``n_normal`` normal then ``n_abnormal`` abnormal synthetic chest X-rays.

    The normal images come first (label 0), then the abnormal ones (label 1); shuffle them if
    order matters. The two classes are drawn from separate streams of ``seed`` and never share a
    patient: normal image ``j`` depends only on ``(seed, j)`` and so does abnormal image ``j``, so
    asking for more of one class leaves the images already drawn unchanged. Abnormal image ``j``
    has kind ``kinds[j % len(kinds)]`` (kinds are balanced) and a severity drawn uniformly from
    the range ``severity``.
    """
    n_normal = _check_count(n_normal, "n_normal")
    n_abnormal = _check_count(n_abnormal, "n_abnormal")
    size = _check_size(size)
    seed = _check_seed(seed)
    kinds = _check_kinds(kinds)
    lo, hi = _check_severity(severity)
    keys = [(_NORMAL_STREAM, j) for j in range(n_normal)]
    keys += [(_ABNORMAL_STREAM, j) for j in range(n_abnormal)]
    lab = np.array([0] * n_normal + [1] * n_abnormal, dtype=np.int64)
    kind_names = [""] * n_normal + [kinds[j % len(kinds)] for j in range(n_abnormal)]
    sev = np.zeros(n_normal + n_abnormal, dtype=np.float64)
    for j in range(n_abnormal):
        sev[n_normal + j] = lo + (hi - lo) * _head(seed, keys[n_normal + j])[2]
    return _render_all(seed, keys, size, lab, kind_names, sev)


def _render_cases(
    seed: int,
    indices: Sequence[int],
    size: int,
    kind: str,
    severity: float | Sequence[float],
) -> tuple[SyntheticCXR, SyntheticCXR]:
    """The images ``indices`` of ``generate_synthetic(..., seed=seed, size=size)`` rendered twice:
    with abnormality ``kind`` at the given severity, and normal. Everything else (anatomy,
    exposure, noise) is identical, so the difference is the abnormality alone. A testing and
    calibration hook; returns ``(abnormal, normal)``.
    """
    size = _check_size(size)
    seed = _check_seed(seed)
    (kind,) = _check_kinds([kind])
    keys = [(int(i),) for i in indices]
    n = len(keys)
    sev = np.broadcast_to(np.asarray(severity, dtype=np.float64), (n,)).copy()
    if n and (sev.min() < 0.0 or sev.max() > 1.0):
        raise ValueError("severity must lie in [0, 1]")
    abnormal = _render_all(seed, keys, size, np.ones(n, np.int64), [kind] * n, sev)
    normal = _render_all(seed, keys, size, np.zeros(n, np.int64), [""] * n, np.zeros(n))
    return abnormal, normal


def _lung_fields(seed: int, indices: Sequence[int], size: int) -> np.ndarray:
    """The lung fields (bool, (n, size, size)) of the images ``indices`` of
    ``generate_synthetic(..., seed=seed, size=size)``: the lungs of the normal anatomy, heart
    shadow included. A testing hook."""
    size = _check_size(size)
    keys = [(int(i),) for i in indices]
    n = len(keys)
    lungs = np.zeros((n, size, size), dtype=bool)
    _render_all(_check_seed(seed), keys, size, np.zeros(n, np.int64), [""] * n, np.zeros(n), lungs)
    return lungs


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_count(n: object, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {n!r}")
    return int(n)


def _check_size(size: object) -> int:
    if (
        isinstance(size, bool)
        or not isinstance(size, (int, np.integer))
        or not MIN_SIZE <= size <= MAX_SIZE
    ):
        raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    return int(size)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = [kinds]
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds must name at least one of {ABNORMALITY_KINDS}")
    for k in kinds:
        if k not in ABNORMALITY_KINDS:
            raise ValueError(f"unknown abnormality kind {k!r}; the kinds are {ABNORMALITY_KINDS}")
    return kinds


def _check_severity(severity: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in severity)
    except (TypeError, ValueError):
        raise ValueError(f"severity must be a pair (low, high), got {severity!r}") from None
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"severity must satisfy 0 <= low <= high <= 1, got {severity!r}")
    return lo, hi


# ----------------------------------------------------------------------------------------------
# random draws


def _rng(seed: int, key: tuple[int, ...]) -> np.random.Generator:
    """The random stream of one image: child ``key`` of ``SeedSequence(seed)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _head(seed: int, key: tuple[int, ...]) -> np.ndarray:
    """The first three uniforms of an image's stream: its label, kind and severity."""
    return _rng(seed, key).random(3)


def _draw(seed: int, key: tuple[int, ...], size: int) -> dict[str, np.ndarray]:
    """All random numbers of one image, in a fixed order: size-independent ones first."""
    rng = _rng(seed, key)
    return {
        "head": rng.random(3),  # label, kind, severity
        "anatomy": rng.random(_N_ANATOMY),
        "abnormal": rng.random(_N_ABNORMAL),
        "vessel": rng.standard_normal((_V_THETA, _V_R), dtype=np.float32),
        "blob": rng.standard_normal((2, _G_BLOB, _G_BLOB), dtype=np.float32),
        "pixel": rng.standard_normal((size, size), dtype=np.float32),
    }


def _render_all(
    seed: int,
    keys: list[tuple[int, ...]],
    size: int,
    labels: np.ndarray,
    kind_names: list[str],
    severity: np.ndarray,
    lungs_out: np.ndarray | None = None,
) -> SyntheticCXR:
    """Render the images of seed keys ``keys`` with the given labels, kinds and severities, in
    chunks (in threads); the random numbers of a chunk are drawn when it is rendered."""
    n = len(keys)
    images = np.empty((n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    codes = np.array([ABNORMALITY_KINDS.index(k) if k else -1 for k in kind_names], dtype=np.int64)
    chunk = max(1, _PIXELS_PER_CHUNK // (size * size))

    def work(start: int) -> None:
        stop = min(n, start + chunk)
        draws = [_draw(seed, key, size) for key in keys[start:stop]]
        img, msk, lung = _render_chunk(draws, size, codes[start:stop], severity[start:stop])
        images[start:stop] = img
        masks[start:stop] = msk
        if lungs_out is not None:
            lungs_out[start:stop] = lung

    starts = range(0, n, chunk)
    workers = min(len(starts), _n_threads())
    if workers > 1:  # numpy releases the GIL in its array operations: chunks run in parallel
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, starts))
    else:
        for start in starts:
            work(start)
    return SyntheticCXR(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        masks=masks,
        kinds=list(kind_names),
        severity=np.where(labels > 0, severity, 0.0).astype(np.float64),
    )


# ----------------------------------------------------------------------------------------------
# rendering helpers


def _n_threads() -> int:
    """Threads to render with: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _soft(d: np.ndarray, w: float | np.ndarray) -> np.ndarray:
    """1 inside (d << 0), 0 outside (d >> 0), a smoothstep over a band of width ``w`` around 0."""
    t = d / -w
    t += 0.5
    np.clip(t, 0.0, 1.0, out=t)
    r = t * t
    t *= -2.0
    t += 3.0
    r *= t
    return r


@lru_cache(maxsize=32)
def _upsampler(size: int, grid: int) -> np.ndarray:
    """(size, grid) matrix that turns white noise on a coarse grid into a smooth unit-variance
    field on the pixel grid (Gaussian interpolation, the same in normalised units at any size)."""
    x = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    c = np.linspace(-1.15, 1.15, grid)
    h = 0.75 * (c[1] - c[0])
    m = np.exp(-0.5 * ((x[:, None] - c[None, :]) / h) ** 2)
    m /= np.sqrt((m**2).sum(axis=1, keepdims=True))
    return m.astype(np.float32)


def _smooth_field(noise: np.ndarray, size: int) -> np.ndarray:
    """(b, g, g) white noise -> (b, size, size) smooth field of unit variance."""
    m = _upsampler(size, noise.shape[-1])
    return np.matmul(np.matmul(m, noise), m.T)


def _blur(img: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """Gaussian blur of each image of a (b, s, s) batch with its own sigma (pixels), by FFT."""
    s = img.shape[-1]
    fy = np.fft.fftfreq(s).astype(np.float32)
    fx = np.fft.rfftfreq(s).astype(np.float32)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    h = np.exp(-2.0 * math.pi**2 * sigma_px.reshape(-1, 1, 1).astype(np.float32) ** 2 * f2)
    return np.fft.irfft2(np.fft.rfft2(img) * h, s=(s, s)).astype(np.float32)


def _polar_field(noise: np.ndarray, theta: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Smooth interpolation of (b, _V_THETA, _V_R) noise at angles ``theta`` (radians, periodic)
    and distances ``r`` (0.._V_RMAX), each (b, s, s)."""
    b, nt, nr = noise.shape
    ft = (theta + math.pi) * (nt / (2.0 * math.pi))
    fr = np.clip(r * ((nr - 1) / _V_RMAX), 0.0, nr - 1.001)
    i0 = np.floor(ft)
    j0 = np.floor(fr)
    wt = ft - i0
    wr = fr - j0
    wt = wt * wt * (3.0 - 2.0 * wt)
    wr = wr * wr * (3.0 - 2.0 * wr)
    i0 = i0.astype(np.intp) % nt
    i1 = (i0 + 1) % nt
    j0 = j0.astype(np.intp)
    base = (np.arange(b, dtype=np.intp) * (nt * nr)).reshape(-1, 1, 1)
    flat = noise.reshape(-1)
    r0 = base + j0
    a = flat[r0 + i0 * nr]
    a += (flat[r0 + i1 * nr] - a) * wt
    c = flat[r0 + 1 + i0 * nr]
    c += (flat[r0 + 1 + i1 * nr] - c) * wt
    return a + (c - a) * wr


def _nonempty(mask: np.ndarray, field: np.ndarray) -> np.ndarray:
    """``mask`` (b, s, s), where an image's mask is empty (a lesion smaller than a pixel), marked
    at the strongest pixel of ``field`` instead, so that every abnormal image has a mask."""
    mask = mask.copy()
    for i in np.nonzero(~mask.reshape(mask.shape[0], -1).any(axis=1))[0]:
        mask[i].flat[int(np.argmax(field[i]))] = True
    return mask


def _sample_points(weight: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One pixel per image of a (b, s, s) weight map, chosen with probability proportional to the
    weight by the uniform numbers ``u`` (b,). Returns flat pixel indices (b,)."""
    b = weight.shape[0]
    flat = weight.reshape(b, -1).astype(np.float64)
    total = flat.sum(axis=1)
    empty = total <= 0
    if empty.any():  # no allowed pixel: fall back to the centre of the image
        flat[empty] = 0.0
        flat[empty, flat.shape[1] // 2 + weight.shape[-1] // 2] = 1.0
        total = flat.sum(axis=1)
    cum = np.cumsum(flat, axis=1)
    idx = (cum < (u * total)[:, None]).sum(axis=1)
    return np.minimum(idx, flat.shape[1] - 1)


class _Params:
    """The anatomy parameters of a batch, as attributes of shape (b, 1, 1) float32."""

    def __init__(self, uniforms: np.ndarray) -> None:
        for j, (name, lo, hi) in enumerate(_ANATOMY_SPEC):
            v = lo + (hi - lo) * uniforms[:, j]
            setattr(self, name, v.astype(np.float32).reshape(-1, 1, 1))


def _lung(L, Y, apex_y, apex_l, lat, med, cp_y, dome_y, dome_l, dome_med):
    """One lung in lateral coordinates ``L`` (0 at the midline, positive outwards).

    Returns ``d`` (approximate signed distance, negative inside), ``outer`` (distance inwards
    from the lateral wall or the apex, for a pneumothorax), ``wall`` (the lateral boundary at
    each height) and ``dia`` (the height of the diaphragm at each ``L``).
    """
    t = np.clip((Y - apex_y) / (cp_y - apex_y), 0.0, 1.0)
    s = 1.0 - t
    g_lat = np.sqrt(1.0 - s * s)  # rounded apex, widest at the base
    s2 = s * s
    g_med = np.sqrt(1.0 - s2 * s2)  # the medial border straightens quickly
    wall = apex_l + (lat - apex_l) * g_lat
    med_wall = apex_l - (apex_l - med) * g_med
    q_lat = (L - dome_l) / (lat - dome_l)
    q_med = (dome_l - L) / (dome_l - med)
    dia = np.where(
        L > dome_l, dome_y + (cp_y - dome_y) * q_lat * q_lat, dome_y + dome_med * q_med * q_med
    )
    d = np.maximum(np.maximum(L - wall, med_wall - L), np.maximum(Y - dia, apex_y - Y))
    outer = np.minimum(wall - L, Y - apex_y)
    return d, outer, wall, dia


def _ellipse(X, Y, cx, cy, a, b, tilt_deg, edge):
    """Soft filled ellipse centred at (cx, cy), semi-axes a, b, turned by ``tilt_deg``."""
    t = np.deg2rad(tilt_deg)
    ct, st = np.cos(t), np.sin(t)
    dx, dy = X - cx, Y - cy
    u = (ct * dx + st * dy) / a
    v = (-st * dx + ct * dy) / b
    return _soft((np.sqrt(u * u + v * v) - 1.0) * np.minimum(a, b), edge)


class _Scene:
    """The arrays of a batch being rendered, shared by the abnormality functions.

    Arrays are (b, size, size) float32 or broadcastable (b, 1, 1); suffixes ``_r`` and ``_l`` are
    the patient's right lung (image left, ``X < 0``) and left lung. The abnormality functions
    change ``air_r``, ``air_l``, ``D`` and ``markings`` for their images ``idx`` and return masks.
    """

    def __init__(self, **arrays: object) -> None:
        self.__dict__.update(arrays)

    def side(self, idx: np.ndarray, right: np.ndarray, left: np.ndarray, sd: np.ndarray):
        """``right[idx]`` where ``sd`` (the right lung is affected), else ``left[idx]``."""
        return np.where(sd, right[idx], left[idx])


def _opacity_or_nodule(sc: _Scene, idx: np.ndarray, ua: np.ndarray, sv: np.ndarray, name: str):
    size, g, P = sc.size, sc.g, sc.P
    lung_i = sc.lung_pre[idx]
    # centres: pixels well inside the lung fields, drawn by the abnormality's uniforms
    depth = np.where(sc.X[idx] < 0, -sc.d_r[idx], -sc.d_l[idx])
    margin = 0.07 if name == "opacity" else 0.045
    weight = (lung_i > 0.35) & (depth > margin)
    if name == "opacity":
        pick = [_sample_points(weight, ua[:, 1])]
    else:
        k = 1 + (ua[:, 2] > 0.55).astype(int) + (ua[:, 2] > 0.85).astype(int)
        pick = [_sample_points(weight, ua[:, 3 + j]) for j in range(3)]
    cy = [g[p // size].reshape(-1, 1, 1) for p in pick]
    cx = [g[p % size].reshape(-1, 1, 1) for p in pick]
    x, y = sc.x, sc.y
    if name == "opacity":
        # consolidation: air replaced by fluid in a lobulated, blotchy patch
        shape_noise = _smooth_field(np.stack([sc.draws[i]["blob"][0] for i in idx]), size)
        tex = _smooth_field(np.stack([sc.draws[i]["blob"][1] for i in idx]), size)
        rad = (0.085 + 0.15 * sv) * P.scale[idx] * (0.85 + 0.3 * ua[:, 6].reshape(-1, 1, 1))
        elong = 0.75 + 0.5 * ua[:, 7].reshape(-1, 1, 1)
        dist = np.sqrt(((x - cx[0]) / elong) ** 2 + ((y - cy[0]) * elong) ** 2)
        r_eff = dist / rad * np.clip(1.0 + 0.38 * shape_noise, 0.45, 1.8)
        blob = _soft(r_eff - 1.0, 0.45)
        strength = (0.28 + 0.6 * sv) * np.clip(0.7 + 0.4 * tex, 0.25, 1.0)
        sc.air_r[idx] *= 1.0 - strength * blob
        sc.air_l[idx] *= 1.0 - strength * blob
        return _nonempty((blob > 0.5) & (lung_i > 0.15), blob * lung_i)
    # nodules: small dense spheres, added to the density
    m = np.zeros((idx.size, size, size), dtype=bool)
    add = np.zeros((idx.size, size, size), dtype=np.float32)
    for j in range(3):
        on = (j < k).reshape(-1, 1, 1)
        r = (0.022 + 0.045 * sv) * P.scale[idx] * (0.75 + 0.5 * ua[:, 8 + j].reshape(-1, 1, 1))
        r = np.maximum(r, 1.1 * sc.px)
        q = ((x - cx[j]) ** 2 + (y - cy[j]) ** 2) / (r * r)
        add = np.maximum(add, np.sqrt(np.clip(1.0 - q, 0.0, 1.0)) * on)
        m |= (q < 1.0) & on
    m &= lung_i > 0.1
    sc.D[idx] += (0.22 + 0.4 * sv) * add
    return _nonempty(m, add * lung_i)


def _effusion(sc: _Scene, idx: np.ndarray, ua: np.ndarray, sv: np.ndarray, sd: np.ndarray):
    """Fluid in the bottom of one pleural space: a meniscus rising along the lateral wall, a hazy
    top, no costophrenic angle and no diaphragm outline."""
    P, Xi, Yi = sc.P, sc.X[idx], sc.Y[idx]
    lung_i = sc.lung_pre[idx]
    L = np.where(sd, -Xi, Xi)
    cp = sc.side(idx, sc.cp_r, sc.cp_l, sd)
    lat = sc.side(idx, P.lat_r, sc.lat_l, sd)
    med = P.med[idx]
    h = 0.07 + 0.34 * sv
    men = 0.06 + 0.2 * sv
    q = np.clip((L - med) / (lat - med), 0.0, 1.0)
    level = cp - h - men * q**3
    fluid = _soft(level - Yi + 0.02, 0.05 + 0.08 * sv)  # the layer of fluid thins upwards
    fluid *= (L > 0).astype(np.float32)
    a = 0.85 + 0.15 * sv
    sc.air_r[idx] *= 1.0 - a * fluid * sd
    sc.air_l[idx] *= 1.0 - a * fluid * ~sd
    shape_side = sc.side(idx, sc.shape_r, sc.shape_l, sd)
    m = (fluid > 0.5) & (shape_side > 0.5) & (lung_i > 0.1)
    return _nonempty(m, fluid * shape_side * lung_i)


def _pneumonia(sc: _Scene, idx: np.ndarray, ua: np.ndarray, sv: np.ndarray, sd: np.ndarray):
    """Lobar pneumonia: an even haze (air replaced by fluid) over the lower zone of one lung, or
    its upper zone in a third of the cases; severity widens the zone and thickens the haze."""
    Yi = sc.Y[idx]
    lung_i = sc.lung_pre[idx]
    shape_side = sc.side(idx, sc.shape_r, sc.shape_l, sd)
    apex = sc.side(idx, sc.apex_r, sc.apex_l, sd)
    cp = sc.side(idx, sc.cp_r, sc.cp_l, sd)
    frac = 0.3 + 0.4 * sv + 0.1 * ua[:, 2].reshape(-1, 1, 1)  # share of the lung's height
    lower = (ua[:, 1] < 2 / 3).reshape(-1, 1, 1)
    zone = np.where(
        lower, _soft(cp - (cp - apex) * frac - Yi, 0.1), _soft(Yi - apex - (cp - apex) * frac, 0.1)
    )
    haze = zone * shape_side * (0.2 + 0.6 * sv)
    sc.air_r[idx] *= 1.0 - haze * sd
    sc.air_l[idx] *= 1.0 - haze * ~sd
    m = (zone > 0.5) & (shape_side > 0.5) & (lung_i > 0.1)
    return _nonempty(m, zone * shape_side * lung_i)


def _pneumothorax(sc: _Scene, idx: np.ndarray, ua: np.ndarray, sv: np.ndarray, sd: np.ndarray):
    """Air between the chest wall and the collapsed lung: a rim along the apex and the lateral
    wall, a little darker and without lung markings, bounded by the thin pleural line."""
    Yi = sc.Y[idx]
    outer = sc.side(idx, sc.out_r, sc.out_l, sd)
    shape_side = sc.side(idx, sc.shape_r, sc.shape_l, sd)
    apex = sc.side(idx, sc.apex_r, sc.apex_l, sd)
    cp = sc.side(idx, sc.cp_r, sc.cp_l, sd)
    tt = np.clip((Yi - apex) / (cp - apex), 0.0, 1.0)
    taper = 0.4 + 0.5 * ua[:, 1].reshape(-1, 1, 1)
    width = (0.03 + 0.13 * sv) * (1.0 - taper * tt)
    reach = apex + (cp - apex) * (0.4 + 0.55 * sv)  # how far down the lateral wall
    low = _soft(Yi - reach, 0.08)
    inside = _soft(outer - width, sc.edge)
    gap = inside * low * shape_side
    line = np.exp(-(((outer - width) / max(0.006, 0.6 * sc.px)) ** 2)) * low * shape_side
    line *= 1.0 - inside
    # in the rim the air is as thick as in the middle of the lung; the collapsed lung beside it
    # is a little denser
    towards = (0.35 + 0.6 * sv) * gap
    dense = 1.0 - (0.03 + 0.1 * sv) * (1.0 - gap) * shape_side
    for air, this_side in ((sc.air_r, sd), (sc.air_l, ~sd)):
        a_i = air[idx]
        air[idx] = np.where(this_side, (a_i + (shape_side - a_i) * towards) * dense, a_i)
    sc.markings[idx] = 1.0 - gap
    sc.D[idx] += (0.05 + 0.08 * sv) * line
    return _nonempty((gap > 0.5) & (shape_side > 0.5), gap)


def _atelectasis(sc: _Scene, idx: np.ndarray, ua: np.ndarray, sv: np.ndarray, sd: np.ndarray):
    """Plate-like (linear) atelectasis at one lung base: one to three thin dense streaks,
    slightly oblique, and the hemidiaphragm pulled up (volume loss)."""
    P, Xi, Yi, edge = sc.P, sc.X[idx], sc.Y[idx], sc.edge
    lung_i = sc.lung_pre[idx]
    L = np.where(sd, -Xi, Xi)
    dia = sc.side(idx, sc.dia_r, sc.dia_l, sd)
    dome = sc.side(idx, sc.dome_r, sc.dome_l, sd)
    apex = sc.side(idx, sc.apex_r, sc.apex_l, sd)
    lat = sc.side(idx, P.lat_r, sc.lat_l, sd)
    shape_side = sc.side(idx, sc.shape_r, sc.shape_l, sd)
    med = P.med[idx]
    span = np.clip((L - med) / (lat - med), 0.0, 1.0)
    bulge = np.sqrt(np.clip(1.0 - (2.0 * span - 1.0) ** 2, 0.0, 1.0) + 0.1)
    lift = (0.02 + 0.08 * sv) * bulge
    lost = _soft(dia - lift - Yi, edge) * shape_side  # lung below the raised diaphragm
    streaks = np.zeros_like(Xi)
    k = 1 + (ua[:, 2] > 0.4).astype(int) + (ua[:, 2] > 0.8).astype(int)
    for j in range(3):
        on = (j < k).reshape(-1, 1, 1)
        u1, u2, u3 = (ua[:, 3 + 3 * j + q].reshape(-1, 1, 1) for q in range(3))
        y0 = dome - lift - (0.06 + 0.22 * u1) * (dome - apex) / 1.2
        slope = 0.25 * (u2 - 0.5)
        c0 = med + (lat - med) * (0.3 + 0.3 * u3)
        half_len = (0.1 + 0.2 * sv) * (lat - med)
        thick = np.maximum(0.009 + 0.014 * sv, 0.8 * sc.px)
        yl = y0 + slope * (L - c0)
        st = _soft(np.abs(Yi - yl) - thick, edge) * _soft(np.abs(L - c0) - half_len, 0.05)
        streaks = np.maximum(streaks, st * on)
    streaks *= shape_side * np.clip(lung_i / 0.5, 0.0, 1.0)
    a = 0.25 + 0.4 * sv
    keep = (1.0 - lost) * (1.0 - a * streaks)
    sc.air_r[idx] *= np.where(sd, keep, 1.0)
    sc.air_l[idx] *= np.where(sd, 1.0, keep)
    m = ((lost > 0.5) | (streaks > 0.4)) & (lung_i > 0.1)
    return _nonempty(m, (lost + streaks) * lung_i)


def _render_chunk(
    draws: list[dict[str, np.ndarray]], size: int, codes: np.ndarray, severity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a batch; ``codes`` index ABNORMALITY_KINDS (-1 normal). Returns the uint8 images,
    the abnormality masks and the lung fields of the normal anatomy (bool)."""
    b = len(draws)
    f32 = np.float32
    P = _Params(np.stack([d["anatomy"] for d in draws]))
    UA = np.stack([d["abnormal"] for d in draws]).astype(f32)
    sev = np.asarray(severity, dtype=f32).reshape(-1, 1, 1)
    px = 2.0 / size  # one pixel in normalised units
    edge = max(0.012, 1.2 * px)  # soft edge width of anatomy
    masks = np.zeros((b, size, size), dtype=bool)

    g = ((np.arange(size, dtype=f32) + 0.5) / size * 2.0 - 1.0).astype(f32)
    x = g[None, None, :]
    y = g[None, :, None]
    # the patient frame: shift, rotate, scale
    rot = np.deg2rad(P.rot)
    c, s = np.cos(rot), np.sin(rot)
    xs, ys = x - P.tx, y - P.ty
    X = (c * xs + s * ys) / (P.scale * P.aspect)
    Y = (-s * xs + c * ys) / P.scale
    AX = np.abs(X)

    # ---- body: a cylinder-like chest; above the armpits the shoulders and arms widen the
    # silhouette, under a shoulder line that slopes down from the neck, which flares into it
    sh_y = P.shoulder_y + P.shoulder_k * np.maximum(AX - 0.8 * P.neck_w, 0.0) ** 2
    width = P.body_w + P.shoulder_w * _soft(Y + 0.3, 0.5)
    chest = np.sqrt(np.clip(1.0 - (X / width) ** 2, 0.0, 1.0))
    chest *= np.sqrt(np.clip((Y - sh_y) / 0.12, 0.0, 1.0))
    neck_w = P.neck_w + 0.8 * np.maximum(Y - P.shoulder_y + 0.12, 0.0)
    neck = 0.55 * np.sqrt(np.clip(1.0 - (X / neck_w) ** 2, 0.0, 1.0))
    body = np.maximum(chest, neck) * P.soft
    D = body.copy()  # projected density

    # ---- lungs: the patient's right (image left, X < 0) and left (image right, X > 0)
    apex_r, apex_l = P.apex_y, P.apex_y + P.apex_dy
    cp_r, cp_l = P.cp_y, P.cp_y + P.cp_dy
    dome_r, dome_l = cp_r - P.dome_h - P.dome_dr, cp_l - P.dome_h
    lat_l = P.lat_r + P.lat_dl
    d_r, out_r, wall_r, dia_r = _lung(
        -X, Y, apex_r, P.apex_l, P.lat_r, P.med, cp_r, dome_r, P.dome_l, P.dome_med
    )
    d_l, out_l, wall_l, dia_l = _lung(
        X, Y, apex_l, P.apex_l, lat_l, P.med, cp_l, dome_l, P.dome_l, P.dome_med
    )
    shape_r = _soft(d_r, edge)
    shape_l = _soft(d_l, edge)
    # the lungs are thinner near their edges: the air thickness grows inwards
    air_r = shape_r * (0.6 + 0.4 * np.sqrt(np.clip(-d_r / 0.16, 0.0, 1.0)))
    air_l = shape_l * (0.6 + 0.4 * np.sqrt(np.clip(-d_l / 0.16, 0.0, 1.0)))

    # ---- heart: a tilted ellipse sitting on the left dome; the aortic knob above it
    heart_y = dome_l + P.heart_dy
    heart = _ellipse(X, Y, P.heart_x, heart_y, P.heart_a, P.heart_b, P.heart_tilt, edge)
    cm = np.nonzero(codes == ABNORMALITY_KINDS.index("cardiomegaly"))[0]
    if cm.size:
        # cardiomegaly: wider (mostly towards the left ventricle), a little taller
        e = 0.10 + 0.32 * sev[cm]
        big = _ellipse(
            X[cm],
            Y[cm],
            P.heart_x[cm] + 0.45 * e * P.heart_a[cm],
            heart_y[cm] + 0.25 * e * P.heart_b[cm],
            P.heart_a[cm] * (1.0 + e),
            P.heart_b[cm] * (1.0 + 0.45 * e),
            P.heart_tilt[cm],
            edge,
        )
        lung_before = np.maximum(shape_r[cm], shape_l[cm])
        m = (big > 0.5) & (heart[cm] < 0.5) & (lung_before > 0.5)
        masks[cm] = _nonempty(m, big * (1.0 - heart[cm]) * lung_before)
        heart[cm] = big
    knob_x = P.med + P.knob_x
    knob = _soft(np.sqrt((X - knob_x) ** 2 + ((Y - P.knob_y) * 0.7) ** 2) - P.knob_r, edge)
    cut = 1.0 - 0.88 * heart
    air_l *= cut * (1.0 - knob)
    air_r *= cut
    D += P.heart_d * heart * body

    # lungs denser towards the bases (vessels, overlying soft tissue)
    air_r *= 1.0 - P.air_base * np.clip((Y - apex_r) / (cp_r - apex_r), 0.0, 1.0)
    air_l *= 1.0 - P.air_base * np.clip((Y - apex_l) / (cp_l - apex_l), 0.0, 1.0)

    # ---- abnormalities in the lungs: they change the air, the density and the markings
    sc = _Scene(
        P=P,
        draws=draws,
        size=size,
        px=px,
        edge=edge,
        g=g,
        x=x,
        y=y,
        X=X,
        Y=Y,
        D=D,
        air_r=air_r,
        air_l=air_l,
        lung_pre=air_r + air_l,
        markings=np.ones_like(X),
        d_r=d_r,
        d_l=d_l,
        out_r=out_r,
        out_l=out_l,
        dia_r=dia_r,
        dia_l=dia_l,
        shape_r=shape_r,
        shape_l=shape_l,
        apex_r=apex_r,
        apex_l=apex_l,
        cp_r=cp_r,
        cp_l=cp_l,
        dome_r=dome_r,
        dome_l=dome_l,
        lat_l=lat_l,
    )
    for code, name in enumerate(ABNORMALITY_KINDS):
        idx = np.nonzero(codes == code)[0]
        if idx.size == 0 or name == "cardiomegaly":
            continue
        ua, sv = UA[idx], sev[idx]
        sd = (ua[:, 0] < 0.5).reshape(-1, 1, 1)  # True: the right lung (image left)
        if name in ("opacity", "nodule"):
            masks[idx] = _opacity_or_nodule(sc, idx, ua, sv, name)
        elif name == "effusion":
            masks[idx] = _effusion(sc, idx, ua, sv, sd)
        elif name == "pneumothorax":
            masks[idx] = _pneumothorax(sc, idx, ua, sv, sd)
        elif name == "pneumonia":
            masks[idx] = _pneumonia(sc, idx, ua, sv, sd)
        elif name == "atelectasis":
            masks[idx] = _atelectasis(sc, idx, ua, sv, sd)
    lung = air_r + air_l
    D -= P.air * lung * body

    # ---- lung markings: vessels fan out from the hila. The ridges (zero crossings) of a noise
    # that varies fast with the angle around the hilum and slowly with the distance from it.
    hx = np.where(X < 0, -P.med - 0.1, P.med + 0.1)
    r_h = np.sqrt((X - hx) ** 2 + ((Y - P.hilum_y) * 0.8) ** 2)
    theta = np.arctan2(Y - P.hilum_y, np.abs(X) - (P.med + 0.1))
    vn = _polar_field(np.stack([d["vessel"] for d in draws]), theta, r_h)
    vessel = np.clip(1.0 - np.abs(vn) / 0.45, 0.0, 1.0)
    vessel *= vessel
    near = np.exp(-r_h / 0.25)
    D += P.vessel_d * vessel * (0.3 + 1.2 * near) * lung * sc.markings
    D += 0.16 * np.exp(-((r_h / 0.07) ** 2)) * lung  # hilar vessels

    # ---- trachea: an air column in the upper mediastinum
    tr_bottom = P.knob_y + 0.12
    D -= 0.2 * _soft(np.abs(X - P.trachea_x) - 0.035, edge) * _soft(Y - tr_bottom, 0.06) * body

    # ---- spine with faint vertebrae (discs darker, pedicles brighter where the size allows)
    sx = P.spine_x + P.spine_curve * Y * Y
    L = np.abs(X - sx)
    spine = np.sqrt(np.clip(1.0 - (L / P.spine_w) ** 2, 0.0, 1.0))
    detail = min(1.0, max(0.0, (size - 48) / 100.0))
    if detail > 0:
        ph = (Y - P.apex_y) / P.rib_p
        fr = ph - np.floor(ph)
        disc = _soft(np.abs(fr - 0.85) - 0.07, 0.08)
        ped = _soft(np.abs(L - 0.6 * P.spine_w) - 0.22 * P.spine_w, 0.5 * edge)
        ped *= _soft(np.abs(fr - 0.35) - 0.14, 0.1)
        spine = spine * (1.0 - 0.35 * detail * disc) + 0.35 * detail * ped * (L < P.spine_w)
    D += P.spine_d * spine * body

    # ---- ribs: posterior ribs arc out from the spine and slope down laterally; fainter anterior
    # ribs slope down towards the midline. A periodic pattern along a curved coordinate.
    wall = np.where(X < 0, wall_r, wall_l)
    cage = _soft(L - (wall + 0.07), 0.04) * _soft(P.spine_w * 0.9 - L, 0.03)
    L2 = L * L
    z = Y - (P.apex_y + P.rib_y0) + P.rib_a1 * L - P.rib_a2 * L2 - 0.7 * L2 * L2
    z = z + np.where(X > sx, P.rib_off * P.rib_p, 0.0)
    ph = z / P.rib_p
    ph = ph - P.rib_warp * ph * ph / 4.0
    n_rib = np.floor(ph)
    fr = ph - n_rib
    rw = edge / P.rib_p
    half = P.rib_w * (1.0 + 0.18 * np.sin(2.7 * n_rib + 9.0 * P.rib_off))  # ribs differ a little
    rib = _soft(np.abs(fr - 0.5) - half, rw) * _soft(0.3 - ph, 0.3) * _soft(ph - 11.2, 0.5)
    rib += 0.35 * _soft(np.abs(fr - 0.5 - half + 0.5 * rw) - 0.6 * rw, rw)  # lower cortex
    rib *= cage
    below = np.where(X < 0, Y - dia_r, Y - dia_l)
    rib *= 0.25 + 0.75 * _soft(below, 0.05)  # fainter over the abdomen
    za = Y - (P.apex_y + 0.08) - P.arib_s * (wall - L)
    pa = za / (1.25 * P.rib_p) + P.arib_ph
    fa = pa - np.floor(pa)
    arib = _soft(np.abs(fa - 0.5) - 0.18, rw) * _soft(-pa + 0.2, 0.3) * _soft(pa - 6.5, 0.5)
    arib *= _soft(0.25 - L, 0.08) * cage
    D += P.rib_d * (rib + 0.8 * arib) * body

    # ---- clavicles: S-shaped bars from the top of the sternum out and up to the shoulders
    lc = np.clip((L - 0.06) / 0.72, 0.0, 1.0)
    cy = P.clav_y - P.clav_rise * lc + 0.03 * np.sin(2.0 * np.pi * lc)
    clav = _soft(np.abs(Y - cy) - P.clav_w * (1.0 + 0.3 * lc), edge)
    clav *= _soft(0.07 - L, 0.03) * _soft(L - 0.8, 0.05)
    D += P.clav_d * clav * body

    # ---- gastric bubble under the left dome
    has_bubble = (P.bubble > 0.4).astype(f32)
    by = dome_l + 0.05 + P.bubble_r * 0.7
    bub = _soft(np.sqrt(((X - P.bubble_x) / 1.3) ** 2 + (Y - by) ** 2) - P.bubble_r * 0.7, edge)
    D -= 0.2 * has_bubble * bub * body * _soft(dia_l + 0.02 - Y, 0.04)

    # ---- tone: density to brightness, exposure, gamma; then blur and noise
    D = np.maximum(D, 0.0)
    v = (1.0 - np.exp(-P.k * D)) / (1.0 - np.exp(-P.k * 1.6))
    v = np.clip(v, 0.0, 1.0) ** P.gamma
    v *= 1.0 + P.grad_x * x + P.grad_y * y
    v = P.black + (P.white - P.black) * v
    sigma_px = np.maximum(P.blur.reshape(-1) / px, 0.45)
    v = _blur(v.astype(f32), sigma_px)
    noise = np.stack([d["pixel"] for d in draws])
    # quantum noise is set per unit area: it is weaker per pixel in a smaller image
    v += P.noise * math.sqrt(size / 256.0) * (0.4 + v) * noise
    img = np.clip(v * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    return img, masks, (shape_r > 0.5) | (shape_l > 0.5)
