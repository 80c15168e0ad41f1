"""Figures of runs (matplotlib, the ``examples`` extra): the dashboard of one run and the overlay of several.

Drawing only: every quantity comes from :mod:`lightning_dynamics.report.dashboard_data`. Bounded measures are
drawn on fixed axes (integration, stability index and :math:`R(t)` on [0, 1]; metastability and volatility,
standard deviations of [0, 1] variables, on [0, 0.5]), so a tiny value never looks like a jump; the time axis is
the epoch (fractional for sub-epoch sample points, continued across fits) with integer ticks; each series is drawn
at the points where it is finite. A measure whose history carries a null (``<measure>_null_lo`` / ``_null_hi``)
gets its noise floor as a grey band and a note saying whether its latest value is inside it; a measure computed
on fewer points than its estimator's reliable minimum is flagged "short series".

Every name (layers, runs, logged keys) is drawn literally: ``$`` never starts matplotlib's mathtext.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lightning_dynamics.measures.readings import first_reliable_point
from lightning_dynamics.measures.registry import MEASURES, NULL_SUFFIXES
from lightning_dynamics.report.dashboard_data import RunDashboard, cell_edges, comparability_notes, epoch_of, short_name
from lightning_dynamics.report.diagnosis_panel import draw_findings, draw_layer_stat, has_findings, layer_stat_panels

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIGNAL_STYLE = {"color": "tab:red", "ls": "--", "lw": 1.2}
PLATEAU_STYLE = {"color": "tab:green", "ls": ":", "lw": 1.6}
BAND_STYLE = {"color": "0.55", "alpha": 0.25, "lw": 0}
INSIDE_COLOR = "tab:orange"
SHORT_COLOR = "tab:red"
SHORT_SPAN_STYLE = {"color": "tab:red", "alpha": 0.06, "lw": 0}
_DPI = 110


@contextlib.contextmanager
def literal_text() -> Iterator[None]:
    """Matplotlib settings under which every string is drawn as written (no mathtext for ``$``, no TeX).

    Text objects take ``text.parse_math`` when they are made, so figures built inside keep it when saved later.
    """
    import matplotlib as mpl

    with mpl.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield


def _new_figure(width: float, height: float) -> Figure:
    # A bare Figure (no pyplot): no global backend switch, no figure manager to leak in long processes.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _line(ax: Axes, x: np.ndarray, y: np.ndarray, **kwargs: object) -> None:
    """``y`` against ``x`` at the points where ``y`` is finite (measures are NaN between the points that log them)."""
    finite = np.isfinite(y)
    marker = "." if int(finite.sum()) <= 120 else None
    ax.plot(x[finite], y[finite], marker=marker, ms=4, **kwargs)  # type: ignore[arg-type]


def _noise_band(ax: Axes, run: RunDashboard, key: str) -> bool:
    """Draw the null band of ``key`` where both its edges are finite; return whether there was one."""
    lo, hi = (run.metrics.get(key + suffix) for suffix in NULL_SUFFIXES)
    if lo is None or hi is None:
        return False
    finite = np.isfinite(lo) & np.isfinite(hi)
    if not finite.any():
        return False
    ax.fill_between(run.time[finite], lo[finite], hi[finite], **BAND_STYLE)  # type: ignore[arg-type]
    return True


def _short_span(ax: Axes, run: RunDashboard, key: str) -> None:
    """Shade the part of the time axis where the measure was computed on fewer points than its reliable minimum."""
    reading = run.readings.get(key)
    if reading is None or reading.reliable_from is None or run.n_points == 0:
        return
    first = first_reliable_point(key, run.n_points, run.config, reading.reliable_from)
    if first == 0:
        return
    end = run.time[-1] if first is None else run.time[first]
    ax.axvspan(float(run.time[0]), float(end), **SHORT_SPAN_STYLE)  # type: ignore[arg-type]


def _reading_notes(ax: Axes, run: RunDashboard, key: str) -> None:
    """Top-left notes: where the latest value sits against its noise floor; "short series" below the minimum."""
    reading = run.readings.get(key)
    if reading is None:
        return
    notes: list[tuple[str, str]] = []
    status = reading.status()  # "inside noise floor", "outside noise floor" or "settled around a level"
    if status:
        notes.append((status, INSIDE_COLOR if reading.inside_noise_floor else "0.3"))
    if reading.short_series:
        notes.append((f"short series: {reading.short_text()}", SHORT_COLOR))
    for row, (text, color) in enumerate(notes):
        ax.text(
            0.01,
            0.97 - 0.16 * row,
            text,
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=8,
            color=color,
            bbox={"facecolor": "white", "edgecolor": color, "alpha": 0.8, "pad": 1.5},
        )


def _missing(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="0.45")


def _label(key: str) -> str:
    """The axis label the measure registry declares for ``key`` (the key itself where it declares none)."""
    measure = MEASURES.get(key)
    return measure.label if measure is not None and measure.label else key


def _bounds(key: str) -> tuple[float, float] | None:
    """The plot range the measure registry declares for ``key`` (None: unbounded or not a measure)."""
    measure = MEASURES.get(key)
    return None if measure is None else measure.bounds


def _bounded(ax: Axes, key: str) -> None:
    bounds = _bounds(key)
    if bounds is not None:
        ax.set_ylim(*bounds)


def _signal_name(run: RunDashboard) -> str:
    """The rule behind the red marker: the stop DynamicsEarlyStopping makes, or the legacy volatility signal."""
    return "relative-change stop" if run.convergence.rule == "relative_change" else "volatility-drop signal"


def _markers(ax: Axes, run: RunDashboard) -> None:
    if run.signal_time is not None:
        ax.axvline(run.signal_time, **SIGNAL_STYLE)  # type: ignore[arg-type]
    if run.plateau_time is not None:
        ax.axvline(run.plateau_time, **PLATEAU_STYLE)  # type: ignore[arg-type]


def _heatmap(ax: Axes, run: RunDashboard) -> None:
    n_layers = len(run.layer_names)
    mesh = ax.pcolormesh(
        cell_edges(run.time),
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
    ax.set_yticks(ticks, [short_name(run.layer_names[i]) for i in ticks], fontsize=7)
    ax.set_title(f"layer summaries ({run.summary}), z-scored per layer over time", fontsize=10)
    ax.figure.colorbar(mesh, ax=ax, label="z", pad=0.01, aspect=15)


def _trajectory(ax: Axes, run: RunDashboard) -> None:
    integration = run.metrics.get("integration")
    metastability = run.metrics.get("metastability")
    ax.set_xlim(*(_bounds("metastability") or (0.0, 0.5)))
    ax.set_ylim(*(_bounds("integration") or (0.0, 1.0)))
    ax.set_xlabel(_label("metastability"))
    ax.set_ylabel(_label("integration"))
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


def _measure_panel(ax: Axes, run: RunDashboard, key: str, color: str = "tab:blue") -> None:
    series = run.metrics.get(key)
    ax.set_ylabel(_label(key))
    _bounded(ax, key)
    if series is None:
        _missing(ax, f"{key} not in the history")
        return
    _noise_band(ax, run, key)
    _short_span(ax, run, key)
    _line(ax, run.time, series, color=color)
    if (
        key == "stability_volatility"
        and run.convergence.rule == "volatility"
        and run.convergence.signal_index is not None
    ):
        peak = np.fmax.accumulate(np.where(np.isfinite(series), series, -np.inf))
        defined = np.isfinite(peak) & np.isfinite(series)
        ax.plot(run.time[defined], run.convergence.ratio * peak[defined], color="tab:red", lw=0.8, alpha=0.6)
    if key == "relative_change":
        _relative_change_axis(ax, series)
    if not np.isfinite(series).any():
        _missing(ax, "not defined yet (too few sample points)")
    _reading_notes(ax, run, key)


def _relative_change_axis(ax: Axes, series: np.ndarray) -> None:
    """Log scale (a dead run reads 1e-6, a slow start 7) with the settled threshold (0.25) and 1 marked."""
    finite = series[np.isfinite(series)]
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
    ax.axhline(0.25, color="0.5", ls=":", lw=1)
    ax.axhline(1.0, color="0.5", ls="--", lw=0.8)
    ax.set_ylabel("relative change\n(dotted: settled, 0.25)")


def _freezing_panel(ax: Axes, run: RunDashboard) -> bool:
    """The freezing panel of :mod:`lightning_dynamics.report.freezing_panel`, where that module exists."""
    try:
        module = importlib.import_module("lightning_dynamics.report.freezing_panel")
    except ImportError:
        return False
    draw = getattr(module, "draw_freezing", None)
    record = getattr(module, "freeze_record", None)
    if draw is None or (record is not None and record(run.state) is None):
        return False  # nothing was frozen or recorded: no empty panel
    try:
        draw(ax, run.state)
    except Exception as error:  # one panel must not cost the whole dashboard; the panel says what went wrong
        ax.clear()
        _missing(ax, f"layer freezing: could not draw ({type(error).__name__}: {error})")
    return True


def _validation_panel(ax: Axes, run: RunDashboard) -> None:
    ax.set_ylabel(run.accuracy_key or "validation accuracy")
    if run.accuracy_key is None and run.loss_key is None:
        _missing(ax, "no validation accuracy or loss logged")
        return
    if run.accuracy_key is not None:
        _line(ax, run.time, run.logged[run.accuracy_key], color="black")
    else:
        _missing(ax, "no validation accuracy logged")
    if run.loss_key is not None:
        twin = ax.twinx()
        _line(twin, run.time, run.logged[run.loss_key], color="tab:orange")
        twin.set_ylabel(run.loss_key, color="tab:orange")
        twin.tick_params(axis="y", colors="tab:orange")


def plot_dashboard(run: RunDashboard, path: str | Path | None = None) -> Figure:
    """Draw one run's dashboard: heatmap, trajectory, R(t), the measures with their noise floors, validation metrics.

    Panels: the ``[L, T]`` summaries z-scored per layer (layers top to bottom from the input side); the
    integration-metastability trajectory coloured by epoch; :math:`R(t)` with its mean; validation accuracy and loss
    where logged; one panel per measure (:func:`dashboard_measures`: integration, metastability, the stability index,
    its volatility (with the legacy rule's threshold, 0.25 x running peak, when that rule gave the signal), the
    mean DFA exponent, and every other
    registered measure the history holds, on the registry's bounds); layers left out; the findings of a
    :class:`~lightning_dynamics.DynamicsDiagnosis` (a marker at the end of the epoch each was first seen, where the
    run has findings); heatmaps of the per-layer statistics (dead fraction, saturated fraction, gradient norm; where
    the history has ``layer_stats``, :mod:`lightning_dynamics.report.diagnosis_panel`); layer freezing (where
    :mod:`lightning_dynamics.report.freezing_panel` exists). A measure with a null in the history
    gets its noise floor (the null's 95% band, grey) and a note: "inside noise floor" when its latest value sits in
    the band; "short series" when that value was computed on fewer points than its estimator's reliable minimum,
    and the stretch of time where that holds is shaded light red.
    Vertical lines: the stop of DynamicsEarlyStopping's relative-change rule replayed on the history (red dashed)
    and the accuracy plateau (green dotted), docs/method.md
    section 8.

    Args:
        run: from :func:`lightning_dynamics.report.dashboard_data.load_run`.
        path: if given, the figure is saved there (PNG, PDF, SVG by suffix).

    Returns:
        The matplotlib figure (not registered with pyplot).
    """
    with literal_text():
        fig = _draw_dashboard(run)
        if path is not None:
            fig.savefig(path, dpi=_DPI)
    return fig


# Always drawn (a note says when the history lacks one); every other registered measure in the history gets a panel.
CORE_MEASURES = ("integration", "metastability", "stability_index", "stability_volatility", "integration_alpha")
COUNT_KEYS = ("n_excluded", "nonfinite")
_PANEL_COLORS = ("tab:blue", "tab:brown", "tab:cyan", "tab:olive", "tab:pink", "tab:green", "tab:gray")


def dashboard_measures(run: RunDashboard) -> list[str]:
    """The measures that get a panel, in the registry's order: the core ones, and any other registered measure
    the history holds (a measure added to :mod:`lightning_dynamics.measures.registry` appears without a change here)."""
    present = set(CORE_MEASURES) | {key for key in run.metrics if key in MEASURES}
    return [name for name in MEASURES if name in present and name not in COUNT_KEYS]


def _draw_dashboard(run: RunDashboard) -> Figure:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    measures = dashboard_measures(run)
    # What the diagnosis found, and the per-layer statistics it reads: panels only where the run holds them.
    extras = (["findings"] if has_findings(run) else []) + layer_stat_panels(run)
    n_panels = 3 + len(measures) + len(extras) + 1  # R(t), validation, measures, layers left out, extras, freezing
    n_rows = math.ceil(n_panels / 2)
    fig = _new_figure(13, 3.0 + 2.2 * n_rows)
    grid = fig.add_gridspec(n_rows + 1, 2, height_ratios=[1.5] + [1] * n_rows)
    heat = fig.add_subplot(grid[0, 0])
    _heatmap(heat, run)
    _trajectory(fig.add_subplot(grid[0, 1]), run)
    time_axes = [fig.add_subplot(grid[1 + i // 2, i % 2], sharex=heat) for i in range(n_panels)]
    order, validation, *measure_axes, spare = time_axes[: 3 + len(measures)]
    extra_axes, last = time_axes[3 + len(measures) : -1], time_axes[-1]
    heatmaps = []
    for ax, extra in zip(extra_axes, extras, strict=True):
        if extra == "findings":
            draw_findings(ax, run)
        else:
            draw_layer_stat(ax, run, extra)
            heatmaps.append(ax)
            time_axes.remove(ax)  # no convergence markers or grid over a heatmap
    order.set_ylabel("order parameter R(t)\n(dotted: its mean)")
    order.set_ylim(0, 1)
    if np.isfinite(run.order_parameter).any():
        _line(order, run.time, run.order_parameter, color="tab:purple")
        order.axhline(float(np.nanmean(run.order_parameter)), color="tab:purple", ls=":", lw=1)
    else:
        _missing(order, "too few sample points for phases")
    _validation_panel(validation, run)
    for k, (ax, key) in enumerate(zip(measure_axes, measures, strict=True)):
        _measure_panel(ax, run, key, color=_PANEL_COLORS[k % len(_PANEL_COLORS)])
        if key == "integration_alpha":
            ax.set_ylabel("mean DFA exponent α\n(dotted: h_opt)")
            ax.axhline(float(run.config.get("h_opt", 0.7)), color="0.5", ls=":", lw=1)
    spare.set_ylabel("layers left out")
    spare.set_ylim(bottom=-0.5, top=len(run.layer_names) + 0.5)
    counts = [
        (key, color) for key, color in zip(COUNT_KEYS, ("tab:gray", "tab:red"), strict=True) if key in run.metrics
    ]
    for key, color in counts:
        _line(spare, run.time, run.metrics[key], color=color, label=key)
    if counts:
        spare.legend(loc="upper right", fontsize=7)
    else:
        _missing(spare, "n_excluded / nonfinite not in the history")
    if not _freezing_panel(last, run):
        last.set_visible(False)
        time_axes.remove(last)
    time_axes = [ax for ax in time_axes if ax.axison]  # a panel that turned its axes off (nothing to show) stays bare
    for ax in time_axes:
        _markers(ax, run)
        ax.grid(alpha=0.25)
    for ax in (heat, *time_axes, *heatmaps):
        _integer_ticks(ax)
    for ax in [*time_axes, *heatmaps][-2:]:
        ax.set_xlabel(run.axis)
    handles = [
        Line2D([], [], **SIGNAL_STYLE, label=_marker_label(_signal_name(run), run.signal_time)),  # type: ignore[arg-type]
        Line2D([], [], **PLATEAU_STYLE, label=_marker_label("accuracy plateau", run.plateau_time)),  # type: ignore[arg-type]
        *(
            [
                Line2D(
                    [],
                    [],
                    color="tab:red",
                    lw=0.8,
                    alpha=0.6,
                    label=f"signal threshold: {run.convergence.ratio:g} x running peak of V",
                )
            ]
            if run.convergence.rule == "volatility"
            else []
        ),
        Patch(**BAND_STYLE, label="noise floor: 95% of the measure on surrogates"),  # type: ignore[arg-type]
        Patch(**{**SHORT_SPAN_STYLE, "alpha": 0.15}, label="short series: fewer points than reliable"),  # type: ignore[arg-type]
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9, frameon=False)
    fig.suptitle(f"{run.label}: {len(run.layer_names)} layers, {run.n_points} sample points ({_sampling(run)})")
    return fig


def _sampling(run: RunDashboard) -> str:
    if run.config.get("every_n_steps"):
        return f"one every {run.config['every_n_steps']} steps"
    per_epoch = run.n_points / max(1, len(np.unique(np.floor(run.time))))
    return "one per epoch" if per_epoch <= 1 else f"{per_epoch:.3g} per epoch"


def _marker_label(name: str, time: float | None) -> str:
    return f"{name}: epoch {epoch_of(time)}" if time is not None else f"{name}: none"


def plot_comparison(runs: Sequence[RunDashboard], path: str | Path | None = None) -> Figure:
    """Overlay several runs, one colour each, labelled by run: the relative change, the measures, validation metrics,
    trajectory.

    All runs are drawn against their epoch axis (:attr:`RunDashboard.time`). Signal (dashed) and plateau (dotted)
    markers are drawn in each run's colour on the volatility and accuracy panels.

    Args:
        runs: from :func:`lightning_dynamics.report.dashboard_data.load_runs`.
        path: if given, the figure is saved there.

    Raises:
        ValueError: ``runs`` is empty.
    """
    if not runs:
        raise ValueError("`runs` is empty: give at least one run to compare.")
    with literal_text():
        fig = _draw_comparison(runs)
        if path is not None:
            fig.savefig(path, dpi=_DPI)
    return fig


def _draw_comparison(runs: Sequence[RunDashboard]) -> Figure:
    import matplotlib as mpl

    colors = mpl.colormaps["tab10" if len(runs) <= 10 else "viridis"](
        np.linspace(0, 1, len(runs)) if len(runs) > 10 else range(len(runs))
    )
    fig = _new_figure(13, 11)
    grid = fig.add_gridspec(4, 2)
    first = fig.add_subplot(grid[0, 0])
    panels = [first] + [
        fig.add_subplot(grid[r, c], sharex=first) for r, c in ((0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0))
    ]
    change, integration, metastability, index, volatility, accuracy, loss = panels
    trajectory = fig.add_subplot(grid[3, 1])
    keyed = {"integration": integration, "metastability": metastability, "stability_index": index}
    keyed["stability_volatility"] = volatility
    for run, color in zip(runs, colors, strict=True):
        t = run.time
        kwargs = {"color": color, "lw": 1.2}
        change.plot([], [], label=run.label, **kwargs)  # the legend's entry, also for a run without the measure
        if "relative_change" in run.metrics:
            _line(change, t, run.metrics["relative_change"], **kwargs)
        for key, ax in keyed.items():
            if key in run.metrics:
                _line(ax, t, run.metrics[key], **kwargs)
        if run.accuracy_key is not None:
            _line(accuracy, t, run.logged[run.accuracy_key], **kwargs)
            if run.plateau_time is not None:
                accuracy.axvline(run.plateau_time, color=color, ls=":", lw=1.4)
        if run.loss_key is not None:
            _line(loss, t, run.logged[run.loss_key], **kwargs)
        if run.signal_time is not None:
            volatility.axvline(run.signal_time, color=color, ls="--", lw=1.1)
        integration_series, metastability_series = run.metrics.get("integration"), run.metrics.get("metastability")
        if integration_series is not None and metastability_series is not None:
            both = np.isfinite(integration_series) & np.isfinite(metastability_series)
            trajectory.plot(metastability_series[both], integration_series[both], color=color, lw=1, marker=".", ms=3)
            if both.any():
                end = np.flatnonzero(both)[-1]
                trajectory.plot(metastability_series[end], integration_series[end], "o", color=color, ms=6)
    _relative_change_axis(change, np.concatenate([run.metrics.get("relative_change", np.array([])) for run in runs]))
    for key, ax in keyed.items():
        ax.set_ylabel(_label(key))
        _bounded(ax, key)
    accuracy.set_ylabel("validation accuracy (dotted: plateau)")
    loss.set_ylabel("validation loss")
    volatility.set_ylabel("volatility V (dashed: signal)")
    trajectory.set_xlim(*(_bounds("metastability") or (0.0, 0.5)))
    trajectory.set_ylim(*(_bounds("integration") or (0.0, 1.0)))
    trajectory.set_xlabel(_label("metastability"))
    trajectory.set_ylabel(_label("integration") + " (dot: last point)")
    for ax in panels:
        ax.grid(alpha=0.25)
        _integer_ticks(ax)
    loss.set_xlabel("epoch")
    for ax, what in ((accuracy, "validation accuracy"), (loss, "validation loss")):
        if not ax.lines:
            _missing(ax, f"no {what} logged")
    fig.legend(loc="outside lower center", ncols=min(len(runs), 5), fontsize=9, frameon=False)
    notes = comparability_notes(runs)
    differ = [note.split("differ in ", 1)[1].split(" (", 1)[0] for note in notes]
    fig.suptitle(
        f"{len(runs)} runs against the epoch"
        + (f"\nnot comparable value by value: they differ in {', '.join(differ)}" if differ else ""),
        color="black" if not differ else "tab:red",
    )
    return fig


def figure_png(figure: Figure, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes, at ``dpi`` (default: the figure's own, as TensorBoard and MLflow draw it)."""
    buffer = io.BytesIO()
    with literal_text():
        figure.savefig(buffer, format="png", dpi="figure" if dpi is None else dpi)
    return buffer.getvalue()
