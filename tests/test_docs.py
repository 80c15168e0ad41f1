"""The documentation site builds with ``mkdocs build --strict`` and shows what the guide promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_site_builds_strict_with_every_page(site: Path) -> None:
    for page in ("index", "guide", "callbacks", "plain_pytorch", "early_stopping", "method", "api"):
        path = site / "index.html" if page == "index" else site / page / "index.html"
        assert path.is_file(), f"page {page} missing from the site"


def test_guide_figures_exist_and_are_shown(site: Path) -> None:
    guide = (site / "guide" / "index.html").read_text()
    for figure in ("kuramoto.png", "dfa.png", "stability.png"):
        assert (ROOT / "docs" / "img" / figure).stat().st_size > 10_000, f"docs/img/{figure}: run docs/make_figures.py"
        assert f"img/{figure}" in guide and (site / "img" / figure).is_file()


def test_api_reference_documents_the_packages(site: Path) -> None:
    api = (site / "api" / "index.html").read_text()
    anchors = set(re.findall(r'id="(lightning_dynamics[\w.]*)"', api))
    from lightning_dynamics import functional

    # A function named like its module (dfa.dfa) is documented under its module path.
    missing = [
        name
        for name in functional.__all__
        if f"lightning_dynamics.functional.{name}" not in anchors
        and f"lightning_dynamics.functional.{name}.{name}" not in anchors
    ]
    assert not missing, f"functional names without an API entry: {missing}"
    for name in (
        "lightning_dynamics.DynamicsMonitor",
        "lightning_dynamics.DynamicsEarlyStopping",
        "lightning_dynamics.capture.load_history",
        "lightning_dynamics.decisions.stopping.VolatilityDropRule",
        "lightning_dynamics.report.analysis.convergence_report",
        "lightning_dynamics.pytorch_lightning.on_pytorch_lightning",
    ):
        assert name in anchors, f"{name} has no API entry"


def test_method_reference_keeps_the_section_numbers() -> None:
    text = (ROOT / "docs" / "method.md").read_text()
    numbers = [int(n) for n in re.findall(r"(?m)^## (\d+)\. ", text)]
    assert numbers == list(range(10)), numbers
    # Every "docs/method.md section N" cited in the package points at a section that exists.
    cited = {
        int(n)
        for path in (ROOT / "lightning_dynamics").rglob("*.py")
        for n in re.findall(r"docs/method\.md,? sections? (\d+)", path.read_text())
    }
    assert cited <= set(numbers), sorted(cited - set(numbers))
