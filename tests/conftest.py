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
