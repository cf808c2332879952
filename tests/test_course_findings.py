"""The paper's three findings in the course's class mode, for seeds 0, 1 and 2 (slow: it trains
the class-mode runs that are not in the cache yet: four runs a seed, about 11 minutes a seed on
an idle 2-core CPU).

Run it with::

    DDAD_CACHE=~/.cache/ddadlib python -m pytest -m slow tests/test_course_findings.py

(the course's own cache: runs the notebooks trained are reused, and the runs trained here serve
the notebooks).
"""

import pytest

from ddadlib import course


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_three_findings_hold_in_class_mode(seed):
    s = course.settings("class", data="kermany", seeds=[seed])
    found = course.findings(s)
    report = "\n".join(f"notebook {f.notebook}: {f}" for f in found)
    print(report)
    assert len(found) == 5 and all(f.holds for f in found), report
