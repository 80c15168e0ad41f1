"""Dashboards of runs from their saved history, and reading CSVLogger files (matplotlib: the ``examples`` extra).

:mod:`~lightning_dynamics.report.dashboard_data` computes what is shown, :mod:`~lightning_dynamics.report.plots`
draws it, :mod:`~lightning_dynamics.report.html` writes the self-contained page and
:mod:`~lightning_dynamics.report.cli` is the ``lightning-dynamics report|compare`` command.
"""

from lightning_dynamics.report.dashboard_data import HistoryError, RunDashboard, find_history, load_run, load_runs
from lightning_dynamics.report.logs import epoch_metrics, read_metrics

__all__ = ["HistoryError", "RunDashboard", "epoch_metrics", "find_history", "load_run", "load_runs", "read_metrics"]
