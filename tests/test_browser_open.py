"""Opening a course notebook in JupyterLab leaves the file as it is.

JupyterLab (headless Chromium, as in tests/test_browser.py) opens each notebook of a temporary
copy of notebooks/, waits for its kernel, and saves it; the saved notebook must equal the
committed one: the committed kernelspec and language_info are the ones JupyterLab writes, so
opening a notebook does not mark it changed (before, it rewrote the kernelspec on open and
autosave then wrote the outputs into the tracked file).

Marker ``browser``: ``python -m pytest -m browser``.
"""

from __future__ import annotations

import json
import shutil

import pytest
from browser_lab import JupyterLab
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, KERNEL_IDLE, NOTEBOOKS, _unavailable

pytestmark = pytest.mark.browser

DIRTY = "() => document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty').length"


def _without_version(nb: dict) -> dict:
    """The notebook with language_info.version left out: the running Python's version, which
    the git filter strips (see .gitattributes) and the committed files do not hold."""
    nb = json.loads(json.dumps(nb))
    nb.get("metadata", {}).get("language_info", {}).pop("version", None)
    return nb


def test_opening_a_notebook_does_not_change_it(tmp_path):
    import importlib.util

    if not CHROMIUM.exists():
        _unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        _unavailable('playwright not installed (pip install -e ".[dev]")')
    if importlib.util.find_spec("jupyterlab") is None:
        _unavailable('jupyterlab not installed (pip install -e ".[notebooks]")')
    from playwright.sync_api import sync_playwright

    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    names = sorted(p.name for p in root.glob("[0-9]*.ipynb"))
    if not names:
        _unavailable("no notebooks in notebooks/")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    changed = {}
    with (
        JupyterLab(root, tmp_path / "home", ARTIFACTS / "browser-open-jupyterlab.log") as lab,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        try:
            for i, name in enumerate(names):
                committed = json.loads((root / name).read_text())
                # a workspace of its own: the page shows this notebook alone
                page.goto(lab.url(name).replace("/lab/tree/", f"/lab/workspaces/open{i}/tree/"))
                page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell")
                page.wait_for_function(KERNEL_IDLE)
                page.wait_for_timeout(2000)  # the kernel's language_info arrives after idle
                dirty = page.evaluate(DIRTY)
                page.locator(".jp-NotebookPanel .jp-Notebook").first.click()
                page.keyboard.press("Control+s")
                page.wait_for_function(DIRTY.replace("length", "length === 0"))
                page.wait_for_timeout(1000)
                saved = json.loads((root / name).read_text())
                if dirty or _without_version(saved) != _without_version(committed):
                    changed[name] = {
                        "marked changed on open": bool(dirty),
                        "committed metadata": committed.get("metadata"),
                        "JupyterLab's metadata": saved.get("metadata"),
                    }
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-open-failure.png"))
            raise
        finally:
            browser.close()
    assert not changed, json.dumps(changed, indent=1)
