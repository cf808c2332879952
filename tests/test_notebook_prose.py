"""The notebooks' prose holds no measured numbers: prose says what to look for, code prints the
numbers (and the paper's come from ddadlib.paper, through code)."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted(Path(__file__).resolve().parents[1].glob("notebooks/**/*.ipynb"))
# An AUC-like decimal: 0.815, 0.47, .92 (two or more digits after the point).
AUC_LIKE = re.compile(r"(?<![\d.])(?:0?\.\d{2,})(?![\d])")
# What is not prose: inline code, display and inline math.
NOT_PROSE = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$]*\$", re.S)


def measured_numbers(markdown: str) -> list[str]:
    """The AUC-like decimals of a markdown cell's prose."""
    return AUC_LIKE.findall(NOT_PROSE.sub(" ", markdown))


def test_the_scan_finds_numbers_in_prose_only():
    assert measured_numbers("Inter scored 0.877, intra 0.473 and .92.") == ["0.877", "0.473", ".92"]
    assert measured_numbers("AR 0.6 and 0.2, `x = 0.815`, $0.91$, 250 epochs, 3.14") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_measured_auc_in_markdown(path):
    assert NOTEBOOKS, "no notebooks found"
    cells = json.loads(path.read_text())["cells"]
    found = {
        i: measured_numbers("".join(c["source"]))
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown"
    }
    found = {i: n for i, n in found.items() if n}
    assert not found, (
        f"{path.name}: AUC-like numbers in markdown cells {found}; print them from code"
    )
