import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddadlib.data.splits import (
    ar_range,
    draw_unlabeled,
    group_images,
    group_names,
    make_split,
    max_unlabeled,
    n_abnormal_at,
    part_lists,
    split_from_file,
    split_sizes,
    validate_split,
)
from ddadlib.errors import DataError


def toy(n0=60, n1=40):
    ids = [f"img{i:03d}" for i in range(n0 + n1)]
    labels = [0] * n0 + [1] * n1
    return ids, labels


def pools(p0, p1):
    return {
        "train": {
            "0": ["n"],
            "unlabeled": {"0": [f"u0_{i}" for i in range(p0)], "1": [f"u1_{i}" for i in range(p1)]},
        },
        "test": {"0": ["t0"], "1": ["t1"]},
    }


def test_group_images_joins_patients_and_duplicates():
    g = group_images(["a", "b", "a", "", None, "c"], ["x", "y", "z", "y", "w", "w"])
    assert g[0] == g[2]  # same patient
    assert g[1] == g[3]  # same pixels
    assert g[4] == g[5]  # same pixels, no patient id
    assert len({g[0], g[1], g[4]}) == 3
    assert g.tolist() == [0, 1, 0, 1, 2, 2]


def test_make_split_sizes_and_disjoint():
    ids, labels = toy()
    split = make_split(ids, labels, n_normal=20, n_test=10, seed=1)
    s = split_sizes(split)
    assert s == {
        "normal": 20,
        "pool_normal": 30,
        "pool_abnormal": 30,
        "test_normal": 10,
        "test_abnormal": 10,
    }
    validate_split(split, ids, labels)
    all_ids = sum(
        [
            split["train"]["0"],
            split["train"]["unlabeled"]["0"],
            split["train"]["unlabeled"]["1"],
            split["test"]["0"],
            split["test"]["1"],
        ],
        [],
    )
    assert sorted(all_ids) == sorted(ids)


def test_make_split_is_seeded_and_not_first_n():
    ids, labels = toy()
    a = make_split(ids, labels, n_normal=20, n_test=10, seed=1)
    b = make_split(ids, labels, n_normal=20, n_test=10, seed=1)
    c = make_split(ids, labels, n_normal=20, n_test=10, seed=2)
    assert json.dumps(a) == json.dumps(b)
    assert a != c
    assert a["train"]["0"] != ids[:20]


def test_make_split_keeps_groups_together():
    rng = np.random.default_rng(0)
    ids, labels = toy(200, 120)
    patients = [
        f"p{rng.integers(0, 90)}" if lab == 0 else f"q{rng.integers(0, 60)}" for lab in labels
    ]
    groups = group_images(patients, [None] * len(ids))
    split = make_split(ids, labels, n_normal=60, n_test=30, seed=3, groups=groups)
    validate_split(split, ids, labels, groups)  # raises when a group crosses parts
    part_of = {}
    for part, members in [
        ("dn", split["train"]["0"]),
        ("pool", split["train"]["unlabeled"]["0"] + split["train"]["unlabeled"]["1"]),
        ("test", split["test"]["0"] + split["test"]["1"]),
    ]:
        for m in members:
            part_of[m] = part
    by_patient = {}
    for id_, p in zip(ids, patients):
        by_patient.setdefault(p, set()).add(part_of[id_])
    assert all(len(v) == 1 for v in by_patient.values())
    assert split_sizes(split)["normal"] == 60 and split_sizes(split)["test_abnormal"] == 30


def test_make_split_errors_when_too_few_images():
    ids, labels = toy(30, 5)
    with pytest.raises(DataError, match="at least"):
        make_split(ids, labels, n_normal=25, n_test=10)


def test_validate_split_catches_problems():
    ids, labels = toy(10, 10)
    good = make_split(ids, labels, n_normal=4, n_test=2, seed=0)
    bad = json.loads(json.dumps(good))
    bad["test"]["0"].append(bad["train"]["0"][0])
    with pytest.raises(DataError, match="both"):
        validate_split(bad, ids, labels)
    bad = json.loads(json.dumps(good))
    bad["train"]["0"].append(bad["test"]["1"].pop())
    with pytest.raises(DataError, match="label 1"):
        validate_split(bad, ids, labels)
    bad = json.loads(json.dumps(good))
    bad["test"]["1"] = []
    with pytest.raises(DataError, match="empty"):
        validate_split(bad, ids, labels)
    bad = json.loads(json.dumps(good))
    bad["test"]["1"].append("nope")
    with pytest.raises(DataError, match="not in the dataset"):
        validate_split(bad, ids, labels)
    # a duplicate pair split between Dn and test
    groups = np.arange(len(ids))
    a, b = good["train"]["0"][0], good["test"]["0"][0]
    groups[ids.index(b)] = groups[ids.index(a)]
    with pytest.raises(DataError, match="identical pixels"):
        validate_split(good, ids, labels, groups)


def test_split_from_file_matches_by_stem(tmp_path):
    ids = [f"stage_2_train_images/p{i}.dcm" for i in range(8)]
    raw = {
        "train": {"0": ["p0.png", "p1.png"], "unlabeled": {"0": ["p2.png"], "1": ["p3.png"]}},
        "test": {"0": ["p4.png"], "1": ["stage_2_train_images/p5.dcm"]},
    }
    f = tmp_path / "split.json"
    f.write_text(json.dumps(raw))
    split = split_from_file(f, ids)
    assert split["train"]["0"] == ids[:2]
    assert split["test"]["1"] == [ids[5]]
    raw["test"]["0"].append("p99.png")
    f.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"split.json: 1 names are not in the dataset.*p99"):
        split_from_file(f, ids)
    f.write_text('{"train": {}}')
    with pytest.raises(DataError, match="layout"):
        split_from_file(f, ids)


def test_draw_unlabeled_counts_and_seed():
    split = pools(50, 80)
    du = draw_unlabeled(split, 40, 0.6, seed=0)
    assert len(du) == 40 and len(set(du)) == 40
    assert sum(d.startswith("u1_") for d in du) == 24
    assert du == draw_unlabeled(split, 40, 0.6, seed=0)
    assert du != draw_unlabeled(split, 40, 0.6, seed=1)
    assert sorted(du) != sorted([f"u0_{i}" for i in range(16)] + [f"u1_{i}" for i in range(24)])


def test_draws_at_different_ar_are_nested():
    split = pools(50, 80)
    low = set(draw_unlabeled(split, 40, 0.2, seed=5))
    high = set(draw_unlabeled(split, 40, 0.8, seed=5))
    ab_low = {d for d in low if d.startswith("u1_")}
    n_high = {d for d in high if d.startswith("u0_")}
    assert ab_low <= high and n_high <= low


def test_draw_unlabeled_refuses_what_the_pools_cannot_meet():
    split = pools(10, 30)
    with pytest.raises(DataError, match=r"AR must be between 0\.6 and 1"):
        draw_unlabeled(split, 25, 0.2)
    with pytest.raises(DataError, match="at any AR"):
        draw_unlabeled(split, 41, 0.5)
    with pytest.raises(DataError, match="between 0 and 1"):
        draw_unlabeled(split, 10, 1.5)
    assert draw_unlabeled(split, 0, 0.5) == []


def test_ar_range_and_max_unlabeled():
    split = pools(10, 30)
    assert ar_range(split, 25) == (0.6, 1.0)
    assert ar_range(split, 41) is None
    assert max_unlabeled(split, 0.0) == 10
    assert max_unlabeled(split, 1.0) == 30
    m = max_unlabeled(split, 0.6)
    assert n_abnormal_at(m, 0.6) <= 30 and m - n_abnormal_at(m, 0.6) <= 10
    assert max_unlabeled(split, 0.6) == 25
    # the paper's VinBigData pools: AR above about 0.85 cannot be met with M = 4000
    vin = pools(5606, 3394)
    lo, hi = ar_range(vin, 4000)
    assert lo == 0 and hi == pytest.approx(0.8485)


def test_n_abnormal_at_is_robust_to_float_rounding():
    assert n_abnormal_at(100, 0.29) == 29  # 100 * 0.29 == 28.999999999999996
    assert n_abnormal_at(4000, 0.6) == 2400
    assert n_abnormal_at(7, 0.5) == 3


def mixed_structure():
    """40 patients: 8 (20%) with a normal and an abnormal image, 16 normal-only, 16 abnormal-only
    (one or two images each)."""
    ids, labels, patients = [], [], []
    for p in range(40):
        visits = [0, 1] if p % 5 == 0 else [0 if p % 5 in (1, 2) else 1] * (1 + p % 2)
        for v, label in enumerate(visits):
            ids.append(f"p{p:02d}_{v}")
            labels.append(label)
            patients.append(f"p{p:02d}")
    return ids, labels, patients


def test_mixed_patients_land_in_test_or_pools_never_dn():
    ids, labels, patients = mixed_structure()
    groups = group_images(patients, [None] * len(ids))
    names = group_names(patients, [None] * len(ids), groups)
    mixed = {p for p in patients if {lab for q, lab in zip(patients, labels) if q == p} == {0, 1}}
    places = set()
    for seed in range(10):
        split = make_split(ids, labels, n_normal=8, n_test=5, seed=seed, groups=groups)
        validate_split(split, ids, labels, groups, names=names)
        side = {i: part for part, members in part_lists(split).items() for i in members}
        for p in mixed:
            held = frozenset(side[i] for i, q in zip(ids, patients) if q == p)
            assert "normal" not in held
            places.add(held)
    assert places == {
        frozenset({"test_normal", "test_abnormal"}),
        frozenset({"pool_normal", "pool_abnormal"}),
    }


def test_validate_split_draws_the_line_between_training_and_test():
    ids = ["a0", "a1", "b0", "b1", "c0", "c1", "d0", "d1", "e0"]
    labels = [0, 1, 0, 1, 0, 0, 0, 1, 1]
    patients = ["A", "A", "B", "B", "C", "C", "D", "D", ""]
    md5s = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m6"]  # e0 has d0's pixels
    groups = group_images(patients, md5s)
    names = group_names(patients, md5s, groups)
    good = {
        "train": {"0": ["c0"], "unlabeled": {"0": ["b0", "c1"], "1": ["b1"]}},
        "test": {"0": ["a0", "d0"], "1": ["a1", "d1", "e0"]},
    }
    # A and D/e0 hold both classes inside the test set, B inside the pools; C spans Dn and pools
    validate_split(good, ids, labels, groups, names=names)
    crossing = {
        "train": {"0": ["c0"], "unlabeled": {"0": ["b0", "c1"], "1": ["b1", "a1"]}},
        "test": {"0": ["a0", "d0"], "1": ["d1", "e0"]},
    }
    with pytest.raises(
        DataError,
        match=r"x: patient 'A' has images in both training \('a1' "
        r"in pool_abnormal\) and test \('a0' in test_normal\)",
    ):
        validate_split(crossing, ids, labels, groups, where="x", names=names)
    in_dn = {
        "train": {"0": ["c0", "b0"], "unlabeled": {"0": ["c1"], "1": ["b1"]}},
        "test": {"0": ["a0", "d0"], "1": ["a1", "d1", "e0"]},
    }
    with pytest.raises(
        DataError,
        match=r"patient 'B' has image 'b0' in Dn \(normal\) and an "
        r"abnormal image, 'b1'",
    ):
        validate_split(in_dn, ids, labels, groups, names=names)
    dup = {
        "train": {"0": ["c0"], "unlabeled": {"0": ["b0", "c1"], "1": ["b1", "e0"]}},
        "test": {"0": ["a0", "d0"], "1": ["a1", "d1"]},
    }
    with pytest.raises(DataError, match=r"patient 'D' has images in both"):
        validate_split(dup, ids, labels, groups, names=names)
    only_md5 = group_names(["", ""], ["ff00", "ff00"], [0, 0])
    assert only_md5 == {0: "identical images (pixel md5 ff00)"}


def test_test_size_that_no_groups_meet_names_the_largest():
    # every patient has 2 normal and 2 abnormal images, and 100 normal-only singletons for Dn
    ids = [f"i{i}" for i in range(500)]
    labels = [0, 0, 1, 1] * 100 + [0] * 100
    groups = [i // 4 for i in range(400)] + list(range(1000, 1100))
    with pytest.raises(
        DataError,
        match=r"exactly 3 normal and 3 abnormal images for the test "
        r"set; the largest test set that can be met is 2 per "
        r"class \(--n-test 2\)",
    ):
        make_split(ids, labels, n_normal=10, n_test=3, groups=groups)
    assert (
        split_sizes(make_split(ids, labels, n_normal=10, n_test=2, groups=groups))["test_abnormal"]
        == 2
    )
    with pytest.raises(
        DataError,
        match=r"Dn cannot hold exactly 150 normal images.*the largest "
        r"Dn that can be met with --seed 0 is 100 "
        r"\(--n-normal 100\)",
    ):
        make_split(ids, labels, n_normal=150, n_test=4, groups=groups)
    assert (
        split_sizes(make_split(ids, labels, n_normal=100, n_test=4, groups=groups))["normal"] == 100
    )


def _sums(counts):
    reach = {(0, 0)}
    for a, b in counts:
        reach |= {(x + a, y + b) for x, y in reach}
    return reach


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3)).filter(lambda c: sum(c) > 0),
        min_size=1,
        max_size=24,
    ),
    st.integers(0, 10),
    st.integers(0, 10),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(0, 3),
)
def test_property_no_group_crosses_training_and_test(
    structure, singles0, singles1, n_normal, n_test, seed
):
    """Random groups (plus singletons): sizes met exactly, or an error whose claim holds."""
    structure = structure + [(1, 0)] * singles0 + [(0, 1)] * singles1
    ids, labels, groups = [], [], []
    for g, (a, b) in enumerate(structure):
        for label, k in ((0, a), (1, b)):
            for j in range(k):
                ids.append(f"g{g}_{label}_{j}")
                labels.append(label)
                groups.append(g)
    try:
        split = make_split(ids, labels, n_normal, n_test, seed=seed, groups=groups)
    except DataError as exc:
        msg = str(exc)
        m = re.search(r"largest test set that can be met is (\d+|none)", msg)
        if m:
            reach = _sums(structure)
            assert (n_test, n_test) not in reach
            largest = 0 if m.group(1) == "none" else int(m.group(1))
            assert all((n, n) not in reach for n in range(largest + 1, n_test + 1))
            assert largest == 0 or (largest, largest) in reach
            return
        m = re.search(r"largest Dn that can be met with --seed \d+ is (\d+)", msg)
        if m:
            assert int(m.group(1)) < n_normal
            if int(m.group(1)):
                make_split(ids, labels, int(m.group(1)), n_test, seed=seed, groups=groups)
            return
        total = np.bincount(labels, minlength=2)
        clear = (
            ("that needs at least" in msg and (total[0] < n_normal + n_test or total[1] < n_test))
            or ("leave none for the unlabeled pools" in msg and len(ids) <= n_normal + 2 * n_test)
            or "the test set leaves no such group" in msg
            or ("no normal image can go to Dn" in msg and all(b for a, b in structure if a))
        )
        assert clear, msg
        return
    sizes = split_sizes(split)
    assert (sizes["normal"], sizes["test_normal"], sizes["test_abnormal"]) == (
        n_normal,
        n_test,
        n_test,
    )
    side = {i: part for part, members in part_lists(split).items() for i in members}
    assert sorted(side) == sorted(ids)
    for g, _ in enumerate(structure):
        held = {side[i] for i, h in zip(ids, groups) if h == g}
        assert held <= {"test_normal", "test_abnormal"} or not held & {
            "test_normal",
            "test_abnormal",
        }
        if "normal" in held:
            assert structure[g][1] == 0 and held == {"normal"}
    validate_split(split, ids, labels, groups)
