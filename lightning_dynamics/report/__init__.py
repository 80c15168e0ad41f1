"""Dashboards of runs from their saved history, and when they converged (matplotlib: the ``examples`` extra).

The history file that :class:`~lightning_dynamics.DynamicsMonitor` saves is the report's one source.
:mod:`~lightning_dynamics.report.dashboard_data` computes what is shown, :mod:`~lightning_dynamics.measures.readings`
what stands beside each measure (its noise floor, a short-series flag), :mod:`~lightning_dynamics.report.analysis`
when the run converged, :mod:`~lightning_dynamics.report.plots` draws it, :mod:`~lightning_dynamics.report.html`
writes the self-contained page and :mod:`~lightning_dynamics.report.cli` is the ``lightning-dynamics
report|compare`` command. :mod:`~lightning_dynamics.report.logs` reads a CSVLogger's ``metrics.csv``, for runs
logged without a history.
"""

from lightning_dynamics.measures.readings import Reading, fit_summary, noise_floor_summary, relative_change_reading
from lightning_dynamics.report.analysis import ConvergenceReport, convergence_points, convergence_report
from lightning_dynamics.report.dashboard_data import HistoryError, RunDashboard, find_history, load_run, load_runs
from lightning_dynamics.report.logs import epoch_metrics, read_metrics

__all__ = [
    "ConvergenceReport",
    "HistoryError",
    "Reading",
    "RunDashboard",
    "convergence_points",
    "convergence_report",
    "epoch_metrics",
    "find_history",
    "fit_summary",
    "load_run",
    "load_runs",
    "noise_floor_summary",
    "read_metrics",
    "relative_change_reading",
]
