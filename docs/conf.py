"""Sphinx configuration of the tutorial site (built by ``python docs/build.py``).

Everything the build reads is on disk: the theme (furo) and MathJax (jupyter-server-mathjax)
are installed packages, there is no intersphinx, and widget scripts are not loaded, so the site
builds, and its pages show, without a network.
"""

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # ddadlib from this source tree

import ddadlib  # noqa: E402

project = "ddadlib"
author = "The ddadlib developers"
copyright = "the ddadlib developers, MIT licence"
release = ddadlib.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
]
exclude_patterns = ["_build", "figures/README.md", "**/*.failed.ipynb", "**/.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# Notebooks are executed by build.py (class mode, or quick for CI; the course's run cache)
# before Sphinx runs; Sphinx only renders them.
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # no widget scripts from the network (widgets become figures)
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# API reference: api/index.rst lists every module of ddadlib (found here, so a new module
# appears by itself) and autosummary writes one page per module next to it (api/ is not in git).
API_INTRO = """API reference
=============

Every module of ``ddadlib``, with its functions and classes. The package itself imports the
commonly used names (``DDAD``, ``PreparedDataset``, ``draw_unlabeled``, ...), so that
``from ddadlib import DDAD`` works.

.. autosummary::
   :toctree: .

"""


def _write_api_index() -> None:
    import pkgutil

    # every module of every subpackage (ddadlib.data.prepare, ...), the subpackages too
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(ddadlib.__path__, "ddadlib.")
        if not any(part.startswith("_") for part in m.name.split("."))
    )
    text = API_INTRO + "".join(f"   {name}\n" for name in modules)
    index = DOCS / "api" / "index.rst"
    index.parent.mkdir(exist_ok=True)
    if not index.exists() or index.read_text() != text:
        index.write_text(text)


_write_api_index()
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "furo"
html_title = f"ddadlib {release}"
html_static_path = ["_static"]
html_css_files = ["ddadlib.css"]
html_show_sourcelink = False

# MathJax from the jupyter-server-mathjax package, copied next to the pages (no CDN).
try:
    import jupyter_server_mathjax

    MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
    mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
    # MathJax 2: typeset only Sphinx's math elements (MyST marks the rest to be ignored).
    myst_update_mathjax = False
    mathjax2_config = {
        "tex2jax": {
            "inlineMath": [["\\(", "\\)"]],
            "displayMath": [["\\[", "\\]"]],
            "processEscapes": True,
            "processClass": "math|output_area",
            "ignoreClass": "tex2jax_ignore|mathjax_ignore",
        },
        # the package ships the STIX-Web fonts only (not MathJax's TeX fonts)
        "HTML-CSS": {
            "availableFonts": ["STIX-Web"],
            "preferredFont": "STIX-Web",
            "webFont": "STIX-Web",
            "imageFont": None,
        },
    }
except ImportError:  # pragma: no cover - then pages with math need the network to show it
    MATHJAX = None


def _copy_mathjax(app, exception):
    if exception is None and MATHJAX is not None and app.builder.format == "html":
        dest = Path(app.outdir) / "_static" / "mathjax"
        if not dest.exists():
            shutil.copytree(MATHJAX, dest, ignore=shutil.ignore_patterns("a11y", "qqq"))


def _relative_defaults(app, what, name, obj, options, signature, return_annotation):
    """Default values computed from the source tree (``BUNDLE = ddadlib/data/files/...``) are
    shown relative to it, not with the builder's absolute path."""
    root = str(DOCS.parent) + "/"
    if signature and root in signature:
        return signature.replace(root, ""), return_annotation
    return None


def setup(app):
    app.connect("autodoc-process-signature", _relative_defaults)
    app.connect("build-finished", _copy_mathjax)
