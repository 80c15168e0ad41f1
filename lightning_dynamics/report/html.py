"""Self-contained HTML pages of a dashboard: the PNG embedded as base64 and tables of values, no external asset."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path

from lightning_dynamics.measures.readings import relative_change_reading
from lightning_dynamics.measures.registry import MEASURES, NULL_SUFFIXES
from lightning_dynamics.report.dashboard_data import RunDashboard, epoch_of
from lightning_dynamics.report.diagnosis_panel import FINDINGS_HEADER, diagnosis_summary, findings_rows

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    ".note{color:#555;font-size:90%}"
)


def _table_keys() -> tuple[str, ...]:
    """Rows of the table of final values, in order: the relative change, then the other registered measures; the
    run's other scalars follow. Not R(t): its last value is one noisy point, not a reading."""
    return tuple(sorted(MEASURES, key=lambda name: name != "relative_change"))


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
    present = {key for final in finals for key in final if not key.endswith(NULL_SUFFIXES)} - {"order_parameter"}
    keys = _table_keys()
    return [k for k in keys if k in present] + sorted(present - set(keys))


def _markers(run: RunDashboard) -> list[tuple[str, str]]:
    change = run.final_values().get("relative_change", math.nan)
    return [
        ("the relative change says", relative_change_reading(change)[1]),
        ("sample points", f"{run.n_points} (by {run.axis})"),
        ("layers", str(len(run.layer_names))),
        (
            "relative-change stop" if run.convergence.rule == "relative_change" else "volatility-drop signal",
            "none" if run.signal_time is None else f"epoch {epoch_of(run.signal_time)}",
        ),
        ("accuracy plateau", "none" if run.plateau_time is None else f"epoch {epoch_of(run.plateau_time)}"),
        ("stopped by DynamicsEarlyStopping", _last_logged(run, "stopped_epoch", "epoch {:.0f}")),
        ("layers frozen at the end", _last_logged(run, "frozen_layers", "{:.0f}")),
        ("diagnosis", diagnosis_summary(run)),
        ("inside noise floor", ", ".join(run.inside_noise_floor()) or "none"),
        ("short series", ", ".join(run.short_series()) or "none"),
    ]


def _last_logged(run: RunDashboard, name: str, form: str) -> str:
    """The last recorded value of a decision the run's callbacks recorded under ``<prefix>/<name>``, or ``"none"``."""
    for key, series in run.logged.items():
        if key.split("/", 1)[-1] == name:
            finite = [float(v) for v in series if math.isfinite(float(v))]
            if finite:
                return form.format(finite[-1])
    return "none"


def reading_note(run: RunDashboard, key: str) -> str:
    """What stands beside a measure's latest value: its noise floor and a short-series flag; ``""`` when neither.

    Example: ``"inside noise floor [0.41, 0.8]; short series (12 < 40 points)"``.
    """
    reading = run.readings.get(key)
    if reading is None:
        return ""
    notes = []
    inside = reading.inside_noise_floor
    if inside is not None:
        where = "inside" if inside else "outside"
        notes.append(f"{where} noise floor [{reading.null_lo:.3g}, {reading.null_hi:.3g}]")
        if reading.settled:
            notes.append("settled around a level")
    if reading.short_series:
        notes.append(f"short series ({reading.short_text()})")
    return "; ".join(notes)


def _cell(run: RunDashboard, final: dict[str, float], key: str) -> str:
    note = reading_note(run, key)
    value = _format(final.get(key))
    return f"{value} ({note})" if note else value


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
        value_rows = [
            [key, *(_cell(run, final, key) for run, final in zip(runs, finals, strict=True))]
            for key in _rows_keys(runs)
        ]
        parts += ["<h2>Final values</h2>", _table(["series (last finite value)", *labels], value_rows)]
        parts += _diagnosis_section(runs)
        sources = ", ".join(html.escape(str(run.history_path)) for run in runs)
        rule = runs[0].convergence
        parts.append(
            f'<p class="note">Read from {sources}. Signal: '
            + (
                "DynamicsEarlyStopping's relative-change rule replayed on the history"
                if rule.rule == "relative_change"
                else "volatility-drop rule"
            )
            + f" (ratio {rule.ratio:g}, patience "
            f"{rule.patience}; the learning-rate schedule is not in the history); plateau: first point within 0.5 "
            "percentage points of the best validation accuracy "
            "(docs/method.md section 8). Noise floor: the 95% band of the measure on surrogates of the run's own "
            "history; a value inside it lies among the central 95% of that null (docs/method.md section 8b). "
            "Short series: computed on fewer sample points than the estimator's reliable minimum.</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _diagnosis_section(runs: Sequence[RunDashboard]) -> list[str]:
    """The findings of each run whose diagnosis ran: a table (kind, layers, first seen, evidence, action), or a line
    saying it found nothing; no section when no run had a diagnosis."""
    ran = [run for run in runs if run.diagnosis is not None]
    if not ran:
        return []
    parts = ["<h2>Diagnosis</h2>"]
    for run in ran:
        assert run.diagnosis is not None
        lead = "" if len(runs) == 1 else f"{run.label}: "
        parts.append(f'<p class="diagnosis">{html.escape(lead + diagnosis_summary(run))}</p>')
        rows = findings_rows(run)
        if rows:
            parts.append(_table(list(FINDINGS_HEADER), rows))
        if run.diagnosis.stop_reason:
            parts.append(f"<p>{html.escape(run.diagnosis.stop_reason)}</p>")
    parts.append(
        '<p class="note">Read from the DynamicsDiagnosis findings file beside the history; each kind once, with the '
        "epoch and step it was first seen (docs/diagnosis.md).</p>"
    )
    return parts


def write_html(page: str, path: str | Path) -> Path:
    """Write ``page`` (UTF-8) and return its path."""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
