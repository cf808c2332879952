import json

import numpy as np
import pytest

from ddadlib.errors import DataError
from ddadlib.splits import (
    ar_range,
    draw_unlabeled,
    group_images,
    make_split,
    max_unlabeled,
    n_abnormal_at,
    split_from_file,
    split_sizes,
    validate_split,
)


def toy(n0=60, n1=40):
    ids = [f"img{i:03d}" for i in range(n0 + n1)]
    labels = [0] * n0 + [1] * n1
    return ids, labels


def pools(p0, p1):
    return {"train": {"0": ["n"], "unlabeled": {"0": [f"u0_{i}" for i in range(p0)],
                                                "1": [f"u1_{i}" for i in range(p1)]}},
            "test": {"0": ["t0"], "1": ["t1"]}}


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
    assert s == {"normal": 20, "pool_normal": 30, "pool_abnormal": 30, "test_normal": 10,
                 "test_abnormal": 10}
    validate_split(split, ids, labels)
    all_ids = sum([split["train"]["0"], split["train"]["unlabeled"]["0"],
                   split["train"]["unlabeled"]["1"], split["test"]["0"], split["test"]["1"]], [])
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
    patients = [f"p{rng.integers(0, 90)}" if l == 0 else f"q{rng.integers(0, 60)}"
                for l in labels]
    groups = group_images(patients, [None] * len(ids))
    split = make_split(ids, labels, n_normal=60, n_test=30, seed=3, groups=groups)
    validate_split(split, ids, labels, groups)  # raises when a group crosses parts
    part_of = {}
    for part, members in [("dn", split["train"]["0"]), ("pool", split["train"]["unlabeled"]["0"]
                          + split["train"]["unlabeled"]["1"]),
                          ("test", split["test"]["0"] + split["test"]["1"])]:
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
    raw = {"train": {"0": ["p0.png", "p1.png"], "unlabeled": {"0": ["p2.png"], "1": ["p3.png"]}},
           "test": {"0": ["p4.png"], "1": ["stage_2_train_images/p5.dcm"]}}
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
