"""The layer-freezing panel of the dashboard: when each monitored layer was frozen, beside the per-layer heatmap.

Reads the freeze record that :class:`~lightning_dynamics.decisions.freezing.LayerFreezer` (and so
:class:`~lightning_dynamics.callbacks.freezing.DynamicsLayerFreezing`) writes into the history file: the series
``logged["<prefix>/frozen_layers"]``, the number of monitored layers frozen at each sample point (NaN before the
first check). Since freezing is a front-to-back prefix, layer ``l`` froze at the first point where that count
exceeds ``l`` (:func:`~lightning_dynamics.decisions.freezing.frozen_at_from_series`).

The dashboard calls :func:`draw_freezing` with an Axes and the history as read (``run.state``); the panel shares
the heatmap's conventions: one row per monitored layer, the first (input-side) layer on top, the epoch on the
x axis. A trained stretch is drawn light, a frozen stretch dark, with the epoch each layer froze written at its
start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes

from lightning_dynamics.decisions.freezing import FROZEN_LAYERS_KEY, frozen_at_from_series


def freeze_record(state: Mapping[str, Any]) -> list[float] | None:
    """The ``frozen_layers`` series of a history (``None`` when the run did not freeze with the core).

    Example:
        >>> freeze_record({"prefix": "dynamics", "logged": {"dynamics/frozen_layers": [0.0, 1.0]}})
        [0.0, 1.0]
    """
    logged = state.get("logged") or {}
    prefix = state.get("prefix", "dynamics")
    series = logged.get(f"{prefix}/{FROZEN_LAYERS_KEY}")
    if series is None:
        return None
    return [float(v) for v in series]


def _dashboard_time(state: Mapping[str, Any], n_points: int) -> list[float]:
    """The other panels' time axis (epochs continued across fits, ``e + j/n`` within an epoch), so they line up."""
    from lightning_dynamics.capture.history import history_segments
    from lightning_dynamics.report.dashboard_data import epoch_axis

    epochs = list(state.get("epochs", range(n_points)))
    steps = list(state.get("steps", epochs))
    segments = history_segments(
        {"epochs": epochs, "steps": steps, **({"segments": state["segments"]} if "segments" in state else {})}
    )
    return [float(t) for t in epoch_axis(epochs, steps, segments)[0]]


def draw_freezing(ax: Axes, state: Mapping[str, Any]) -> None:
    """Draw when each monitored layer was frozen: one row per layer (first layer on top), epochs on the x axis.

    Args:
        ax: the Axes to draw into.
        state: a history as read by :func:`lightning_dynamics.capture.load_history` (``layer_names``, ``epochs``,
            ``logged``, ``prefix``); a history without a freeze record gets a note instead.
    """
    names = list(state.get("layer_names", []))
    record = freeze_record(state)
    ax.set_title("layer freezing (dark: frozen)", fontsize=10)
    if record is None or not names:
        ax.text(0.5, 0.5, "no layer freezing recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    time = _dashboard_time(state, len(record))
    start, end = (0.0, time[-1]) if time else (0.0, 1.0)
    first = frozen_at_from_series(record, len(names))
    for layer, at in enumerate(first):
        ax.barh(layer, end - start, left=start, height=0.8, color="0.88")
        if at is not None:
            ax.barh(layer, end - time[at], left=time[at], height=0.8, color="tab:blue")
            ax.text(time[at], layer, f" {time[at]:.2g}", va="center", ha="left", fontsize=7, color="white")
    ax.set_ylim(len(names) - 0.5, -0.5)
    step = max(1, math.ceil(len(names) / 16))
    ticks = list(range(0, len(names), step))
    ax.set_yticks(ticks, [n if len(n) <= 18 else "…" + n[-17:] for n in (names[i] for i in ticks)], fontsize=7)
    ax.set_xlim(start, end)
    ax.set_xlabel("epoch")
    frozen = [at for at in first if at is not None]
    ax.text(
        0.99,
        0.02,
        f"{len(frozen)} of {len(names)} layers frozen",
        ha="right",
        va="bottom",
        transform=ax.transAxes,
        fontsize=8,
    )
