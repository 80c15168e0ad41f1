"""The dashboard figure of a saved history, for the loggers (drawing: :mod:`lightning_dynamics.report`).

Which logger gets what lives in one table, :mod:`lightning_dynamics.callbacks.sinks`;
:func:`~lightning_dynamics.callbacks.sinks.hand_to_loggers` hands a finished run's history file and this figure to
every logger (the call both adapters make at the end of fit).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lightning_dynamics.callbacks.sinks import DEFAULT_KEY, log_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_KEY", "dashboard_figure", "dashboard_png_path", "log_figure"]


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
