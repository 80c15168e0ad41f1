"""The wheel and sdist build, pass ``twine check`` and hold what they should (and nothing they should not)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Read, not imported: the one place the version is written, and no import of torch for a packaging test.
VERSION = re.search(r'(?m)^__version__ = "([^"]+)"$', (ROOT / "lightning_dynamics" / "__init__.py").read_text())[1]

pytest.importorskip("build")
pytest.importorskip("twine")


def _copy_source(dest: Path) -> Path:
    """Copy the checkout without its venv, git data and caches, so that building never writes into the repo."""
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".hypothesis", "site", "runs"
    )
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("packaging")
    source = _copy_source(tmp / "src")
    out = tmp / "dist"
    # --no-isolation: build with the venv's setuptools (no download, a few seconds instead of a fresh env).
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "source": source}


def test_twine_check_is_clean(dists: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"])],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_version_in_one_place(dists: dict[str, Path]) -> None:
    # The [project] table (up to the next table); tomllib would need Python 3.11.
    project = (ROOT / "pyproject.toml").read_text().split("\n[project]\n", 1)[1].split("\n[", 1)[0]
    assert re.search(r"(?m)^version\s*=", project) is None, "pyproject.toml must not repeat the version"
    assert re.search(r'(?m)^dynamic\s*=\s*\[[^]]*"version"', project)
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc|\.dev|\.post)?\d*", VERSION)
    assert dists["wheel"].name == f"lightning_dynamics-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        metadata = wheel.read(f"lightning_dynamics-{VERSION}.dist-info/METADATA").decode()
    assert f"\nVersion: {VERSION}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{VERSION}]" in changelog or "## [Unreleased]" in changelog


def test_wheel_contents(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
    assert "lightning_dynamics/py.typed" in names
    source_modules = {
        path.relative_to(dists["source"]).as_posix() for path in (dists["source"] / "lightning_dynamics").rglob("*.py")
    }
    missing = source_modules - names
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    for package in ("functional", "capture", "callbacks", "report"):
        assert f"lightning_dynamics/{package}/__init__.py" in names
    stray = sorted(n for n in names if n.split("/")[0] in {"tests", "benchmarks", "examples", "docs"})
    assert not stray, f"the wheel must hold the package only, found {stray}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_sdist_contents(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for required in ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "lightning_dynamics/py.typed"):
        assert required in names, f"{required} missing from the sdist"
    assert not any(n.startswith(("tests/", "benchmarks/", ".venv/")) for n in names)
    assert not any("__pycache__" in n for n in names)
