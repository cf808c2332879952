"""The project's set-up files agree with each other."""

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _split_req(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    pip_section = [d for d in deps if isinstance(d, dict)]
    conda = dict(_split_req(d) for d in deps if isinstance(d, str))
    assert "python" in conda and "pip" in conda
    assert pip_section == [{"pip": ["-e .[notebooks]"]}]
    conda = {CONDA_NAMES.get(k, k): v for k, v in conda.items() if k not in ("python", "pip")}
    project = _pyproject()["project"]
    wanted = dict(
        _split_req(r)
        for r in project["dependencies"] + project["optional-dependencies"]["notebooks"]
    )
    assert conda == wanted
    # python range the same as requires-python
    py = dict(_split_req(d) for d in deps if isinstance(d, str))["python"]
    assert py == project["requires-python"].replace(" ", "")


def test_torch_range_admits_preinstalled_gpu_builds():
    from packaging.specifiers import SpecifierSet

    deps = dict(_split_req(r) for r in _pyproject()["project"]["dependencies"])
    spec = SpecifierSet(deps["torch"])
    assert all(v in spec for v in ("2.11.0", "2.12.1", "2.13.0", "2.14.1"))


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    lines = [s for s in block.splitlines() if s.strip() and not s.lstrip().startswith("#")]
    assert len(lines) == 2
    assert "ddad demo" in lines[0] and "pytest" in lines[1]
    assert text.index("```bash") < 200
    ci = (ROOT / ".ci" / "run").read_text()
    assert lines[1] in ci
    assert "not be used for" in text and "clinical" in text


def test_readme_first_command_installs_the_cpu_build_of_torch():
    """A CPU-only Linux laptop got a 5.9 GB CUDA build of torch from the first command; now the
    command adds PyTorch's CPU index (as an extra index: it has no macOS wheels, so macOS falls
    back to PyPI's), and the line above the commands says so (and what a GPU machine does)."""
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)\n", text).group(1)
    assert first.startswith("pip install --extra-index-url https://download.pytorch.org/whl/cpu ")
    assert "-e ." in first.split("&&")[0]
    above = text[: text.index("```bash")]
    assert "CPU" in above and "GPU" in above


def test_licence_and_citation():
    assert "not be used for clinical" in (ROOT / "LICENSE").read_text().replace("\n", " ")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["preferred-citation"]["title"].startswith("Dual-Distribution Discrepancy")
    assert cff["version"] == _pyproject()["project"]["version"]


def test_extras_name_the_audiences():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"notebooks", "test", "docs"} <= set(extras)


def test_wheel_and_sdist_carry_the_bundled_xrays_and_their_notice(tmp_path):
    import shutil
    import subprocess
    import tarfile
    import zipfile

    # Build from a copy, so the checkout gets no build/ or egg-info.
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    src = tmp_path / "src"
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    dist.mkdir()
    for hook in ("build_wheel", "build_sdist"):  # one process each (setuptools keeps state)
        code = f"import sys; from setuptools import build_meta; build_meta.{hook}(sys.argv[1])"
        subprocess.run(
            [sys.executable, "-c", code, str(dist)], cwd=src, check=True, capture_output=True
        )
    with (
        zipfile.ZipFile(next(dist.glob("*.whl"))) as whl,
        tarfile.open(next(dist.glob("*.tar.gz"))) as tar,
    ):
        wheel, sdist = whl.namelist(), tar.getnames()
        bundled = whl.read("ddadlib/data/files/kermany64.npz")
    for name in ("ddadlib/data/files/kermany64.npz", "ddadlib/data/files/NOTICE.md"):
        assert name in wheel
        assert any(n.endswith("/" + name) for n in sdist)
    assert any(n.endswith("licenses/DATA_NOTICE.md") for n in wheel)
    assert bundled == (ROOT / "ddadlib/data/files/kermany64.npz").read_bytes()
