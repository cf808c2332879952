"""The presets and the two rules that size Du (M): Table 1's and the ablation's."""

import dataclasses

import pytest

from ddadlib import course
from ddadlib.errors import ConfigError, DataError
from ddadlib.paper import PAPER_ARS, PAPER_BATCH_SIZE, PAPER_K, PAPER_LR, PAPER_UNLABELED
from ddadlib.presets import PRESETS, Preset, ablation_unlabeled, preset, table_unlabeled
from ddadlib.runs.reproduce import PROTOCOLS


def split(pool_normal: int, pool_abnormal: int) -> dict:
    ids = lambda tag, n: [f"{tag}{i}" for i in range(n)]  # noqa: E731
    return {
        "train": {
            "0": ids("n", 10),
            "unlabeled": {"0": ids("p", pool_normal), "1": ids("a", pool_abnormal)},
        },
        "test": {"0": ids("t", 5), "1": ids("u", 5)},
    }


def test_one_preset_system_for_the_demo_the_course_and_reproduce():
    assert set(PRESETS) == {"quick", "class", "demo", "cpu", "paper", "full"}
    assert all(type(p) is Preset and p.name == name for name, p in PRESETS.items())
    assert all(PROTOCOLS[name] is PRESETS[name] for name in PROTOCOLS)
    assert all(course.MODES[name] is PRESETS[name] for name in course.MODES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["cpu"].epochs = 3
    # the paper's training settings are every preset's
    assert {(p.k, p.batch_size, p.lr) for p in PRESETS.values()} == {
        (PAPER_K, PAPER_BATCH_SIZE, PAPER_LR)
    }
    assert PRESETS["paper"].epochs == PRESETS["full"].epochs == 250
    assert PRESETS["demo"].m == 500 and PRESETS["demo"].epochs == 40
    assert (PRESETS["cpu"].epochs, PRESETS["cpu"].fanogan_epochs) == (20, 100)
    assert PRESETS["class"].synthetic()["n_normal"] == 500
    with pytest.raises(ConfigError, match="unknown preset 'fast'.*quick"):
        preset("fast")


def test_table1_m_is_the_papers_where_the_pools_allow_it():
    assert table_unlabeled(split(5000, 5000)) == PAPER_UNLABELED
    # at AR 0.6, 300 normal images in the pool allow M = 750 (450 abnormal + 300 normal)
    assert table_unlabeled(split(300, 5000)) == 750
    assert table_unlabeled(split(300, 5000), ar=1.0) == PAPER_UNLABELED
    with pytest.raises(DataError, match="cannot supply"):
        table_unlabeled(split(0, 0))


def test_ablation_m_is_one_for_every_ar():
    # AR 0 needs normal images only, AR 1 abnormal only: the smaller pool bounds M
    assert ablation_unlabeled(split(300, 5000), PAPER_ARS) == 300
    assert ablation_unlabeled(split(5000, 5000), PAPER_ARS) == PAPER_UNLABELED
    assert ablation_unlabeled(split(300, 5000), [0.6]) == table_unlabeled(split(300, 5000))
    with pytest.raises(DataError, match="every AR"):
        ablation_unlabeled(split(300, 0), PAPER_ARS)
    with pytest.raises(ConfigError, match="no AR"):
        ablation_unlabeled(split(300, 300), [])


def test_the_rules_read_a_prepared_dataset(tiny_synthetic):
    # pools of 30 + 30: 51 at AR 0.6 (30 abnormal + 21 normal); 30 at every AR
    assert table_unlabeled(tiny_synthetic) == 51
    assert ablation_unlabeled(tiny_synthetic, PAPER_ARS) == 30
