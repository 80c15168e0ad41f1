"""Hand a run's dashboard figure to the loggers that take images (TensorBoard, W&B, MLflow).

Called once at the end of fit, on rank 0 only (the caller checks ``trainer.is_global_zero``), after the history
is saved: :func:`log_dashboard_from_history` (the monitor's entry point) draws the saved history with
:func:`dashboard_figure` (:mod:`lightning_dynamics.report`), and :func:`log_dashboard` gives the figure to each
logger in the way that logger stores images:

========================  ==========================================================================
logger                    what it receives
========================  ==========================================================================
``TensorBoardLogger``     ``experiment.add_figure(key, figure, global_step=step)`` (an image summary)
``WandbLogger``           ``log_image(key=key, images=[...], step=step)`` (a ``wandb.Image``)
``MLFlowLogger``          ``experiment.log_figure(run_id, figure, key + ".png")``; with ``log_history``
                          also the history file, ``experiment.log_artifact(run_id, history_path)``
any other (CSV, ...)      nothing; the PNG is written beside the history (``<prefix>_dashboard.png``)
========================  ==========================================================================

Loggers are matched by class name, so the ``lightning.pytorch`` and the standalone ``pytorch_lightning``
loggers both work. A logger that fails warns and the others go on: this runs after a finished fit.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_KEY = "dynamics/dashboard"


def dashboard_figure(history_path: str | Path) -> Figure:
    """The dashboard of the run whose history is ``history_path`` (see ``lightning-dynamics report``).

    Raises:
        FileNotFoundError: no history at ``history_path``.
        lightning_dynamics.report.HistoryError: the file is not a history this version reads.
    """
    from lightning_dynamics.report.dashboard_data import load_run
    from lightning_dynamics.report.plots import plot_dashboard

    return plot_dashboard(load_run(history_path))


def dashboard_png_path(history_path: str | Path) -> Path:
    """Where the PNG goes for loggers without images: ``<prefix>_history[-vN].pt`` -> ``<prefix>_dashboard[-vN].png``.

    Example:
        >>> dashboard_png_path("logs/version_0/dynamics_history-v1.pt").as_posix()
        'logs/version_0/dynamics_dashboard-v1.png'
    """
    path = Path(history_path)
    stem = path.stem
    name = stem.replace("_history", "_dashboard", 1) if "_history" in stem else stem + "_dashboard"
    return path.with_name(name + ".png")


def log_dashboard(
    loggers: Iterable[Any],
    figure: Figure,
    history_path: str | Path | None = None,
    key: str = DEFAULT_KEY,
    step: int | None = None,
    log_history: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Log ``figure`` to every logger that takes images; write it beside the history for the others.

    Args:
        loggers: the trainer's loggers (``trainer.loggers``).
        figure: a matplotlib figure, e.g. :func:`dashboard_figure`.
        history_path: the saved history file. MLflow also gets it as an artifact (``log_history``); loggers
            without images get ``<prefix>_dashboard.png`` beside it. ``None``: neither.
        key: image tag / key / artifact name (``".png"`` is appended for MLflow).
        step: global step of the image (TensorBoard, W&B); ``None``: the logger's default.
        log_history: give ``history_path`` to MLflow as an artifact.
        warn: called with a message when a logger fails (default: ``rank_zero_warn``).

    Returns:
        Logger class name -> what it received (``"figure"``, ``"figure+history"``, ``"png:<path>"``,
        ``"failed: ..."``); ``"no logger"`` when ``loggers`` is empty and the PNG was written.
    """
    if warn is None:
        from lightning.pytorch.utilities import rank_zero_warn

        warn = rank_zero_warn
    done: dict[str, str] = {}
    png: bytes | None = None
    others: list[str] = []
    loggers = list(loggers)
    for logger in loggers:
        kind = type(logger).__name__
        try:
            if kind == "TensorBoardLogger":
                logger.experiment.add_figure(key, figure, global_step=step, close=False)
                logger.experiment.flush()
                done[kind] = "figure"
            elif kind == "WandbLogger":
                from PIL import Image

                png = png if png is not None else _png(figure)
                logger.log_image(key=key, images=[Image.open(io.BytesIO(png))], step=step)
                done[kind] = "figure"
            elif kind == "MLFlowLogger":
                logger.experiment.log_figure(logger.run_id, figure, f"{key}.png")
                done[kind] = "figure"
                if log_history and history_path is not None:
                    logger.experiment.log_artifact(logger.run_id, str(history_path))
                    done[kind] = "figure+history"
            else:
                others.append(kind)
        except Exception as error:
            warn(f"could not log the dynamics dashboard to {kind}: {error!r}")
            done[kind] = f"failed: {error!r}"
    if history_path is not None and (others or not loggers):
        target = dashboard_png_path(history_path)
        target.write_bytes(png if png is not None else _png(figure))
        for kind in others or ["no logger"]:
            done[kind] = f"png:{target}"
    return done


def log_dashboard_from_history(
    loggers: Iterable[Any],
    history_path: str | Path,
    prefix: str = "dynamics",
    step: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Draw the dashboard of a saved history and log it under ``<prefix>/dashboard``: what the monitor calls.

    Called by :class:`~lightning_dynamics.DynamicsMonitor` at the end of fit on rank 0, after it saved the
    history and handed the file to MLflow/W&B itself (``artifacts.log_history_artifact``), so the history is not
    logged again here. Nothing is drawn when there is no logger, or when matplotlib is not installed (the
    ``examples`` extra): the figure is an extra, never a requirement. Drawing takes about a second on a CPU.

    Returns:
        As :func:`log_dashboard`; empty when nothing was drawn.
    """
    loggers = list(loggers)
    if not loggers or importlib.util.find_spec("matplotlib") is None:
        return {}
    figure = dashboard_figure(history_path)
    return log_dashboard(
        loggers, figure, history_path, key=f"{prefix}/dashboard", step=step, log_history=False, warn=warn
    )


def _png(figure: Figure) -> bytes:
    from lightning_dynamics.report.plots import figure_png

    return figure_png(figure)
