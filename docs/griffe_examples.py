"""A griffe extension for the API reference: the house style's ``Example:`` sections are doctest examples.

Google-style parsing reads only ``Examples:`` as an examples section; a singular ``Example:`` becomes an
admonition rendered as Markdown, where doctest output such as ``[False, True]`` reads as a cross-reference
and fails ``mkdocs build --strict``. This renames the section heading in the docstring before parsing.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"(?m)^(\s*)Example:\s*$")


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` headings to ``Examples:`` in every loaded docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
