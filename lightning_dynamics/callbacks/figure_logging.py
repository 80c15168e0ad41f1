"""The dashboard figure of a saved history, for the loggers (drawing: :mod:`lightning_dynamics.report`).

Which logger gets what lives in one table, :mod:`lightning_dynamics.callbacks.sinks`;
:func:`~lightning_dynamics.callbacks.sinks.hand_to_loggers` hands a finished run's history file and this figure to
every logger. :func:`log_dashboard_from_history` is the figure half of it, the call the monitor makes today.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_dynamics.callbacks.sinks import DEFAULT_KEY, hand_to_loggers, log_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_KEY", "dashboard_figure", "dashboard_png_path", "log_dashboard_from_history", "log_figure"]


def dashboard_figure(history_path: str | Path) -> Figure:
    """The dashboard of the run whose history is ``history_path`` (as ``lightning-dynamics report`` draws it).

    Raises:
        FileNotFoundError: no history at ``history_path``.
        lightning_dynamics.report.HistoryError: the file is not a history this version reads.
    """
    from lightning_dynamics.report.dashboard_data import load_run
    from lightning_dynamics.report.plots import plot_dashboard

    return plot_dashboard(load_run(history_path))


def dashboard_png_path(history_path: str | Path) -> Path:
    """The run's one dashboard PNG: ``<prefix>_history[-vN].pt`` -> ``<prefix>_dashboard[-vN].png`` beside it.

    ``lightning-dynamics report`` writes the same file (and its HTML page beside it).

    Example:
        >>> dashboard_png_path("logs/version_0/dynamics_history-v1.pt").as_posix()
        'logs/version_0/dynamics_dashboard-v1.png'
    """
    from lightning_dynamics.report.dashboard_data import dashboard_stem

    return Path(history_path).with_name(dashboard_stem(history_path) + ".png")


def log_dashboard_from_history(
    loggers: Iterable[Any],
    history_path: str | Path,
    prefix: str = "dynamics",
    step: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Draw the dashboard of a saved history and give it to the loggers under ``<prefix>/dashboard``.

    The figure half of :func:`~lightning_dynamics.callbacks.sinks.hand_to_loggers` (the history file goes through
    ``artifacts.log_history_artifact`` in today's monitor). Nothing is drawn without a logger or without
    matplotlib.

    Returns:
        As :func:`~lightning_dynamics.callbacks.sinks.log_figure`; empty when nothing was drawn.
    """
    return hand_to_loggers(loggers, history_path, prefix=prefix, step=step, warn=warn, history=False)
