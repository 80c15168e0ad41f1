"""The registry's generated tables: what they say, and that the README and docs hold them (they cannot drift)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_dynamics.measures.config import DynamicsConfig
from lightning_dynamics.measures.registry import MEASURES, measure_names
from lightning_dynamics.measures.tables import BLOCKS, defined_from_list, key_table, main, regenerate

ROOT = Path(__file__).resolve().parents[2]
GENERATED_DOCS = (ROOT / "README.md", ROOT / "docs" / "callbacks.md")


@pytest.mark.parametrize("path", GENERATED_DOCS, ids=lambda p: p.name)
def test_readme_and_docs_hold_the_tables_generated_from_the_registry(path: Path) -> None:
    text = path.read_text()
    assert "<!-- registry:" in text, f"{path.name} has no generated block"
    assert regenerate(text) == text, f"{path.name} drifted: run python -m lightning_dynamics.measures.tables {path}"


def test_the_key_table_has_one_row_per_default_measure_with_its_declared_lengths() -> None:
    config = DynamicsConfig(window=24)
    rows = key_table(config).splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [f"dynamics/{name}" for name in measure_names("default")]
    for name, row in zip(measure_names("default"), rows, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == MEASURES[name].doc and int(cells[3]) == MEASURES[name].defined_from(config)
    cells = {row.split("`")[1]: row.strip("|").split("|")[-1].strip() for row in rows}
    assert cells["dynamics/synchrony"] == str(MEASURES["synchrony"].reliable_from)
    assert cells["dynamics/integration"].startswith("never")  # reliable at no measured length
    assert cells["dynamics/relative_change"] == "not measured"  # has a null, no measured length
    assert cells["dynamics/nonfinite"] == "-"  # a count


def test_the_defined_from_list_names_every_measure_once_under_its_length() -> None:
    config = DynamicsConfig(window=24)
    listed = {}
    for line in defined_from_list(config).splitlines():
        points = int(line.split()[2])
        for name in line.split(":", 1)[1].split("(opt-in")[0].replace("`", "").split(","):
            listed[name.strip()] = points
    assert listed == {name: m.defined_from(config) for name, m in MEASURES.items()}


def test_a_stale_block_is_rewritten_and_reported(tmp_path: Path) -> None:
    stale = "# Keys\n\n<!-- registry:keys, note -->\n| old | table |\n<!-- /registry:keys -->\n\nafter\n"
    fresh = regenerate(stale)
    assert "| old | table |" not in fresh and BLOCKS["keys"]() in fresh and fresh.endswith("\nafter\n")
    path = tmp_path / "doc.md"
    path.write_text(stale)
    assert main(["--check", str(path)]) == 1 and path.read_text() == stale  # --check writes nothing
    assert main([str(path)]) == 0 and path.read_text() == fresh
    assert main(["--check", str(path)]) == 0


def test_an_unknown_block_name_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"registry block name must be one of .*got 'points'"):
        regenerate("<!-- registry:points -->\nx\n<!-- /registry:points -->")
