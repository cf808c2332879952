"""The paper's data protocol: Dn, Dt and two unlabeled pools; Du drawn from the pools at an AR.

A split is a dict in the layout of the authors' split files::

    {"train": {"0": [Dn ids], "unlabeled": {"0": [normal pool], "1": [abnormal pool]}},
     "test": {"0": [normal test ids], "1": [abnormal test ids]}}

Images are kept together in *groups* (same patient, or exactly the same pixels); a group never
crosses parts, where the two pools count as one part.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddadlib.errors import DataError

_ATTEMPTS = 200
PARTS = ("normal", "pool_normal", "pool_abnormal", "test_normal", "test_abnormal")


def _part_lists(split: dict) -> dict[str, list[str]]:
    """The five id lists of a split by part name (see :data:`PARTS`)."""
    try:
        return {
            "normal": list(split["train"]["0"]),
            "pool_normal": list(split["train"]["unlabeled"]["0"]),
            "pool_abnormal": list(split["train"]["unlabeled"]["1"]),
            "test_normal": list(split["test"]["0"]),
            "test_abnormal": list(split["test"]["1"]),
        }
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"split is not in the expected layout (missing {exc}); expected "
            '{"train": {"0": [...], "unlabeled": {"0": [...], "1": [...]}}, '
            '"test": {"0": [...], "1": [...]}}'
        ) from None


def _from_parts(parts: dict[str, list[str]]) -> dict:
    return {
        "train": {
            "0": list(parts["normal"]),
            "unlabeled": {"0": list(parts["pool_normal"]), "1": list(parts["pool_abnormal"])},
        },
        "test": {"0": list(parts["test_normal"]), "1": list(parts["test_abnormal"])},
    }


def split_sizes(split: dict) -> dict[str, int]:
    """Number of images in each part of a split."""
    return {name: len(ids) for name, ids in _part_lists(split).items()}


def format_sizes(split: dict) -> str:
    """A one-line summary of a split's sizes, as printed by ``ddad prepare``."""
    s = split_sizes(split)
    return (
        f"Dn {s['normal']:,} normal; pools {s['pool_normal']:,} normal + "
        f"{s['pool_abnormal']:,} abnormal; test {s['test_normal']:,} normal + "
        f"{s['test_abnormal']:,} abnormal"
    )


def group_images(patient_ids: Sequence[str | None], md5s: Sequence[str | None]) -> np.ndarray:
    """Group labels such that images of one patient, or with identical pixels, share a group.

    Empty or missing patient ids and digests group nothing. Groups are numbered 0, 1, ... in
    order of their first image.
    """
    n = len(patient_ids)
    if len(md5s) != n:
        raise ValueError("patient_ids and md5s must have the same length")
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in (patient_ids, md5s):
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key is None or (isinstance(key, float) and np.isnan(key)) or key == "":
                continue
            if key in first:
                a, b = find(first[key]), find(i)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first[key] = i
    roots = [find(i) for i in range(n)]
    numbering: dict[int, int] = {}
    return np.array([numbering.setdefault(r, len(numbering)) for r in roots], dtype=np.int64)


def make_split(
    ids: Sequence[str],
    labels: Sequence[int],
    n_normal: int,
    n_test: int,
    seed: int = 0,
    groups: Sequence[int] | None = None,
) -> dict:
    """Sample Dn (``n_normal`` images) and Dt (``n_test`` per class); the rest become the pools.

    Whole groups are sampled in a seeded random order; a group that would overshoot a part's
    size is passed over, and where that leaves a part short, further orders derived from the
    seed are tried, so sizes are met exactly. Groups that hold
    an abnormal image never enter Dn. Ids in each list keep the order of ``ids``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(ids)
    if labels.shape != (n,):
        raise ValueError("ids and labels must have the same length")
    if n_normal < 1 or n_test < 1:
        raise DataError(f"--n-normal and --n-test must be at least 1 (got {n_normal}, {n_test})")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[int(g)].append(i)
    keys = sorted(members)
    count = {g: np.bincount(labels[members[g]], minlength=2) for g in keys}
    total = np.bincount(labels, minlength=2)
    if total[0] < n_normal + n_test or total[1] < n_test:
        raise DataError(
            f"cannot split {total[0]:,} normal and {total[1]:,} abnormal images into Dn "
            f"{n_normal:,} normal and a test set of {n_test:,} per class: that needs at least "
            f"{n_normal + n_test:,} normal and {n_test:,} abnormal images "
            "(lower --n-normal / --n-test)"
        )
    # Groups of several images can leave a part a few images short of its size (a subset-sum
    # problem); another seeded order then usually fits exactly.
    for attempt in range(_ATTEMPTS):
        rng = np.random.default_rng(seed if attempt == 0 else [seed, attempt])
        order = [keys[j] for j in rng.permutation(len(keys))]
        test, normal, pools, got_test, got_normal = _fill(order, count, n_normal, n_test)
        if got_test[0] == n_test and got_test[1] == n_test and got_normal == n_normal:
            break
    else:
        raise DataError(
            f"could not fill the parts exactly while keeping patients and duplicate images "
            f"together: got Dn {got_normal:,} of {n_normal:,}, test {got_test[0]:,} of {n_test:,} "
            f"normal and {got_test[1]:,} of {n_test:,} abnormal; the largest group holds "
            f"{max(len(m) for m in members.values()):,} images (change --n-normal / --n-test)"
        )

    def ids_of(gs: list[int], label: int | None = None) -> list[str]:
        idx = sorted(i for g in gs for i in members[g] if label is None or labels[i] == label)
        return [ids[i] for i in idx]

    return _from_parts(
        {
            "normal": ids_of(normal),
            "pool_normal": ids_of(pools, 0),
            "pool_abnormal": ids_of(pools, 1),
            "test_normal": ids_of(test, 0),
            "test_abnormal": ids_of(test, 1),
        }
    )


def _fill(order: list[int], count: dict[int, np.ndarray], n_normal: int, n_test: int):
    """Assign groups in ``order``: first to the test set, then normal-only ones to Dn."""
    test, normal, rest, pools = [], [], [], []
    got_test = np.zeros(2, dtype=np.int64)
    for g in order:
        c = count[g]
        if got_test.sum() < 2 * n_test and np.all(got_test + c <= n_test):
            test.append(g)
            got_test += c
        else:
            rest.append(g)
    got_normal = 0
    for g in rest:
        c = count[g]
        if c[1] == 0 and got_normal + c[0] <= n_normal and got_normal < n_normal:
            normal.append(g)
            got_normal += int(c[0])
        else:
            pools.append(g)
    return test, normal, pools, got_test, got_normal


def validate_split(
    split: dict,
    ids: Sequence[str],
    labels: Sequence[int],
    groups: Sequence[int] | None = None,
    where: str = "split",
) -> None:
    """Check a split against a manifest; raise :class:`DataError` naming ``where`` on a problem.

    Checks: known ids, no image in two parts, labels that match each part, Dn and both test
    classes non-empty, some unlabeled image, and no group (patient or duplicate) across parts.
    """
    parts = _part_lists(split)
    index = {id_: i for i, id_ in enumerate(ids)}
    labels = np.asarray(labels)
    want = {"normal": 0, "pool_normal": 0, "pool_abnormal": 1, "test_normal": 0, "test_abnormal": 1}
    seen: dict[str, str] = {}
    for part, members in parts.items():
        for id_ in members:
            if id_ not in index:
                raise DataError(f"{where}: image {id_!r} in {part} is not in the dataset")
            if id_ in seen:
                raise DataError(f"{where}: image {id_!r} is in both {seen[id_]} and {part}")
            seen[id_] = part
            if labels[index[id_]] != want[part]:
                raise DataError(
                    f"{where}: image {id_!r} has label {labels[index[id_]]} but is in {part}"
                )
    for part in ("normal", "test_normal", "test_abnormal"):
        if not parts[part]:
            raise DataError(f"{where}: the part {part} is empty")
    if not parts["pool_normal"] and not parts["pool_abnormal"]:
        raise DataError(f"{where}: both unlabeled pools are empty")
    if groups is not None:
        side = {"pool_normal": "pools", "pool_abnormal": "pools"}
        where_group: dict[int, str] = {}
        for id_, part in seen.items():
            g = int(groups[index[id_]])
            p = side.get(part, part)
            if where_group.setdefault(g, p) != p:
                raise DataError(
                    f"{where}: image {id_!r} ({p}) shares a patient or identical pixels with an "
                    f"image in {where_group[g]}"
                )


def split_from_file(path: str | Path, ids: Sequence[str]) -> dict:
    """Read a split file in the authors' layout and map its names onto manifest ids.

    Names match an id exactly or, failing that, by file stem (the authors list converted
    ``.png`` names while a prepared dataset keeps the original ``.dcm`` path).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the split file ({exc})") from None
    try:
        parts = _part_lists(raw)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    exact = set(ids)
    by_stem: dict[str, list[str]] = defaultdict(list)
    for id_ in ids:
        by_stem[Path(id_).stem].append(id_)
    mapped: dict[str, list[str]] = {}
    missing: list[str] = []
    for part, names in parts.items():
        out = []
        for name in names:
            name = str(name)
            if name in exact:
                out.append(name)
                continue
            hits = by_stem.get(Path(name).stem, [])
            if len(hits) == 1:
                out.append(hits[0])
            elif len(hits) > 1:
                raise DataError(f"{path}: name {name!r} matches several images: {hits[:3]}")
            else:
                missing.append(name)
        mapped[part] = out
    if missing:
        raise DataError(
            f"{path}: {len(missing):,} names are not in the dataset (e.g. {missing[:3]}); "
            "was the dataset prepared from the same download?"
        )
    return _from_parts(mapped)


def ar_range(split: dict, m: int) -> tuple[float, float] | None:
    """The range of anomaly rates at which the pools can supply ``m`` unlabeled images.

    ``None`` when ``m`` exceeds both pools together.
    """
    s = split_sizes(split)
    p0, p1 = s["pool_normal"], s["pool_abnormal"]
    if m > p0 + p1:
        return None
    if m == 0:
        return (0.0, 1.0)
    return (max(0, m - p0) / m, min(m, p1) / m)


def n_abnormal_at(m: int, ar: float) -> int:
    """``int(m * ar)``, the number of abnormal images in Du, robust to float rounding."""
    return int(np.floor(m * ar + 1e-9))


def max_unlabeled(split: dict, ar: float) -> int:
    """The largest M that the pools can supply at anomaly rate ``ar``."""
    s = split_sizes(split)
    p0, p1 = s["pool_normal"], s["pool_abnormal"]
    for m in range(p0 + p1, -1, -1):
        k = n_abnormal_at(m, ar)
        if k <= p1 and m - k <= p0:
            return m
    return 0


def draw_unlabeled(split: dict, m: int, ar: float, seed: int = 0) -> list[str]:
    """Draw Du: ``int(m * ar)`` abnormal and the rest normal images from the pools, seeded.

    For one seed, draws at different ARs are nested: each pool is shuffled once by the seed and
    its first images are taken, so an AR ablation changes as few images as possible.
    Raises :class:`DataError` (naming the AR range the pools can meet) instead of shrinking Du.
    """
    if not 0.0 <= ar <= 1.0:
        raise DataError(f"the anomaly rate must be between 0 and 1 (got {ar})")
    if m < 0:
        raise DataError(f"the number of unlabeled images must be >= 0 (got {m})")
    parts = _part_lists(split)
    p0, p1 = parts["pool_normal"], parts["pool_abnormal"]
    k = n_abnormal_at(m, ar)
    if k > len(p1) or m - k > len(p0):
        rng_ = ar_range(split, m)
        pools = f"pools of {len(p0):,} normal and {len(p1):,} abnormal images"
        if rng_ is None:
            raise DataError(
                f"cannot draw {m:,} unlabeled images from {pools} at any AR "
                f"(at most {len(p0) + len(p1):,}; at AR {ar} at most {max_unlabeled(split, ar):,})"
            )
        raise DataError(
            f"cannot draw {m:,} unlabeled images at AR {ar} ({k:,} abnormal + {m - k:,} normal) "
            f"from {pools}: with M = {m:,} the AR must be between {rng_[0]:.4g} and "
            f"{rng_[1]:.4g}; at AR {ar} M can be at most {max_unlabeled(split, ar):,}"
        )
    # Separate streams per pool, so the normal picks do not depend on how many abnormal are taken.
    ss = np.random.SeedSequence(seed).spawn(2)
    perm0 = np.random.default_rng(ss[0]).permutation(len(p0))[: m - k]
    perm1 = np.random.default_rng(ss[1]).permutation(len(p1))[:k]
    return [p0[i] for i in sorted(perm0)] + [p1[i] for i in sorted(perm1)]
