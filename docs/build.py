"""Build the tutorial site: run the course notebooks in quick mode, then Sphinx.

    pip install -e ".[docs]" && python docs/build.py      # -> docs/_build/html/index.html

1. Every notebook ``notebooks/[0-9]*.ipynb`` (then ``notebooks/solutions/*.ipynb``) is executed
   top to bottom, in name order, with ``DDAD_MODE=quick`` (``--mode`` changes it), in its own
   folder, into ``docs/course/`` (generated, not in git). Trained runs land in the notebooks' run
   cache (``DDAD_CACHE``, default ``~/.cache/ddadlib``), so a second build, or a build after CI
   ran the notebooks with the same ``DDAD_CACHE``, loads them instead of training again.
   A cell that fails stops the build (exit status 1) and names the notebook and the cell.
2. A widget cannot move in a static page (there is no kernel, and the page loads no script from
   the network), so each widget view is replaced by a static figure of the same view: the
   outputs the widget's Output areas held after execution (its initial setting), under a line
   naming the controls and their values. Where the next cell shows the view itself
   (``widget.snapshot()``, as the course notebooks do), only the line is kept.
3. ``sphinx-build`` writes the site, with the API reference of ``ddadlib``, to docs/_build/html.
   Nothing is downloaded: the theme and MathJax come from installed packages, and there is no
   intersphinx.

Options: ``--reuse`` keeps an executed notebook whose source and mode have not changed since the
last build (for editing the site's text), ``--notebooks DIR`` executes another folder,
``--skip-execute`` builds from what ``docs/course/`` already holds, ``--strict`` turns Sphinx
warnings into errors.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
COURSE = DOCS / "course"  # executed copies (generated)
OUT = DOCS / "_build" / "html"
CELL_TIMEOUT = 1200  # seconds per cell
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
STATIC_NOTE = (
    "Static view of the widget at its initial setting ({controls}). Run the notebook to move it."
)
SNAPSHOT_NOTE = (
    "Interactive widget ({controls}): it needs a running kernel, so this page shows "
    "its view as the static figure below. Run the notebook to move it."
)


def find_notebooks(src: Path) -> list[Path]:
    """The course notebooks in build order: the numbered ones, then the solutions."""
    main = sorted(src.glob("[0-9]*.ipynb"))
    solutions = sorted((src / "solutions").glob("*.ipynb"))
    return main + solutions


def source_digest(path: Path, mode: str) -> str:
    return hashlib.sha256(path.read_bytes() + mode.encode()).hexdigest()


# --- widgets -> static figures ----------------------------------------------------------------


def _model_refs(value) -> list[str]:
    """Widget model ids referenced ("IPY_MODEL_<id>") anywhere in a widget's state value."""
    if isinstance(value, str):
        return [value[len("IPY_MODEL_") :]] if value.startswith("IPY_MODEL_") else []
    if isinstance(value, list):
        return [r for v in value for r in _model_refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _model_refs(v)]
    return []


def _walk(model_id: str, models: dict, seen: set) -> list[dict]:
    """The widget and the widgets it contains, depth first, each once."""
    if model_id in seen or model_id not in models:
        return []
    seen.add(model_id)
    found = [models[model_id]]
    for ref in _model_refs(models[model_id].get("state", {}).get("children", [])):
        found += _walk(ref, models, seen)
    return found


def _control_text(model: dict) -> str | None:
    state = model.get("state", {})
    if model.get("model_name") in ("OutputModel", "LabelModel", "HTMLModel", "HTMLMathModel"):
        return None
    labels, index = state.get("_options_labels"), state.get("index")
    if labels is not None and isinstance(index, int) and 0 <= index < len(labels):
        value = labels[index]  # a selection (Dropdown, SelectionSlider, ...)
    elif "value" in state:
        value = state["value"]
    else:
        return None
    if isinstance(value, float):
        value = f"{value:g}"
    name = state.get("description") or model.get("model_name", "").replace("Model", "")
    return f"{name} = {value}"


def static_widget_outputs(view: dict, models: dict, snapshot_follows: bool = False) -> list[dict]:
    """The outputs that stand in for one widget view: a note naming the controls and their
    values, then what the widget's Output areas displayed (left out when the next cell shows
    the view itself with ``.snapshot()``, as the ddadlib widgets allow)."""
    parts = _walk(view["model_id"], models, set())
    controls = ", ".join(t for t in (_control_text(m) for m in parts) if t) or "no controls"
    if snapshot_follows:
        shown, note = [], SNAPSHOT_NOTE.format(controls=controls)
    else:
        shown = [
            copy.deepcopy(o)
            for m in parts
            if m.get("model_name") == "OutputModel"
            for o in m.get("state", {}).get("outputs", [])
        ]
        note = STATIC_NOTE.format(controls=controls)
    for o in shown:
        o.pop("transient", None)
    note_output = {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "text/html": f'<p class="ddad-static-widget"><em>{html.escape(note)}</em></p>',
            "text/plain": note,
        },
    }
    return [note_output] + shown


def replace_widgets(nb) -> int:
    """Replace every widget view in the notebook by its static outputs; drop the widget state
    (so the page loads no widget script). Returns the number of views replaced."""
    import nbformat

    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    count = 0
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        snapshot_follows = i + 1 < len(code) and ".snapshot(" in code[i + 1].source
        outputs = []
        for out in cell.get("outputs", []):
            view = (
                out.get("data", {}).get(WIDGET_VIEW)
                if out.get("output_type") in ("display_data", "execute_result")
                else None
            )
            if view is None:
                outputs.append(out)
                continue
            count += 1
            outputs += [
                nbformat.from_dict(o) for o in static_widget_outputs(view, state, snapshot_follows)
            ]
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return count


# --- links --------------------------------------------------------------------------------------

_LINK = re.compile(r"(\]\(|src=\"|href=\")([^)\"#:]+?)([)\"#])")


def rebase_links(text: str, src_dir: Path, dst_dir: Path, src_root: Path) -> str:
    """Keep a notebook's relative links to files outside the notebooks folder
    (``../docs/figures/x.png``) pointing at the same files from the executed copy's folder;
    links between notebooks stay as they are (the copies keep the folder layout)."""

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if target.startswith(("/", "mailto")) or not target.strip():
            return m.group(0)
        resolved = (src_dir / target).resolve()
        if not resolved.exists() or resolved.is_relative_to(src_root):
            return m.group(0)
        return m.group(1) + os.path.relpath(resolved, dst_dir).replace(os.sep, "/") + m.group(3)

    return _LINK.sub(fix, text)


# --- execution ----------------------------------------------------------------------------------


def execute(path: Path, dest: Path, mode: str, src_root: Path) -> float:
    """Run one notebook in its own folder and write the executed copy to ``dest``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
        record_timing=False,
    )
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        failed = dest.with_suffix(".failed.ipynb")
        failed.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, failed)
        print(
            f"\nFAILED: {path.relative_to(path.parents[1])}: a cell raised an error "
            f"(partial output in {failed}):\n{err}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    seconds = time.perf_counter() - start
    widgets = replace_widgets(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rebase_links(cell.source, path.parent, dest.parent, src_root)
    nb.metadata["ddad_build"] = {
        "source_sha256": source_digest(path, mode),
        "mode": mode,
        "seconds": round(seconds, 1),
        "widgets_made_static": widgets,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return seconds


def is_current(path: Path, dest: Path, mode: str) -> bool:
    import nbformat

    if not dest.exists():
        return False
    meta = nbformat.read(dest, as_version=4).metadata.get("ddad_build", {})
    return meta.get("source_sha256") == source_digest(path, mode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="quick", help="DDAD_MODE for the notebooks (quick)")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep executed notebooks whose source and mode did not change",
    )
    parser.add_argument("--skip-execute", action="store_true")
    parser.add_argument("--strict", action="store_true", help="Sphinx warnings are errors")
    args = parser.parse_args(argv)

    os.environ["DDAD_MODE"] = args.mode
    src = args.notebooks.resolve()
    notebooks = find_notebooks(src)
    total = time.perf_counter()
    if not args.skip_execute:
        keep = {COURSE / p.relative_to(src) for p in notebooks}
        if COURSE.exists():  # executed copies of notebooks that no longer exist
            for old in COURSE.rglob("*.ipynb"):
                if old not in keep:
                    old.unlink()
        print(
            f"executing {len(notebooks)} notebooks from {src} with DDAD_MODE={args.mode}, "
            f"DDAD_CACHE={os.environ.get('DDAD_CACHE', '~/.cache/ddadlib (default)')}"
        )
        for path in notebooks:
            dest = COURSE / path.relative_to(src)
            name = path.relative_to(src)
            if args.reuse and is_current(path, dest, args.mode):
                print(f"  {name}: unchanged, reused")
                continue
            print(f"  {name} ...", flush=True)
            print(f"  {name}: {execute(path, dest, args.mode, src):.0f} s", flush=True)
    if not notebooks:
        print(f"note: no notebooks in {src}; the site has no course pages")
    (DOCS / "course").mkdir(exist_ok=True)

    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-j",
        "1",
        "--keep-going",
        str(DOCS),
        str(OUT),
    ]
    if args.strict:
        cmd.insert(3, "-W")
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc == 0:
        print(f"site: {OUT / 'index.html'} ({time.perf_counter() - total:.0f} s in all)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
