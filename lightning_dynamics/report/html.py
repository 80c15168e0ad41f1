"""Self-contained HTML pages of a dashboard: the PNG embedded as base64 and tables of values, no external asset."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path

from lightning_dynamics.report.dashboard_data import RunDashboard

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    ".note{color:#555;font-size:90%}"
)
# Rows of the table of final values, in order; other logged keys follow alphabetically.
TABLE_KEYS = (
    "integration",
    "integration_alpha",
    "metastability",
    "synchrony",
    "phase_integration",
    "stability_index",
    "stability_volatility",
    "order_parameter",
    "n_excluded",
    "nonfinite",
)


def _format(value: float | int | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _rows_keys(runs: Sequence[RunDashboard]) -> list[str]:
    finals = [run.final_values() for run in runs]
    present = {key for final in finals for key in final}
    return [k for k in TABLE_KEYS if k in present] + sorted(present - set(TABLE_KEYS))


def _markers(run: RunDashboard) -> list[tuple[str, str]]:
    return [
        ("sample points", f"{run.n_points} (by {run.axis})"),
        ("layers", str(len(run.layer_names))),
        ("convergence signal", "none" if run.signal_time is None else f"{run.axis} {run.signal_time:g}"),
        ("accuracy plateau", "none" if run.plateau_time is None else f"{run.axis} {run.plateau_time:g}"),
    ]


def dashboard_html(runs: Sequence[RunDashboard], png: bytes, title: str) -> str:
    """One HTML page: ``title``, the figure ``png`` inline, markers and the final value of every series per run.

    Args:
        runs: the runs drawn in ``png`` (one column each in the tables).
        png: the figure as PNG bytes (see :func:`lightning_dynamics.report.plots.figure_png`).
        title: page title and heading.

    Returns:
        The page; it references no file or URL.

    Example:
        >>> page = dashboard_html([], b"\\x89PNG", "empty")
        >>> page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
        True
    """
    image = base64.b64encode(png).decode("ascii")
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<img alt="dashboard of {html.escape(title)}" src="data:image/png;base64,{image}">',
    ]
    if runs:
        labels = [run.label for run in runs]
        marker_rows = [[name, *(dict(_markers(run))[name] for run in runs)] for name, _ in _markers(runs[0])]
        parts += ["<h2>Run</h2>", _table(["", *labels], marker_rows)]
        finals = [run.final_values() for run in runs]
        value_rows = [[key, *(_format(final.get(key)) for final in finals)] for key in _rows_keys(runs)]
        parts += ["<h2>Final values</h2>", _table(["series (last finite value)", *labels], value_rows)]
        sources = ", ".join(html.escape(str(run.history_path)) for run in runs)
        parts.append(
            f'<p class="note">Read from {sources}. Signal: volatility-drop rule (ratio 0.25, patience 3); '
            "plateau: first point within 0.5 percentage points of the best validation accuracy "
            "(docs/method.md section 8).</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(page: str, path: str | Path) -> Path:
    """Write ``page`` (UTF-8) and return its path."""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
