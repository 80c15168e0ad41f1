"""The README says what is true: its layout, which modules import Lightning, and its table of logged keys."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from lightning_dynamics.config import DynamicsConfig
from lightning_dynamics.functional.reliability import NEVER_RELIABLE
from lightning_dynamics.measure_registry import MEASURES, measure_names, reliable_points

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_dynamics"
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 3)
    return README[start : end if end != -1 else len(README)]


def test_layout_names_every_module_and_only_existing_ones() -> None:
    block = _section("Layout").split("```")[1]
    named = set(re.findall(r"^  ([\w.]+/?)", block, flags=re.MULTILINE))
    for name in named:
        assert (PACKAGE / name.rstrip("/")).exists(), f"README layout names {name}, which does not exist"
    present = {
        p.name + ("/" if p.is_dir() else "")
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
    }
    assert present <= named, f"README layout misses {sorted(present - named)}"


def _imports_lightning(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        if any(name.split(".")[0] in ("lightning", "pytorch_lightning") for name in names):
            return True
    return False


def test_only_the_adapters_import_lightning() -> None:
    importers = {
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _imports_lightning(p)
    }  # lightning_dynamics/__init__.py loads the adapters lazily, by name
    outside = {p for p in importers if not p.startswith("callbacks/") and p != "pytorch_lightning.py"}
    assert not outside, f"modules outside callbacks/ import Lightning: {sorted(outside)}"
    assert "callbacks/monitor.py" in importers  # the check sees imports at all


def test_readme_key_table_is_the_registry() -> None:
    rows = re.findall(r"^\| `dynamics/(\w+)` \| (.*?) \| (.*?) \| (\d+) \| (.*?) \|$", README, flags=re.MULTILINE)
    assert [r[0] for r in rows] == list(measure_names("default")), "README key table != registry (order too)"
    needed = DynamicsConfig().points_needed()
    for name, doc, null, logged_from, reliable in rows:
        measure = MEASURES[name]
        assert int(logged_from) == needed[name], name
        assert null == {"phase": "phase-randomised", "shuffle": "time-shuffled", None: "-"}[measure.null], name
        expected = reliable_points(name)
        if expected is None:
            assert reliable in ("-", "not measured"), name
        elif expected == NEVER_RELIABLE:
            assert reliable.startswith("never"), name
        else:
            assert reliable == str(expected), name
        assert measure.doc.split(" ")[0] in doc, name
