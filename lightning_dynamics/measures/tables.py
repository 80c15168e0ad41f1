"""The registry's tables for the docs: the README's key table and the point counts of docs/callbacks.md.

The docs never list a measure by hand: each list is a block between two markers, ``<!-- registry:NAME ... -->`` and
``<!-- /registry:NAME -->``, whose text is :data:`BLOCKS` ``[NAME]()``, generated from
:data:`~lightning_dynamics.measures.registry.MEASURES` with the default :class:`DynamicsConfig`. A test checks that
the README and docs hold the generated text, so they cannot drift from the registry. After changing a measure:

.. code-block:: bash

    python -m lightning_dynamics.measures.tables README.md docs/callbacks.md           # rewrite the blocks
    python -m lightning_dynamics.measures.tables --check README.md docs/callbacks.md   # exit 1 on drift
    python -m lightning_dynamics.measures.tables                                       # print every block

No Lightning import.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lightning_dynamics.functional.reliability import NEVER_RELIABLE
from lightning_dynamics.measures.config import DynamicsConfig
from lightning_dynamics.measures.registry import MEASURES, Group, Measure, measure_names

NULL_WORDS = {"phase": "phase-randomised", "shuffle": "time-shuffled", None: "-"}
_BLOCK = re.compile(r"(<!-- registry:(?P<name>[\w-]+)\b[^>]*-->\n)(?P<body>.*?)(<!-- /registry:(?P=name) -->)", re.S)


def _reliable_cell(measure: Measure) -> str:
    if measure.reliable_from is None:
        return "-" if measure.null is None else "not measured"  # a count has nothing to be reliable about
    if measure.reliable_from >= NEVER_RELIABLE:
        return "never (<= 1000)"
    return str(measure.reliable_from)


def key_table(config: DynamicsConfig | None = None, prefix: str = "dynamics") -> str:
    """The README's table of logged keys: each default measure's meaning, null, and the points it is defined and
    reliable from (markdown, one row per measure in logging order, ending with a newline).

    Example:
        >>> print(key_table().splitlines()[4])
        | `dynamics/synchrony` | mean of R(t) | phase-randomised | 5 | 64 |
    """
    config = DynamicsConfig() if config is None else config
    lines = [
        "| key | meaning | noise floor | defined from (points) | reliable from (points) |",
        "|---|---|---|---|---|",
    ]
    for name in measure_names("default"):
        m = MEASURES[name]
        cells = (f"`{prefix}/{name}`", m.doc, NULL_WORDS[m.null], str(m.defined_from(config)), _reliable_cell(m))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def defined_from_list(config: DynamicsConfig | None = None) -> str:
    """The measures by the sample points they are defined from (markdown list, default group first).

    Example:
        >>> print(defined_from_list().splitlines()[0])
        - from 1 point: `nonfinite`
    """
    config = DynamicsConfig() if config is None else config
    lines = []
    groups: tuple[tuple[Group, str], ...] = (("default", ""), ("complexity", " (opt-in: `complexity_every_n_samples`)"))
    for group, note in groups:
        by_points: dict[int, list[str]] = {}
        for name in measure_names(group):
            by_points.setdefault(MEASURES[name].defined_from(config), []).append(f"`{name}`")
        for points, names in sorted(by_points.items()):
            lines.append(f"- from {points} point{'s' if points != 1 else ''}: {', '.join(names)}{note}")
    return "\n".join(lines) + "\n"


BLOCKS: dict[str, Callable[[], str]] = {"keys": key_table, "defined-from": defined_from_list}


def regenerate(text: str) -> str:
    """``text`` with every ``registry:NAME`` block replaced by its generated text (:data:`BLOCKS`).

    Example:
        >>> doc = "Keys:\\n<!-- registry:defined-from -->\\nstale\\n<!-- /registry:defined-from -->\\n"
        >>> regenerate(doc).splitlines()[3]
        '- from 1 point: `nonfinite`'
    """

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise ValueError(f"registry block name must be one of {sorted(BLOCKS)}, got {name!r}.")
        # blank lines around the body: markdown renderers end an HTML comment block at a blank line, not at "-->"
        return match.group(1) + "\n" + BLOCKS[name]() + "\n" + match.group(4)

    return _BLOCK.sub(fill, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_dynamics.measures.tables", description=__doc__.splitlines()[0]
    )
    parser.add_argument("files", nargs="*", type=Path, help="markdown files whose registry blocks to rewrite")
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a block is out of date")
    args = parser.parse_args(argv)
    if not args.files:
        for name, block in BLOCKS.items():
            print(f"<!-- registry:{name} -->\n{block()}<!-- /registry:{name} -->")
        return 0
    stale = []
    for path in args.files:
        text = path.read_text()
        if not _BLOCK.search(text):
            print(f"{path}: no registry block", file=sys.stderr)
            return 2
        new = regenerate(text)
        if new != text:
            stale.append(str(path))
            if not args.check:
                path.write_text(new)
    if stale:
        print(("out of date: " if args.check else "rewrote: ") + ", ".join(stale), file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
