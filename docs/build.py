"""Build the tutorial site: run the course notebooks in class mode, then Sphinx.

    pip install -e ".[docs]" && python docs/build.py      # -> docs/_build/html/index.html

1. Every notebook ``notebooks/[0-9]*.ipynb`` (then ``notebooks/solutions/*.ipynb``) is executed
   top to bottom, in name order, with ``DDAD_MODE=class`` (the published site; ``--mode quick``
   is CI's smoke test that the site builds), in its own folder, into ``docs/course/``
   (generated, not in git). Trained runs land in the notebooks' run cache (``DDAD_CACHE``,
   default ``~/.cache/ddadlib``, the cache the course itself uses), so a second build, or a
   build after the course ran in the same mode, loads them and trains nothing.
   The kernels run with ``TQDM_DISABLE=1``: a progress bar is not page content.
   A cell that fails stops the build (exit status 1) and names the notebook and the cell.
2. Each executed page gets a note under its title: the mode that produced it, the date and the
   ddadlib version. Outputs are cleaned: the builder's own paths (this checkout, the run cache,
   the home folder, temporary folders) are written as a reader would see them
   (``~/.cache/ddadlib/...``, ``../ddadlib/...``, ``~``), and progress bars (widgets or text)
   are dropped.
3. A widget cannot move in a static page (there is no kernel, and the page loads no script from
   the network), so each widget view is replaced by a static figure of the same view: the
   outputs the widget's Output areas held after execution (its initial setting), under a line
   naming the controls and their values. Where the next cell shows the view itself
   (``widget.snapshot()``, as the course notebooks do), only the line is kept.
4. ``sphinx-build -W`` writes the site, with the API reference of ``ddadlib``, to
   docs/_build/html: a Sphinx warning fails the build. Then every page is checked for the
   builder's paths and for progress bars (:func:`page_problems`); one found fails the build.
   Nothing is downloaded: the theme and MathJax come from installed packages, and there is no
   intersphinx.

Options: ``--reuse`` keeps an executed notebook whose source and mode have not changed since the
last build (for editing the site's text), ``--notebooks DIR`` executes another folder,
``--skip-execute`` builds from what ``docs/course/`` already holds.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import html
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
COURSE = DOCS / "course"  # executed copies (generated)
OUT = DOCS / "_build" / "html"
CELL_TIMEOUT = 1200  # seconds per cell
MODES = ("quick", "class", "full")
DEFAULT_MODE = "class"  # the published site; CI builds with --mode quick
# The kernels' environment: tqdm (tqdm.auto) draws no progress bar.
KERNEL_ENV = {"TQDM_DISABLE": "1"}
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


_PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")


def is_progress_bar(view: dict, models: dict) -> bool:
    """A progress bar (tqdm.auto's, say): a widget with a progress model and no Output area."""
    names = {m.get("model_name") for m in _walk(view["model_id"], models, set())}
    return bool(names & set(_PROGRESS_MODELS)) and "OutputModel" not in names


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
            if is_progress_bar(view, state):
                continue  # a finished progress bar says nothing on a page
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


# --- clean outputs ------------------------------------------------------------------------------

# a text progress bar (tqdm's): "  0%|          | 0/15 [00:00<?, ?it/s]"
_PROGRESS_LINE = re.compile(r"^.*\d+%\|.*\|.*$")
_TEXT_KEYS = ("text/plain", "text/html", "text/markdown", "text/latex")


def builder_paths(notebook_dir: Path) -> list[tuple[str, str]]:
    """The builder's absolute paths, longest first, each with what a page shows instead: the
    run cache as the default cache, this checkout relative to the notebook's folder (where
    the notebook ran), the home folder as ``~``, temporary folders as ``$TMPDIR``."""
    from ddadlib.runs.grid import cache_dir

    pairs = {
        str(cache_dir().resolve()): "~/.cache/ddadlib",
        str(cache_dir()): "~/.cache/ddadlib",
        str(notebook_dir.resolve()): ".",
        str(ROOT): os.path.relpath(ROOT, notebook_dir.resolve()).replace(os.sep, "/"),
        str(Path(tempfile.gettempdir()).resolve()): "$TMPDIR",
        str(Path.home()): "~",
    }
    pairs = {k: v for k, v in pairs.items() if len(k) > 1}  # never rewrite "/"
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def scrub_paths(text: str, paths: list[tuple[str, str]]) -> str:
    """``text`` with each absolute path of ``paths`` (from :func:`builder_paths`) replaced, where
    it starts a path (not in the middle of a longer name)."""
    for path, shown in paths:
        text = re.sub(re.escape(path) + r"(?![\w.-])", lambda _m, s=shown: s, text)
    return text


def clean_outputs(nb, paths: list[tuple[str, str]]) -> None:
    """Drop text progress bars from the outputs and scrub the builder's paths from them."""

    def clean(text):
        joined = "".join(text) if isinstance(text, list) else text
        return scrub_paths(joined, paths)

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                lines = re.split(r"(?<=\n)|\r", clean(out.get("text", "")))
                text = "".join(line for line in lines if not _PROGRESS_LINE.match(line))
                if not text.strip():
                    continue
                out["text"] = text
            elif out.get("output_type") == "error":
                out["traceback"] = [clean(line) for line in out.get("traceback", [])]
                out["evalue"] = clean(out.get("evalue", ""))
            else:
                data = out.get("data", {})
                for key in _TEXT_KEYS:
                    if key in data:
                        data[key] = clean(data[key])
                if set(data) == {"text/plain"} and _PROGRESS_LINE.match(data["text/plain"]):
                    continue
            kept.append(out)
        cell.outputs = kept


def build_note(mode: str, day: datetime.date | None = None) -> str:
    """The note under each page's title: which mode produced the page, when, with what."""
    import ddadlib

    day = day or datetime.date.today()
    text = (
        f"Executed in **{mode}** mode (`DDAD_MODE={mode}`) on {day.isoformat()}, "
        f"ddadlib {ddadlib.__version__}, by `python docs/build.py --mode {mode}`."
    )
    if mode == "quick":
        text += (
            " Quick mode is a smoke test of the pages (tiny images, a few epochs): its numbers "
            "and figures mean nothing. The site to read is built in class mode."
        )
    return f":::{{admonition}} How this page was made\n:class: note ddad-build-note\n{text}\n:::\n"


def add_build_note(nb, mode: str) -> None:
    """Insert :func:`build_note` as a markdown cell after the first markdown cell (the title)."""
    import nbformat

    first = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
    cell = nbformat.v4.new_markdown_cell(build_note(mode))
    cell.metadata["ddad_build_note"] = True
    nb.cells.insert(first + 1, cell)


# markers of what no page may hold: a progress bar, as a widget or as text
_PAGE_PROGRESS = re.compile(r"FloatProgress|IntProgress|\d+%\|")


def page_problems(html_dir: Path, paths: list[str]) -> list[str]:
    """Each built page (``*.html`` under ``html_dir``) that shows one of the builder's absolute
    ``paths`` (regular expressions, from :func:`forbidden_paths`) or a progress bar, as
    "page: what"."""
    problems = []
    for page in sorted(html_dir.rglob("*.html")):
        if "_sources" in page.parts or "_static" in page.parts:
            continue
        text = page.read_text(errors="replace")
        name = page.relative_to(html_dir)
        for path in paths:
            found = re.search(path, text)
            if found:
                problems.append(f"{name}: shows the builder's path {found.group(0)}")
        found = _PAGE_PROGRESS.search(text)
        if found:
            problems.append(f"{name}: shows a progress bar ({found.group(0)!r})")
    return problems


def forbidden_paths() -> list[str]:
    """Patterns of the absolute paths of this build that no page may show: this checkout, the
    run cache, the home folder, and folders made by :mod:`tempfile` (a page's own example
    commands may name a temporary folder such as ``/tmp/ddad-demo``)."""
    from ddadlib.runs.grid import cache_dir

    exact = {str(ROOT), str(cache_dir()), str(cache_dir().resolve()), str(Path.home())}
    patterns = [re.escape(p) + r"(?![\w.-])" for p in sorted(exact) if len(p) > 1]
    tmp = re.escape(str(Path(tempfile.gettempdir()).resolve()))
    return patterns + [tmp + r"/tmp[\w]{8}"]


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
    clean_outputs(nb, builder_paths(path.parent))
    add_build_note(nb, mode)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mode",
        default=DEFAULT_MODE,
        choices=MODES,
        help=f"DDAD_MODE for the notebooks (default {DEFAULT_MODE}; CI: quick)",
    )
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep executed notebooks whose source and mode did not change",
    )
    parser.add_argument("--skip-execute", action="store_true")
    return parser.parse_args(argv)


def sphinx_command() -> list[str]:
    """sphinx-build, warnings as errors (all of them reported: --keep-going)."""
    return [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-j", "1"] + [
        str(DOCS),
        str(OUT),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    os.environ["DDAD_MODE"] = args.mode
    os.environ.update(KERNEL_ENV)  # the kernels inherit the environment
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

    cmd = sphinx_command()
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        print("the site did not build: see the Sphinx warnings above", file=sys.stderr)
        return rc
    problems = page_problems(OUT, forbidden_paths())
    if problems:
        print("pages that are not clean:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"site: {OUT / 'index.html'} ({time.perf_counter() - total:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
