"""The README says what is true: its layout, which modules import Lightning, and its table of logged keys."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from lightning_dynamics.functional.reliability import NEVER_RELIABLE
from lightning_dynamics.measures.config import DynamicsConfig
from lightning_dynamics.measures.registry import MEASURES, measure_names

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


# What each part of the package may import (itself included), lazily or not: the data flow of the README's layout.
# TYPE_CHECKING-only imports are annotations, not dependencies, and are not counted.
_LOWER = {
    "functional": set(),
    "validation": {"functional"},
    "capture": {"functional", "validation"},
    "measures": {"functional", "validation", "capture"},
    "tracking": {"functional", "validation", "capture", "measures"},
    "decisions": {"functional", "validation", "capture", "measures"},
    "report": {"functional", "validation", "capture", "measures", "decisions"},
    "callbacks": {"functional", "validation", "capture", "measures", "tracking", "decisions", "report"},
    "pytorch_lightning": {"callbacks"},
}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def _runtime_imports(path: Path) -> set[str]:
    """Every ``lightning_dynamics.*`` module that ``path`` imports at run time (in functions too)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lightning_dynamics.")}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("lightning_dynamics")
        ):
            if node.module == "lightning_dynamics":
                found |= {f"lightning_dynamics.{a.name}" for a in node.names}
            else:
                found.add(node.module)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_each_part_imports_only_the_parts_below_it() -> None:
    arrows_up = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        part = _part(module)
        if part not in _LOWER:
            continue  # the package's own __init__/__main__ serve the public names
        for target in _runtime_imports(path):
            if _part(target) not in _LOWER[part] | {part}:
                arrows_up.append(f"{module} -> {target}")
    assert not arrows_up, "imports against the data flow:\n" + "\n".join(sorted(arrows_up))


def test_the_never_rules_of_the_layout() -> None:
    """The rules a reviewer reads first, pinned by name (the table above holds them all)."""
    assert "report" not in _LOWER["tracking"]
    assert "tracking" not in _LOWER["measures"]
    assert _LOWER["functional"] == set()
    assert _LOWER["capture"] <= {"functional", "validation"}
    # and the checker sees imports at all, lazy ones included
    imports = _runtime_imports(PACKAGE / "tracking" / "tracker.py")
    assert "lightning_dynamics.measures.registry" in imports


def test_no_import_cycle_between_modules() -> None:
    graph = {_module_name(p): _runtime_imports(p) for p in PACKAGE.rglob("*.py")}
    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}

    def edges(module: str) -> set[str]:
        # a package's __init__ re-exports its modules: an import of the package is not an arrow back into it
        return {t for t in graph.get(module, ()) if t in graph and not (t in packages and module.startswith(t + "."))}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in edges(module):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


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
    needed = DynamicsConfig().defined_from()
    for name, doc, null, logged_from, reliable in rows:
        measure = MEASURES[name]
        assert int(logged_from) == needed[name], name
        assert null == {"phase": "phase-randomised", "shuffle": "time-shuffled", None: "-"}[measure.null], name
        expected = measure.reliable_from
        if expected is None:
            assert reliable in ("-", "not measured"), name
        elif expected == NEVER_RELIABLE:
            assert reliable.startswith("never"), name
        else:
            assert reliable == str(expected), name
        assert measure.doc.split(" ")[0] in doc, name
