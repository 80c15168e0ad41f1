"""What the diagnosis found, in the report: console lines, table rows, the findings panel and per-layer heatmaps.

Reads :attr:`RunDashboard.diagnosis <lightning_dynamics.report.dashboard_data.RunDashboard.diagnosis>` (the findings
file that :class:`~lightning_dynamics.DynamicsDiagnosis` writes beside the history) and the history's
``layer_stats`` (the per-layer statistics the diagnosis reads: dead and saturated fractions, gradient norms). No
panel is drawn for what a run does not hold: a run without a diagnosis or without findings gets no findings panel,
a history without ``layer_stats`` no heatmap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lightning_dynamics.decisions.diagnosis import Finding
from lightning_dynamics.report.dashboard_data import RunDashboard, cell_edges, short_name

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: The per-layer statistics drawn as heatmaps (layers x time), with their titles and colour scales.
LAYER_STAT_PANELS = {
    "dead_frac": ("dead fraction of each ReLU layer's units", "Reds", (0.0, 1.0)),
    "saturated_frac": ("saturated fraction of each bounded activation's values", "Purples", (0.0, 1.0)),
    "grad_norm": ("gradient norm of each layer (log10; grey: zero or not measured)", "viridis", None),
}
FINDINGS_HEADER = ("kind", "layers", "epoch", "step", "evidence", "action")


def layers_text(finding: Finding, shown: int = 4) -> str:
    """The layers of a finding in words: ``"-"`` for a run-wide one, the first ``shown`` then ``...``."""
    if not finding.layers:
        return "-"
    more = f" ... (+{len(finding.layers) - shown})" if len(finding.layers) > shown else ""
    return ", ".join(finding.layers[:shown]) + more


def findings_rows(run: RunDashboard) -> list[list[str]]:
    """One row per finding of ``run`` (:data:`FINDINGS_HEADER`); empty without a diagnosis or a finding."""
    if run.diagnosis is None:
        return []
    return [[f.kind, layers_text(f), str(f.epoch), str(f.step), f.evidence, f.action] for f in run.diagnosis.findings]


def diagnosis_summary(run: RunDashboard) -> str:
    """One line on what the diagnosis found: ``"not run"``, ``"no finding"`` or ``"2 findings: nonfinite, ..."``."""
    if run.diagnosis is None:
        return "not run (no DynamicsDiagnosis findings file beside the history)"
    kinds = [f.kind for f in run.diagnosis.findings]
    if not kinds:
        return "no finding"
    return f"{len(kinds)} finding{'s' if len(kinds) > 1 else ''}: {', '.join(kinds)}"


def findings_lines(runs: Sequence[RunDashboard]) -> list[str]:
    """The lines ``lightning-dynamics report`` prints under its table: each run's findings, one line each (kind,
    layers, first seen, evidence, action) and the stop they caused; nothing for runs without a diagnosis."""
    lines: list[str] = []
    for run in runs:
        if run.diagnosis is None:
            continue
        lead = "diagnosis" if len(runs) == 1 else f"{run.label}: diagnosis"
        lines.append(f"{lead}: {diagnosis_summary(run)}")
        for f in run.diagnosis.findings:
            lines.append(
                f"  {f.kind} in {layers_text(f)} (first seen epoch {f.epoch}, step {f.step}): {f.evidence}. "
                f"Try: {f.action}."
            )
        if run.diagnosis.stop_reason:
            lines.append(f"  {run.diagnosis.stop_reason}")
    return lines


def has_findings(run: RunDashboard) -> bool:
    return run.diagnosis is not None and bool(run.diagnosis.findings)


def layer_stat_panels(run: RunDashboard) -> list[str]:
    """The statistics of :data:`LAYER_STAT_PANELS` the history holds with a finite value, in that order."""
    return [stat for stat in LAYER_STAT_PANELS if run.layer_stat(stat) is not None]


def draw_findings(ax: Axes, run: RunDashboard) -> None:
    """The findings on the time axis: one row per finding, a marker where it was first seen, its kind and layers."""
    assert run.diagnosis is not None
    findings = run.diagnosis.findings
    for row, finding in enumerate(findings):
        t = run.finding_time(finding.epoch)
        ax.axvline(t, color="tab:red", lw=0.6, alpha=0.3)
        ax.plot([t], [row], marker="v", color="tab:red", ms=7)
        ax.annotate(
            f"{finding.kind} ({layers_text(finding, 2)})",
            (t, row),
            textcoords="offset points",
            xytext=(6, -3),
            fontsize=8,
        )
    ax.set_ylim(len(findings) - 0.5, -0.5)
    ax.set_yticks([])
    stop = f"; {run.diagnosis.stop_reason.split(':', 1)[0]}" if run.diagnosis.stop_reason else ""
    ax.set_title(f"diagnosis: {diagnosis_summary(run)}{stop}", fontsize=10)


def draw_layer_stat(ax: Axes, run: RunDashboard, stat: str) -> None:
    """One per-layer statistic as a heatmap (layers top to bottom from the input side, the epoch across)."""
    found = run.layer_stat(stat)
    assert found is not None
    layers, values = found
    title, cmap, bounds = LAYER_STAT_PANELS[stat]
    if bounds is None:  # norms span decades
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(values > 0, np.log10(values), np.nan)
        finite = values[np.isfinite(values)]
        bounds = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if bounds[0] == bounds[1]:
            bounds = (bounds[0] - 0.5, bounds[1] + 0.5)
    mesh = ax.pcolormesh(
        cell_edges(run.time),
        np.arange(len(layers) + 1) - 0.5,
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=bounds[0],
        vmax=bounds[1],
        shading="flat",
    )
    ax.set_ylim(len(layers) - 0.5, -0.5)
    step = max(1, math.ceil(len(layers) / 12))
    ticks = list(range(0, len(layers), step))
    ax.set_yticks(ticks, [short_name(layers[i]) for i in ticks], fontsize=7)
    ax.set_facecolor("0.85")  # cells without a value (no gradient, not an activation of that kind yet)
    ax.set_title(title, fontsize=10)
    ax.figure.colorbar(mesh, ax=ax, pad=0.01, aspect=15, label="log10" if stat == "grad_norm" else "fraction")
