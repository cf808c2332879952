"""The tutorial site's build (docs/build.py): class mode by default, clean pages, no warnings.

The unit tests run in the default test run. ``test_built_site_is_clean`` (marker ``site``)
reads a built site, docs/_build/html: ``.ci/run`` runs it after ``python docs/build.py --mode
quick``; by hand: ``python docs/build.py --mode quick && python -m pytest -m site``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "docs" / "_build" / "html"


def _load_build():
    spec = importlib.util.spec_from_file_location("ddad_docs_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()


def _tqdm_widget_notebook() -> nbformat.NotebookNode:
    """A notebook as nbclient leaves it after tqdm.auto drew a bar (an HBox of an HTML label,
    a FloatProgress and an HTML counter), plus a widget with an Output area."""
    nb = nbformat.v4.new_notebook()
    models = {
        "bar": {
            "model_name": "HBoxModel",
            "state": {"children": ["IPY_MODEL_label", "IPY_MODEL_prog", "IPY_MODEL_count"]},
        },
        "label": {"model_name": "HTMLModel", "state": {"value": "epochs"}},
        "prog": {"model_name": "FloatProgressModel", "state": {"value": 15, "max": 15}},
        "count": {"model_name": "HTMLModel", "state": {"value": " 15/15 [00:03<00:00]"}},
        "box": {
            "model_name": "VBoxModel",
            "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_out"]},
        },
        "slider": {"model_name": "FloatSliderModel", "state": {"description": "AR", "value": 0.6}},
        "out": {
            "model_name": "OutputModel",
            "state": {
                "outputs": [
                    {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}
                ]
            },
        },
    }
    nb.metadata["widgets"] = {build.WIDGET_STATE: {"state": models}}

    def view(model_id, text):
        return nbformat.v4.new_output(
            "display_data",
            data={build.WIDGET_VIEW: {"model_id": model_id}, "text/plain": text},
        )

    nb.cells = [
        nbformat.v4.new_markdown_cell("# 01 · A title\n\nWhat you will learn."),
        nbformat.v4.new_code_cell(
            "run = train()",
            outputs=[
                view("bar", "epochs:   0%|          | 0/15 [00:00<?, ?it/s]"),
                nbformat.v4.new_output(
                    "stream",
                    name="stderr",
                    text="  0%|          | 0/15 [00:00<?, ?it/s]\r 47%|####7     | 7/15\r"
                    "100%|##########| 15/15 [00:03<00:00]\nreal warning: kept\n",
                ),
            ],
        ),
        nbformat.v4.new_code_cell("explorer", outputs=[view("box", "VBox(...)")]),
    ]
    return nb


def test_progress_bars_do_not_reach_the_page():
    """tqdm's widget became "Static view of the widget ... (FloatProgress = 15)" and its text
    form "0%| | 0/15" lines; both are dropped, an explorer widget keeps its static view."""
    nb = _tqdm_widget_notebook()
    assert build.replace_widgets(nb) == 1
    build.clean_outputs(nb, [])
    text = nbformat.writes(nb)
    assert "FloatProgress" not in text and "%|" not in text
    assert "real warning: kept" in text
    explorer = nb.cells[2].outputs
    assert "AR = 0.6" in explorer[0]["data"]["text/plain"]
    assert explorer[1]["data"]["image/png"] == "iVBOR"


def test_the_kernels_run_without_progress_bars():
    assert build.KERNEL_ENV["TQDM_DISABLE"] == "1"


def test_builder_paths_are_shown_as_a_reader_sees_them(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DDAD_CACHE", str(cache))
    notebooks = build.ROOT / "notebooks"
    paths = build.builder_paths(notebooks)
    text = (
        f"run folder {cache}/runs/x/ae-s0\n"
        f"data {build.ROOT}/ddadlib/data/files/kermany64.npz\n"
        f"here {notebooks}/00_setup.ipynb, home {Path.home()}/data, "
        f"{build.ROOT}-other stays\n"
    )
    out = build.scrub_paths(text, paths)
    assert "run folder ~/.cache/ddadlib/runs/x/ae-s0" in out
    assert "data ../ddadlib/data/files/kermany64.npz" in out
    assert "here ./00_setup.ipynb" in out
    assert f"{build.ROOT}-other" in out  # another folder whose name starts the same
    solutions = build.builder_paths(notebooks / "solutions")
    assert "../../ddadlib" in build.scrub_paths(f"{build.ROOT}/ddadlib", solutions)


def test_every_page_says_which_mode_made_it():
    nb = _tqdm_widget_notebook()
    build.add_build_note(nb, "class")
    assert nb.cells[0].source.startswith("# 01")  # the title stays the page's title
    note = nb.cells[1].source
    assert "Executed in **class** mode" in note and "ddadlib" in note
    import ddadlib

    assert ddadlib.__version__ in note
    assert "mean nothing" in build.build_note("quick")
    assert "mean nothing" not in note


def test_the_site_is_built_in_class_mode_and_warnings_fail_it():
    assert build.parse_args([]).mode == "class"
    assert build.parse_args(["--mode", "quick"]).mode == "quick"
    assert "-W" in build.sphinx_command()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python docs/build.py --mode quick" in ci
    assert "pytest -p no:cacheprovider -m site" in ci


def test_page_problems_finds_paths_and_progress_bars(tmp_path, monkeypatch):
    monkeypatch.setenv("DDAD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "html" / "course").mkdir(parents=True)
    (tmp_path / "html" / "course" / "a.html").write_text(
        f"<pre>{tmp_path}/cache/runs/ae</pre><p>Static view (FloatProgress = 15)</p>"
    )
    (tmp_path / "html" / "b.html").write_text(
        f"<pre>{build.ROOT}/notebooks</pre><pre> 40%|####  | 6/15</pre>"
    )
    (tmp_path / "html" / "ok.html").write_text(
        "<pre>ddad demo --out /tmp/ddad-demo</pre><p>sens@95%spec | 0.6</p>"
    )
    problems = build.page_problems(tmp_path / "html", build.forbidden_paths())
    assert len(problems) == 4, problems
    assert not any(p.startswith("ok.html") for p in problems)


def test_figures_are_listed_with_the_commands_that_make_them():
    """Every figure under docs/figures has its command in docs/figures/README.md, and none
    comes from the quick mode (a smoke test whose numbers mean nothing)."""
    table = (ROOT / "docs" / "figures" / "README.md").read_text()
    rows = {}
    for line in table.splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) == 2:
            for name in re.findall(r"`([^`]+\.png)`", cells[0]):
                rows[name] = cells[1]
    for png in sorted((ROOT / "docs" / "figures").glob("*.png")):
        assert png.name in rows, f"{png.name} has no command in docs/figures/README.md"
        command = rows[png.name]
        assert "quick" not in command, (png.name, command)
        assert f"docs/figures/{png.name}" in command, (png.name, command)


@pytest.mark.site
def test_built_site_is_clean():
    """The built site (docs/_build/html) shows no path of the builder and no progress bar, and
    every course page carries the note of the mode that made it."""
    if not (HTML / "index.html").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("no built site: run python docs/build.py --mode quick first")
        pytest.skip("no built site in docs/_build/html (python docs/build.py --mode quick)")
    assert build.page_problems(HTML, build.forbidden_paths()) == []
    pages = sorted((HTML / "course").rglob("*.html"))
    assert pages, "no course pages in the site"
    for page in pages:
        assert "ddad-build-note" in page.read_text(), f"{page.name} does not say its mode"
