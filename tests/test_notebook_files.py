"""The committed notebooks: no outputs, the metadata JupyterLab writes, and the git filter that
keeps outputs out of commits (.gitattributes + .gitconfig, set up by one documented command).

The browser test tests/test_browser_open.py checks the metadata in JupyterLab itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]
SETUP = "git config --local include.path ../.gitconfig"
# what JupyterLab 4 writes on opening a notebook with ipykernel's Python 3 kernel (checked in a
# browser by tests/test_browser_open.py): the kernel's display name, and its language_info
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {  # and the running Python's "version"
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}
FIX = "run: python tests/test_notebook_files.py --fix (strips outputs, writes the metadata)"


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_committed_notebook_has_no_outputs(path):
    """The file is what the git filter stores: nbstripout (with the filter's --keep-id) leaves
    it unchanged."""
    from nbstripout import strip_output

    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    before = nbformat.writes(nb)
    extra = ["metadata.signature", "metadata.widgets", "cell.metadata.execution"]
    stripped = strip_output(nb, keep_output=False, keep_count=False, keep_id=True, extra_keys=extra)
    assert nbformat.writes(stripped) == before, f"{_name(path)} holds outputs: {FIX}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_notebook_has_the_metadata_jupyterlab_writes(path):
    meta = json.loads(path.read_text())["metadata"]
    assert meta.get("kernelspec") == KERNELSPEC, f"{_name(path)}: {FIX}"
    info = dict(meta.get("language_info", {}))
    # the running Python's version: the committed one is the project's environment's
    assert re.fullmatch(r"3\.\d+\.\d+", info.pop("version", "")), _name(path)
    assert info == LANGUAGE_INFO, f"{_name(path)}: {FIX}"


def test_the_expected_metadata_is_ipykernels():
    """KERNELSPEC and LANGUAGE_INFO are what the installed ipykernel reports (JupyterLab copies
    them into the notebook)."""
    ipkernel = pytest.importorskip("ipykernel.ipkernel")
    from ipykernel.kernelspec import get_kernel_dict

    assert get_kernel_dict()["display_name"] == KERNELSPEC["display_name"]
    assert get_kernel_dict()["language"] == KERNELSPEC["language"]
    info = dict(ipkernel.IPythonKernel.language_info)
    info.pop("version")
    assert info == LANGUAGE_INFO


def test_all_notebooks_name_the_same_python():
    versions = {
        json.loads(p.read_text())["metadata"]["language_info"]["version"] for p in NOTEBOOKS
    }
    assert len(versions) == 1, versions


def test_the_filter_setup_is_documented_in_both_readmes():
    for readme in (ROOT / "README.md", ROOT / "notebooks" / "README.md"):
        assert SETUP in readme.read_text(), readme
    assert "*.ipynb filter=nbstripout diff=ipynb" in (ROOT / ".gitattributes").read_text()


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        # `python -m nbstripout` in .gitconfig: this Python, which has nbstripout
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=check
    )


def _with_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"output {i}\n")]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, path)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_the_git_filter_keeps_outputs_out_of_commits(tmp_path):
    """In a clone set up with the documented command, a notebook that ran (outputs, execution
    counts, widget state) shows no difference and commits without its outputs, cell ids kept."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    for name in (".gitattributes", ".gitconfig"):
        shutil.copy(ROOT / name, repo / name)
    notebook = repo / "nb.ipynb"
    shutil.copy(NOTEBOOKS[0], notebook)
    subprocess.run(
        SETUP, shell=True, cwd=repo, check=True, env={**os.environ, "HOME": str(tmp_path)}
    )
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "notebook")

    _with_outputs(notebook)
    assert "output 0" in notebook.read_text()  # the file on disk keeps its outputs
    assert _git(repo, "diff", "--quiet", check=False).returncode == 0  # nothing to see
    _git(repo, "add", "nb.ipynb")
    assert (
        _git(repo, "diff", "--cached", "--quiet", check=False).returncode == 0
    )  # nothing to commit
    assert _git(repo, "status", "--porcelain").stdout == ""

    # a new notebook that ran: committed without outputs, its cell ids kept
    ran = repo / "ran.ipynb"
    shutil.copy(notebook, ran)
    _git(repo, "add", "ran.ipynb")
    _git(repo, "commit", "-q", "-m", "ran")
    stored = nbformat.reads(_git(repo, "show", "HEAD:ran.ipynb").stdout, as_version=4)
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")
    assert "widgets" not in stored.metadata
    original = nbformat.read(NOTEBOOKS[0], as_version=4)
    assert [c.id for c in stored.cells] == [c.id for c in original.cells]


def fix(paths: list[Path]) -> None:
    """Strip the outputs (as the git filter does) and write KERNELSPEC and LANGUAGE_INFO, with
    the Python version most notebooks name (else this Python's)."""
    from collections import Counter

    from nbstripout import strip_output

    named = Counter(
        json.loads(p.read_text()).get("metadata", {}).get("language_info", {}).get("version")
        for p in paths
    )
    named.pop(None, None)
    version = named.most_common(1)[0][0] if named else ".".join(map(str, sys.version_info[:3]))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        extra = ["metadata.signature", "metadata.widgets", "cell.metadata.execution"]
        nb = strip_output(nb, keep_output=False, keep_count=False, keep_id=True, extra_keys=extra)
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
        nb.metadata["language_info"] = {**LANGUAGE_INFO, "version": version}
        nbformat.write(nb, path)
        print(f"{_name(path)}: no outputs, kernelspec and language_info (Python {version})")


if __name__ == "__main__":
    if sys.argv[1:] != ["--fix"]:
        raise SystemExit("usage: python tests/test_notebook_files.py --fix")
    fix(NOTEBOOKS)
