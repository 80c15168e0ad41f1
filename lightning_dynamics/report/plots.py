"""Figures of runs (matplotlib, the ``examples`` extra): the dashboard of one run and the overlay of several.

Drawing only: every quantity comes from :mod:`lightning_dynamics.report.dashboard_data`. Bounded measures are
drawn on fixed axes (integration, stability index and :math:`R(t)` on [0, 1]; metastability and volatility,
standard deviations of [0, 1] variables, on [0, 0.5]), so a tiny value never looks like a jump; time axes carry
integer ticks; ``every_n_steps`` histories are drawn point by point against the optimizer step.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lightning_dynamics.report.dashboard_data import MEASURE_BOUNDS, RunDashboard

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MEASURE_LABELS = {
    "integration": "integration I",
    "metastability": "metastability M",
    "stability_index": "stability index S",
    "stability_volatility": "volatility V of S",
}
SIGNAL_STYLE = {"color": "tab:red", "ls": "--", "lw": 1.2}
PLATEAU_STYLE = {"color": "tab:green", "ls": ":", "lw": 1.6}
_DPI = 110


def _new_figure(width: float, height: float) -> Figure:
    # A bare Figure (no pyplot): no global backend switch, no figure manager to leak in long processes.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _line(ax: Axes, x: np.ndarray, y: np.ndarray, **kwargs: object) -> None:
    marker = "." if x.shape[0] <= 120 else None
    ax.plot(x, y, marker=marker, ms=4, **kwargs)  # type: ignore[arg-type]


def _missing(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="0.45")


def _bounded(ax: Axes, key: str) -> None:
    bounds = MEASURE_BOUNDS.get(key)
    if bounds is not None:
        ax.set_ylim(*bounds)


def _markers(ax: Axes, run: RunDashboard) -> None:
    if run.signal_time is not None:
        ax.axvline(run.signal_time, **SIGNAL_STYLE)  # type: ignore[arg-type]
    if run.plateau_time is not None:
        ax.axvline(run.plateau_time, **PLATEAU_STYLE)  # type: ignore[arg-type]


def _cell_edges(t: np.ndarray) -> np.ndarray:
    """Edges of cells centred on the sample points (any spacing)."""
    if t.shape[0] == 1:
        return np.array([t[0] - 0.5, t[0] + 0.5])
    middle = (t[1:] + t[:-1]) / 2
    return np.concatenate([[t[0] - (middle[0] - t[0])], middle, [t[-1] + (t[-1] - middle[-1])]])


def _heatmap(ax: Axes, run: RunDashboard) -> None:
    n_layers = len(run.layer_names)
    mesh = ax.pcolormesh(
        _cell_edges(run.time),
        np.arange(n_layers + 1) - 0.5,
        np.ma.masked_invalid(run.zscored),
        cmap="RdBu_r",
        vmin=-3,
        vmax=3,
        shading="flat",
    )
    ax.set_ylim(n_layers - 0.5, -0.5)  # first (input-side) layer on top
    step = max(1, math.ceil(n_layers / 16))
    ticks = list(range(0, n_layers, step))
    ax.set_yticks(ticks, [_short(run.layer_names[i]) for i in ticks], fontsize=7)
    ax.set_title(f"layer summaries ({run.summary}), z-scored per layer over time", fontsize=10)
    ax.figure.colorbar(mesh, ax=ax, label="z", pad=0.01, aspect=15)


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _trajectory(ax: Axes, run: RunDashboard) -> None:
    integration = run.metrics.get("integration")
    metastability = run.metrics.get("metastability")
    ax.set_xlim(*MEASURE_BOUNDS["metastability"])  # type: ignore[misc]
    ax.set_ylim(*MEASURE_BOUNDS["integration"])  # type: ignore[misc]
    ax.set_xlabel("metastability M")
    ax.set_ylabel("integration I")
    ax.set_title("integration-metastability trajectory", fontsize=10)
    if integration is None or metastability is None:
        _missing(ax, "integration or metastability not in the history")
        return
    both = np.isfinite(integration) & np.isfinite(metastability)
    if not both.any():
        _missing(ax, "not defined yet (too few sample points)")
        return
    m, i, t = metastability[both], integration[both], run.time[both]
    ax.plot(m, i, color="0.75", lw=0.8, zorder=1)
    points = ax.scatter(m, i, c=t, cmap="viridis", s=14, zorder=2)
    ax.annotate("start", (m[0], i[0]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.annotate("end", (m[-1], i[-1]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.figure.colorbar(points, ax=ax, label=run.axis, pad=0.01, aspect=15)


def _measure_panel(ax: Axes, run: RunDashboard, key: str) -> None:
    series = run.metrics.get(key)
    ax.set_ylabel(MEASURE_LABELS[key])
    _bounded(ax, key)
    if series is None:
        _missing(ax, f"{key} not in the history")
        return
    _line(ax, run.time, series, color="tab:blue")
    if key == "stability_volatility" and run.signal_index is not None:
        peak = np.fmax.accumulate(np.where(np.isfinite(series), series, -np.inf))
        ax.plot(
            run.time, np.where(np.isfinite(peak), run.signal_ratio * peak, np.nan), color="tab:red", lw=0.8, alpha=0.6
        )
    if not np.isfinite(series).any():
        _missing(ax, "not defined yet (too few sample points)")


def _validation_panel(ax: Axes, run: RunDashboard) -> None:
    ax.set_ylabel(run.accuracy_key or "validation accuracy")
    if run.accuracy_key is None and run.loss_key is None:
        _missing(ax, "no validation accuracy or loss logged")
        return
    if run.accuracy_key is not None:
        _line(ax, run.time, run.logged[run.accuracy_key], color="black")
    if run.loss_key is not None:
        twin = ax.twinx()
        _line(twin, run.time, run.logged[run.loss_key], color="tab:orange")
        twin.set_ylabel(run.loss_key, color="tab:orange")
        twin.tick_params(axis="y", colors="tab:orange")


def plot_dashboard(run: RunDashboard, path: str | Path | None = None) -> Figure:
    """Draw one run's dashboard: heatmap, trajectory, R(t), the four measures, validation metrics and markers.

    Panels: the ``[L, T]`` summaries z-scored per layer (layers top to bottom from the input side); the
    integration-metastability trajectory coloured by time; :math:`R(t)` with its mean; integration; metastability;
    the stability index; its volatility with the rule's threshold (0.25 x running peak); validation accuracy and
    loss where logged. Vertical lines: the convergence signal (red dashed) and the accuracy plateau (green dotted),
    docs/method.md section 8.

    Args:
        run: from :func:`lightning_dynamics.report.dashboard_data.load_run`.
        path: if given, the figure is saved there (PNG, PDF, SVG by suffix).

    Returns:
        The matplotlib figure (not registered with pyplot).
    """
    from matplotlib.lines import Line2D

    fig = _new_figure(13, 12)
    grid = fig.add_gridspec(5, 2, height_ratios=[1.5, 1, 1, 1, 1])
    heat = fig.add_subplot(grid[0, 0])
    _heatmap(heat, run)
    _trajectory(fig.add_subplot(grid[0, 1]), run)
    time_axes = [fig.add_subplot(grid[r, c], sharex=heat) for r in range(1, 5) for c in range(2)]
    order, integration, metastability, index, volatility, validation, alpha, spare = time_axes
    order.set_ylabel("order parameter R(t)\n(dotted: its mean)")
    order.set_ylim(0, 1)
    if np.isfinite(run.order_parameter).any():
        _line(order, run.time, run.order_parameter, color="tab:purple")
        order.axhline(float(np.nanmean(run.order_parameter)), color="tab:purple", ls=":", lw=1)
    else:
        _missing(order, "too few sample points for phases")
    _measure_panel(integration, run, "integration")
    _measure_panel(metastability, run, "metastability")
    _measure_panel(index, run, "stability_index")
    _measure_panel(volatility, run, "stability_volatility")
    _validation_panel(validation, run)
    alpha.set_ylabel("mean DFA exponent α\n(dotted: h_opt)")
    if "integration_alpha" in run.metrics and np.isfinite(run.metrics["integration_alpha"]).any():
        _line(alpha, run.time, run.metrics["integration_alpha"], color="tab:brown")
        alpha.axhline(float(run.config.get("h_opt", 0.7)), color="0.5", ls=":", lw=1)
    else:
        _missing(alpha, "integration_alpha not in the history")
    spare.set_ylabel("layers left out")
    spare.set_ylim(bottom=-0.5, top=len(run.layer_names) + 0.5)
    counts = [
        (key, color) for key, color in (("n_excluded", "tab:gray"), ("nonfinite", "tab:red")) if key in run.metrics
    ]
    for key, color in counts:
        _line(spare, run.time, run.metrics[key], color=color, label=key)
    if counts:
        spare.legend(loc="upper right", fontsize=7)
    else:
        _missing(spare, "n_excluded / nonfinite not in the history")
    for ax in time_axes:
        _markers(ax, run)
        ax.grid(alpha=0.25)
    for ax in (heat, *time_axes):
        _integer_ticks(ax)
    for ax in time_axes[-2:]:
        ax.set_xlabel(run.axis)
    handles = [
        Line2D([], [], **SIGNAL_STYLE, label=_marker_label("convergence signal", run.signal_time, run.axis)),  # type: ignore[arg-type]
        Line2D([], [], **PLATEAU_STYLE, label=_marker_label("accuracy plateau", run.plateau_time, run.axis)),  # type: ignore[arg-type]
        Line2D(
            [],
            [],
            color="tab:red",
            lw=0.8,
            alpha=0.6,
            label=f"signal threshold: {run.signal_ratio:g} x running peak of V",
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9, frameon=False)
    fig.suptitle(f"{run.label}: {len(run.layer_names)} layers, {run.n_points} sample points ({_sampling(run)})")
    if path is not None:
        fig.savefig(path, dpi=_DPI)
    return fig


def _sampling(run: RunDashboard) -> str:
    if run.config.get("every_n_steps"):
        return f"one every {run.config['every_n_steps']} steps"
    return "one per epoch" if run.axis == "epoch" else "several per epoch, drawn against the step"


def _marker_label(name: str, time: float | None, axis: str) -> str:
    return f"{name}: {axis} {time:g}" if time is not None else f"{name}: none"


def plot_comparison(runs: Sequence[RunDashboard], path: str | Path | None = None) -> Figure:
    """Overlay several runs, one colour each, labelled by run: R(t), the measures, validation metrics, trajectory.

    All runs are drawn against the epoch when every run sampled once per epoch, else against the optimizer step.
    Signal (dashed) and plateau (dotted) markers are drawn in each run's colour on the volatility and accuracy
    panels.

    Args:
        runs: from :func:`lightning_dynamics.report.dashboard_data.load_runs`.
        path: if given, the figure is saved there.

    Raises:
        ValueError: ``runs`` is empty.
    """
    if not runs:
        raise ValueError("`runs` is empty: give at least one run to compare.")
    import matplotlib as mpl

    axis = "epoch" if all(run.axis == "epoch" for run in runs) else "step"
    colors = mpl.colormaps["tab10" if len(runs) <= 10 else "viridis"](
        np.linspace(0, 1, len(runs)) if len(runs) > 10 else range(len(runs))
    )
    fig = _new_figure(13, 11)
    grid = fig.add_gridspec(4, 2)
    first = fig.add_subplot(grid[0, 0])
    panels = [first] + [
        fig.add_subplot(grid[r, c], sharex=first) for r, c in ((0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0))
    ]
    order, integration, metastability, index, volatility, accuracy, loss = panels
    trajectory = fig.add_subplot(grid[3, 1])
    keyed = {"integration": integration, "metastability": metastability, "stability_index": index}
    keyed["stability_volatility"] = volatility
    for run, color in zip(runs, colors, strict=True):
        t = run.time if axis == run.axis else run.steps.astype(np.float64)
        kwargs = {"color": color, "lw": 1.2}
        _line(order, t, run.order_parameter, label=run.label, **kwargs)
        for key, ax in keyed.items():
            if key in run.metrics:
                _line(ax, t, run.metrics[key], **kwargs)
        if run.accuracy_key is not None:
            _line(accuracy, t, run.logged[run.accuracy_key], **kwargs)
            if run.plateau_index is not None:
                accuracy.axvline(t[run.plateau_index], color=color, ls=":", lw=1.4)
        if run.loss_key is not None:
            _line(loss, t, run.logged[run.loss_key], **kwargs)
        if run.signal_index is not None:
            volatility.axvline(t[run.signal_index], color=color, ls="--", lw=1.1)
        integration_series, metastability_series = run.metrics.get("integration"), run.metrics.get("metastability")
        if integration_series is not None and metastability_series is not None:
            both = np.isfinite(integration_series) & np.isfinite(metastability_series)
            trajectory.plot(metastability_series[both], integration_series[both], color=color, lw=1, marker=".", ms=3)
            if both.any():
                end = np.flatnonzero(both)[-1]
                trajectory.plot(metastability_series[end], integration_series[end], "o", color=color, ms=6)
    order.set_ylabel("order parameter R(t)")
    order.set_ylim(0, 1)
    for key, ax in keyed.items():
        ax.set_ylabel(MEASURE_LABELS[key])
        _bounded(ax, key)
    accuracy.set_ylabel("validation accuracy (dotted: plateau)")
    loss.set_ylabel("validation loss")
    volatility.set_ylabel("volatility V (dashed: signal)")
    trajectory.set_xlim(*MEASURE_BOUNDS["metastability"])  # type: ignore[misc]
    trajectory.set_ylim(*MEASURE_BOUNDS["integration"])  # type: ignore[misc]
    trajectory.set_xlabel("metastability M")
    trajectory.set_ylabel("integration I (dot: last point)")
    for ax in panels:
        ax.grid(alpha=0.25)
        _integer_ticks(ax)
    loss.set_xlabel(axis)
    for ax, what in ((accuracy, "validation accuracy"), (loss, "validation loss")):
        if not ax.lines:
            _missing(ax, f"no {what} logged")
    fig.legend(loc="outside lower center", ncols=min(len(runs), 5), fontsize=9, frameon=False)
    fig.suptitle(f"{len(runs)} runs against the {axis}")
    if path is not None:
        fig.savefig(path, dpi=_DPI)
    return fig


def figure_png(figure: Figure, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes, at ``dpi`` (default: the figure's own, as TensorBoard and MLflow draw it)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi="figure" if dpi is None else dpi)
    return buffer.getvalue()


PANELS = (
    ("dynamics/integration", "integration"),
    ("dynamics/metastability", "metastability"),
    ("dynamics/stability_index", "stability index S"),
    ("dynamics/stability_volatility", "volatility V"),
)


def plot_dynamics(per_epoch: pd.DataFrame, accuracy_key: str = "val_acc", path: str | Path | None = None) -> Figure:
    """Plot each dynamics key of a CSVLogger run against the epoch, with ``accuracy_key`` on a twin axis.

    The CSV-only view (one value per epoch); :func:`plot_dashboard` draws everything from the saved history.

    Args:
        per_epoch: output of :func:`lightning_dynamics.report.epoch_metrics`.
        accuracy_key: column drawn in grey on every panel for reference (skipped if absent).
        path: if given, the figure is saved there (PNG, PDF, ... by suffix).
    """
    fig = _new_figure(7, 2.2 * len(PANELS))
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        if key in per_epoch:
            ax.plot(per_epoch.index, per_epoch[key], marker=".", color="tab:blue")
        else:
            _missing(ax, f"{key} not logged")
        _bounded(ax, key.removeprefix("dynamics/"))
        ax.set_ylabel(label)
        if accuracy_key in per_epoch:
            twin = ax.twinx()
            twin.plot(per_epoch.index, per_epoch[accuracy_key], color="0.6", lw=1)
            twin.set_ylabel(accuracy_key, color="0.5")
        _integer_ticks(ax)
    axes[-1].set_xlabel("epoch")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
