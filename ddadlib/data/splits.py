"""The paper's data protocol: Dn, Dt and two unlabeled pools; Du drawn from the pools at an AR.

A split is a dict in the layout of the authors' split files::

    {"train": {"0": [Dn ids], "unlabeled": {"0": [normal pool], "1": [abnormal pool]}},
     "test": {"0": [normal test ids], "1": [abnormal test ids]}}

Images are kept together in *groups* (same patient, or exactly the same pixels): a group never
has images in both training (Dn and the pools) and the test set, and Dn takes no group with an
abnormal image. A patient with both normal and abnormal images thus lands whole in the test set
(both classes) or in the pools.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddadlib.errors import DataError

_ATTEMPTS = 30
#: Above this many states the exact completion of a part is not attempted (memory, time).
_MAX_STATES = 16_000_000
PARTS = ("normal", "pool_normal", "pool_abnormal", "test_normal", "test_abnormal")


def part_lists(split: dict) -> dict[str, list[str]]:
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
    return {name: len(ids) for name, ids in part_lists(split).items()}


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
            if not _present(key):
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


def check_sizes(labels: Sequence[int], n_normal: int, n_test: int) -> None:
    """Raise :class:`DataError` where the class counts alone cannot meet the split sizes."""
    if n_normal < 1 or n_test < 1:
        raise DataError(f"--n-normal and --n-test must be at least 1 (got {n_normal}, {n_test})")
    total = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)
    if total[0] < n_normal + n_test or total[1] < n_test:
        raise DataError(
            f"cannot split {total[0]:,} normal and {total[1]:,} abnormal images into Dn "
            f"{n_normal:,} normal and a test set of {n_test:,} per class: that needs at least "
            f"{n_normal + n_test:,} normal and {n_test:,} abnormal images "
            "(lower --n-normal / --n-test)"
        )


def make_split(
    ids: Sequence[str],
    labels: Sequence[int],
    n_normal: int,
    n_test: int,
    seed: int = 0,
    groups: Sequence[int] | None = None,
) -> dict:
    """Sample Dn (``n_normal`` images) and Dt (``n_test`` per class); the rest become the pools.

    Whole groups are taken in a seeded random order: first into the test set (a group may hold
    both classes there), then groups without an abnormal image into Dn; every other group,
    including those with both normal and abnormal images, goes to the pools. Where the order
    leaves a part a few images short, the last groups are exchanged for others that make the
    size exact. A size that no choice of whole groups can meet is an error that names the
    largest that can. Ids in each list keep the order of ``ids``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(ids)
    if labels.shape != (n,):
        raise ValueError("ids and labels must have the same length")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[int(g)].append(i)
    keys = sorted(members)
    count = {g: tuple(int(c) for c in np.bincount(labels[members[g]], minlength=2)) for g in keys}
    check_sizes(labels, n_normal, n_test)
    if n <= n_normal + 2 * n_test:
        raise DataError(
            f"Dn {n_normal:,} and a test set of {n_test:,} per class take all {n:,} images and "
            "leave none for the unlabeled pools (lower --n-normal / --n-test)"
        )
    # Where abnormal-free groups hold fewer normal images than Dn needs, no order helps but the
    # one that offers the other groups to the test set first (the last attempt).
    clean = sum(c[0] for c in count.values() if c[1] == 0)
    attempts = range(_ATTEMPTS) if clean >= n_normal else (0, _ATTEMPTS - 1)
    # The exact search of the test set covers (n_test + 1)^2 states; above _MAX_STATES only
    # seeded orders are tried.
    exact = (n_test + 1) ** 2 <= _MAX_STATES
    big = max(keys, key=lambda g: sum(count[g]))
    biggest = (
        f"the largest group holds {sum(count[big]):,} images: {count[big][0]:,} normal, "
        f"{count[big][1]:,} abnormal"
    )
    best_dn, test_found = 0, False
    for attempt in attempts:
        rng = np.random.default_rng(seed if attempt == 0 else [seed, attempt])
        order = [keys[j] for j in rng.permutation(len(keys))]
        if attempt == _ATTEMPTS - 1:
            # Last try: offer groups with an abnormal image to the test set first, which keeps
            # the most abnormal-free groups for Dn.
            order.sort(key=lambda g: count[g][1] == 0)
        test = _exact_groups(order, count, (n_test, n_test))
        if test is None and not exact:
            continue
        if test is None:
            largest = _largest_test(keys, count, n_test)
            raise DataError(
                f"no set of whole groups (patients kept together, identical images kept "
                f"together) holds exactly {n_test:,} normal and {n_test:,} abnormal images for "
                f"the test set; the largest test set that can be met is "
                + (
                    f"{largest:,} per class (--n-test {largest})"
                    if largest
                    else f"none up to {n_test:,} per class"
                )
                + f" ({biggest})"
            )
        test_found = True
        taken = set(test)
        clean_rest = [g for g in order if g not in taken and count[g][1] == 0]
        normal = _exact_groups(clean_rest, count, (n_normal, 0))
        if normal is not None:
            break
        best_dn = max(best_dn, _largest_reachable(clean_rest, count, n_normal))
    else:
        if not test_found:
            raise DataError(
                f"could not fill the test set with exactly {n_test:,} normal and {n_test:,} "
                "abnormal images in whole groups (patients, identical images); lower --n-test"
            )
        raise DataError(
            f"Dn cannot hold exactly {n_normal:,} normal images in whole groups without an "
            f"abnormal image beside a test set of {n_test:,} per class (such groups hold "
            f"{clean:,} normal images in all); "
            + (
                f"the largest Dn that can be met with --seed {seed} is {best_dn:,} "
                f"(--n-normal {best_dn}), or lower --n-test"
                if best_dn
                else "the test set leaves no such group (lower --n-test)"
                if clean
                else "no normal image can go to Dn"
            )
        )
    used = taken | set(normal)
    pools = [g for g in keys if g not in used]

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


def _exact_groups(
    order: list[int], count: dict[int, tuple[int, int]], target: tuple[int, int]
) -> list[int] | None:
    """Groups, mostly the earliest of ``order``, whose class counts sum to exactly ``target``.

    Takes each group in turn that still fits; where that falls short, keeps ever shorter
    prefixes of the groups taken and completes each exactly from the others (a subset-sum over
    the groups' class counts), so the result stays close to a random sample. ``None`` when no
    subset of ``order`` sums to ``target``.
    """
    chosen: list[int] = []
    got0 = got1 = 0
    for g in order:
        a, b = count[g]
        if got0 + a <= target[0] and got1 + b <= target[1]:
            chosen.append(g)
            got0, got1 = got0 + a, got1 + b
            if (got0, got1) == target:
                return chosen
    drop = 1
    while True:
        keep = chosen[: max(0, len(chosen) - drop)]
        kept = set(keep)
        need = (
            target[0] - sum(count[g][0] for g in keep),
            target[1] - sum(count[g][1] for g in keep),
        )
        fill = _complete([g for g in order if g not in kept], count, need)
        if fill is not None:
            return keep + fill
        if not keep:
            return None
        drop *= 2


def _bundles(groups: list[int], count: dict[int, tuple[int, int]], need: tuple[int, int]):
    """Groups that fit ``need``, by class counts, as 0/1 items of 1, 2, 4, ... equal groups."""
    by_count: dict[tuple[int, int], list[int]] = defaultdict(list)
    for g in groups:
        c = count[g]
        if c[0] <= need[0] and c[1] <= need[1]:
            by_count[c].append(g)
    items = []  # (count key, copies)
    for key, gs in by_count.items():
        left, size = len(gs), 1
        while left > 0:
            take = min(size, left)
            items.append((key, take))
            left -= take
            size *= 2
    return by_count, items


def _reach(items: list, need: tuple[int, int]) -> np.ndarray:
    """For each state (normal, abnormal) up to ``need``: the first item that reaches it.

    -1 marks the empty sum, ``len(items)`` an unreachable state. A state first reached by item
    ``i`` is that item plus a state reached by earlier items, which lets the sum be traced back.
    """
    never = len(items)
    first = np.full((need[0] + 1, need[1] + 1), never, dtype=np.int32)
    first[0, 0] = -1
    for i, ((a, b), copies) in enumerate(items):
        w0, w1 = a * copies, b * copies
        if w0 > need[0] or w1 > need[1]:
            continue
        src = first[: need[0] + 1 - w0, : need[1] + 1 - w1]
        dst = first[w0:, w1:]
        new = (src < i) & (dst == never)
        dst[new] = i
    return first


def _complete(
    groups: list[int], count: dict[int, tuple[int, int]], need: tuple[int, int]
) -> list[int] | None:
    """Groups from ``groups`` (the earliest of each class count) summing to exactly ``need``."""
    if need[0] < 0 or need[1] < 0:
        return None
    if (need[0] + 1) * (need[1] + 1) > _MAX_STATES:
        return None
    by_count, items = _bundles(groups, count, need)
    first = _reach(items, need)
    s = need
    if first[s] == len(items):
        return None
    copies: dict[tuple[int, int], int] = defaultdict(int)
    while s != (0, 0):
        (a, b), k = items[first[s]]
        copies[(a, b)] += k
        s = (s[0] - a * k, s[1] - b * k)
    return [g for key, k in copies.items() for g in by_count[key][:k]]


def _largest_test(groups: list[int], count: dict[int, tuple[int, int]], n_test: int) -> int:
    """The largest n <= ``n_test`` such that whole groups hold exactly n images of each class."""
    need = (n_test, n_test)
    _, items = _bundles(groups, count, need)
    diagonal = np.diagonal(_reach(items, need)) < len(items)
    hits = np.flatnonzero(diagonal[1:])
    return int(hits[-1] + 1) if len(hits) else 0


def _largest_reachable(groups: list[int], count: dict[int, tuple[int, int]], n_normal: int) -> int:
    """The largest sum <= ``n_normal`` of the normal counts of some of ``groups``."""
    need = (n_normal, 0)
    _, items = _bundles(groups, count, need)
    hits = np.flatnonzero(_reach(items, need)[:, 0] < len(items))
    return int(hits[-1])


def group_names(
    patient_ids: Sequence[str | None], md5s: Sequence[str | None], groups: Sequence[int]
) -> dict[int, str]:
    """A readable name of each group of :func:`group_images`: its patient(s), or its pixel md5."""
    patients: dict[int, list[str]] = defaultdict(list)
    digests: dict[int, str] = {}
    for p, m, g in zip(patient_ids, md5s, groups):
        g = int(g)
        if _present(p) and str(p) not in patients[g]:
            patients[g].append(str(p))
        if _present(m):
            digests.setdefault(g, str(m))
    names = {}
    for g in {int(g) for g in groups}:
        if patients[g]:
            names[g] = (
                "patient "
                + " / ".join(repr(p) for p in patients[g][:3])
                + (" (joined by identical images)" if len(patients[g]) > 1 else "")
            )
        elif g in digests:
            names[g] = f"identical images (pixel md5 {digests[g]})"
        else:
            names[g] = f"group {g}"
    return names


def _present(key: object) -> bool:
    return not (key is None or (isinstance(key, float) and np.isnan(key)) or key == "")


def validate_split(
    split: dict,
    ids: Sequence[str],
    labels: Sequence[int],
    groups: Sequence[int] | None = None,
    where: str = "split",
    names: dict[int, str] | None = None,
) -> None:
    """Check a split against a manifest; raise :class:`DataError` naming ``where`` on a problem.

    Checks: known ids, no image in two parts, labels that match each part, Dn and both test
    classes non-empty, some unlabeled image, and, with ``groups`` (patients or identical
    images), that no group has images both in training (Dn, pools) and in the test set and
    that Dn holds no group with an abnormal image. Inside the test set, and inside the pools,
    a group may hold both classes. ``names`` (see :func:`group_names`) name the groups in the
    message.
    """
    parts = part_lists(split)
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
    if groups is None:
        return
    groups = np.asarray(groups)

    def name(g: int, id_: str) -> str:
        return names[g] if names and g in names else f"the group of image {id_!r}"

    train_side = ("normal", "pool_normal", "pool_abnormal")
    first_of: dict[int, tuple[str, str]] = {}  # group -> (side, first id and part seen there)
    for id_, part in seen.items():
        g = int(groups[index[id_]])
        side = "training" if part in train_side else "test"
        other = first_of.setdefault(g, (side, f"{id_!r} in {part}"))
        if other[0] != side:
            raise DataError(
                f"{where}: {name(g, id_)} has images in both {other[0]} ({other[1]}) and "
                f"{side} ({id_!r} in {part}); a patient's images, and images with identical pixels, "
                "must all be on one side: training (Dn, pools) or test"
            )
    abnormal = {int(g): i for i, g in enumerate(groups) if labels[i] == 1}
    for id_ in parts["normal"]:
        g = int(groups[index[id_]])
        if g in abnormal:
            raise DataError(
                f"{where}: {name(g, id_)} has image {id_!r} in Dn (normal) and an abnormal "
                f"image, {ids[abnormal[g]]!r}; Dn takes only patients without an abnormal image"
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
        parts = part_lists(raw)
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
    parts = part_lists(split)
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
