import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def _work_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in a fresh working directory: whatever a Trainer writes by default (lightning_logs/,
    a history file when logger=False) lands there, never in the repository."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def _untracked_files() -> set[str]:
    result = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "--", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return set(result.stdout.split()) if result.returncode == 0 else set()


@pytest.fixture(scope="session", autouse=True)
def _nothing_written_into_the_repository() -> Iterator[None]:
    """The suite fails if a test leaves a new file in the repository (outside ignored build/cache folders)."""
    before = _untracked_files()
    yield
    new = sorted(_untracked_files() - before)
    assert not new, f"tests wrote into the repository: {new}"


# Test tiers (README, "Tests"): the fast unit tier is `pytest -m "not slow and not integration"`; the README's full
# command, which CI runs, runs everything. Tests that drive a framework (tests/callbacks: Lightning Trainer, Fabric,
# transformers; tests/kit and tests/paper: the experiment kit on Lightning) are integration tests; the files below
# are slow wholesale (real multi-process DDP, compile, timm models, lint and type checks, packaging, the docs build,
# the benchmarks' smoke runs). A test may also carry its own marker.
_INTEGRATION_DIRS = {"callbacks", "kit", "paper"}
_SLOW_FILES = {
    "test_code_quality.py",
    "test_packaging.py",
    "test_docs.py",
    "test_benchmarks.py",
    "test_ddp.py",
    "test_ddp_uneven.py",
    "test_compile.py",
    "test_timm_models.py",
    "test_cli.py",
    "test_paper_smoke.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name in _INTEGRATION_DIRS and path.parent.parent == ROOT / "tests":
            item.add_marker(pytest.mark.integration)
        if path.name in _SLOW_FILES:
            item.add_marker(pytest.mark.slow)
