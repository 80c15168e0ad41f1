"""Where a finished run's history file and dashboard figure go, per logger: one table of sinks.

Called once at the end of fit, on rank 0 only (the caller checks ``trainer.is_global_zero``), after the history is
saved. :data:`SINKS` says, for each logger class, what it does with the history file and with the figure:

========================  ==========================================  =========================================
logger                    history file                                dashboard figure
========================  ==========================================  =========================================
``MLFlowLogger``          ``experiment.log_artifact(run_id, path)``   ``experiment.log_figure(run_id, fig,
                                                                      key + ".png")``
``WandbLogger``           a ``dynamics-history`` ``wandb.Artifact``   ``log_image(key=key, images=[...],
                                                                      step=step)``
``TensorBoardLogger``     kept in its ``log_dir``                     ``experiment.add_figure(key, fig,
                                                                      global_step=step)``; each measure and its
                                                                      noise floor as one margin chart
                                                                      (custom scalars)
any other (CSV, ...)      kept in its ``log_dir``                     the PNG beside the history
                                                                      (``<prefix>_dashboard[-vN].png``)
========================  ==========================================  =========================================

Loggers are matched by class name, so the ``lightning.pytorch`` and the standalone ``pytorch_lightning`` loggers
both work. A logger that fails warns and the others go on: this runs after a finished fit. The figure is drawn
only when some logger is there to take it, and only when matplotlib is installed (the ``examples`` extra).
:func:`hand_to_loggers` is what the monitor calls; :func:`dashboard_figure` draws a saved history's figure.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_KEY = "dynamics/dashboard"


class FigureImage:
    """A figure and its PNG bytes, encoded once (on first use) however many loggers take it."""

    def __init__(self, figure: Figure) -> None:
        self.figure = figure
        self._png: bytes | None = None

    @property
    def png(self) -> bytes:
        if self._png is None:
            from lightning_dynamics.report.plots import figure_png

            self._png = figure_png(self.figure)
        return self._png


@dataclass(frozen=True)
class Sink:
    """What one logger class does with the run's files.

    Attributes:
        history: ``(logger, history_path) -> None``: store the history file with the run; None: the file stays in
            the logger's ``log_dir``.
        figure: ``(logger, image, key, step) -> None``: store the dashboard image; None: the PNG is written beside
            the history.
        bands: ``(logger, prefix) -> None``: tell the logger to draw each measure inside its noise floor (one chart
            with the value and its ``_null_lo``/``_null_hi`` edges as a band); None: the edges stay separate series.
    """

    history: Callable[[Any, Path], None] | None = None
    figure: Callable[[Any, FigureImage, str, int | None], None] | None = None
    bands: Callable[[Any, str], None] | None = None


def _mlflow_history(logger: Any, path: Path) -> None:
    logger.experiment.log_artifact(logger.run_id, str(path))


def _mlflow_figure(logger: Any, image: FigureImage, key: str, step: int | None) -> None:
    logger.experiment.log_figure(logger.run_id, image.figure, f"{key}.png")


def _wandb_history(logger: Any, path: Path) -> None:
    import wandb

    artifact = wandb.Artifact(name=f"{path.stem.replace('.', '-')}", type="dynamics-history")
    artifact.add_file(str(path))
    logger.experiment.log_artifact(artifact)


def _wandb_figure(logger: Any, image: FigureImage, key: str, step: int | None) -> None:
    from PIL import Image

    logger.log_image(key=key, images=[Image.open(io.BytesIO(image.png))], step=step)


def noise_floor_layout(prefix: str) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard's custom-scalar layout that draws each measure inside its noise floor: one margin chart each.

    Example:
        >>> noise_floor_layout("dynamics")["dynamics: value inside its noise floor"]["relative_change"]
        ['Margin', ['dynamics/relative_change', 'dynamics/relative_change_null_lo', 'dynamics/relative_change_null_hi']]
    """
    from lightning_dynamics.measures.registry import MEASURES

    charts = {
        name: ["Margin", [f"{prefix}/{name}", *(f"{prefix}/{key}" for key in measure.null_keys)]]
        for name, measure in MEASURES.items()
        if measure.null is not None
    }
    return {f"{prefix}: value inside its noise floor": charts}


def _tensorboard_bands(logger: Any, prefix: str) -> None:
    logger.experiment.add_custom_scalars(noise_floor_layout(prefix))
    logger.experiment.flush()


def _tensorboard_figure(logger: Any, image: FigureImage, key: str, step: int | None) -> None:
    logger.experiment.add_figure(key, image.figure, global_step=step, close=False)
    logger.experiment.flush()


SINKS: dict[str, Sink] = {
    "MLFlowLogger": Sink(history=_mlflow_history, figure=_mlflow_figure),
    "WandbLogger": Sink(history=_wandb_history, figure=_wandb_figure),
    "TensorBoardLogger": Sink(figure=_tensorboard_figure, bands=_tensorboard_bands),
}
_FILE_ONLY = Sink()  # any other logger: files stay on disk


def sink_of(logger: Any) -> Sink:
    """The :class:`Sink` of ``logger``'s class (by name); loggers not in :data:`SINKS` keep files on disk."""
    return SINKS.get(type(logger).__name__, _FILE_ONLY)


def _default_warn() -> Callable[[str], None]:
    from lightning.pytorch.utilities import rank_zero_warn

    return rank_zero_warn


def log_history_file(
    loggers: Iterable[Any], path: str | Path, warn: Callable[[str], None] | None = None
) -> dict[str, str]:
    """Store the history file with the run in every logger whose sink keeps files (MLflow, W&B).

    Returns:
        Logger class name -> ``"history"`` or ``"failed: ..."`` (loggers that keep it on disk are not listed).
    """
    warn = _default_warn() if warn is None else warn
    path = Path(path)
    done: dict[str, str] = {}
    for logger in loggers:
        kind, sink = type(logger).__name__, sink_of(logger)
        if sink.history is None:
            continue
        try:
            sink.history(logger, path)
            done[kind] = "history"
        except Exception as error:
            warn(f"could not log the dynamics history {path} to {kind}: {error!r}")
            done[kind] = f"failed: {error!r}"
    return done


def log_figure(
    loggers: Iterable[Any],
    figure: Figure,
    history_path: str | Path | None = None,
    key: str = DEFAULT_KEY,
    step: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Give ``figure`` to every logger that takes images; write it beside the history for the others.

    Args:
        loggers: the trainer's loggers (``trainer.loggers``).
        figure: a matplotlib figure, e.g. :func:`lightning_dynamics.callbacks.sinks.dashboard_figure`.
        history_path: the saved history; loggers without images (and no logger at all) get
            ``<prefix>_dashboard[-vN].png`` beside it. ``None``: no file is written.
        key: image tag / key / artifact name (``".png"`` is appended for MLflow).
        step: global step of the image (TensorBoard, W&B); ``None``: the logger's default.
        warn: called with a message when a logger fails (default: ``rank_zero_warn``).

    Returns:
        Logger class name -> ``"figure"``, ``"png:<path>"`` or ``"failed: ..."``; ``"no logger"`` when
        ``loggers`` is empty and the PNG was written.
    """
    from lightning_dynamics.report.dashboard_data import dashboard_stem

    warn = _default_warn() if warn is None else warn
    image = FigureImage(figure)
    loggers = list(loggers)
    done: dict[str, str] = {}
    on_disk: list[str] = []
    for logger in loggers:
        kind, sink = type(logger).__name__, sink_of(logger)
        if sink.figure is None:
            on_disk.append(kind)
            continue
        try:
            sink.figure(logger, image, key, step)
            done[kind] = "figure"
        except Exception as error:
            warn(f"could not log the dynamics dashboard to {kind}: {error!r}")
            done[kind] = f"failed: {error!r}"
    if history_path is not None and (on_disk or not loggers):
        target = Path(history_path).with_name(dashboard_stem(history_path) + ".png")
        target.write_bytes(image.png)
        for kind in on_disk or ["no logger"]:
            done[kind] = f"png:{target}"
    return done


def hand_to_loggers(
    loggers: Iterable[Any],
    history_path: str | Path,
    prefix: str = "dynamics",
    step: int | None = None,
    dashboard: bool = True,
    warn: Callable[[str], None] | None = None,
    history: bool = True,
) -> dict[str, str]:
    """What the monitor calls at the end of fit: the history file, then the dashboard figure, to each logger.

    Args:
        loggers: the trainer's loggers.
        history_path: the saved history file.
        prefix: the monitor's prefix; the figure's key is ``<prefix>/dashboard``.
        step: global step of the image.
        dashboard: draw and log the dashboard figure (``DynamicsMonitor(log_dashboard=...)``). It is drawn only
            when there is a logger and matplotlib is installed; a figure that fails to draw warns.
        warn: called with a message when a logger or the drawing fails (default: ``rank_zero_warn``).
        history: store the history file with the run where the logger keeps files (MLflow, W&B).

    Returns:
        Logger class name -> what it received, ``"+"``-joined (``"history+figure"``, ``"png:<path>"``, ...).
    """
    warn = _default_warn() if warn is None else warn
    loggers = list(loggers)
    done = log_history_file(loggers, history_path, warn) if history else {}
    for logger in loggers:
        bands = sink_of(logger).bands
        if bands is not None:
            try:
                bands(logger, prefix)
                kind = type(logger).__name__
                done[kind] = f"{done[kind]}+bands" if kind in done else "bands"
            except Exception as error:  # a layout must never fail a finished fit
                warn(f"{type(logger).__name__} could not take the noise-floor charts: {error!r}")
    if not dashboard or not loggers or importlib.util.find_spec("matplotlib") is None:
        return done
    try:
        figure = dashboard_figure(history_path)
    except Exception as error:  # a figure must never fail a finished fit
        warn(f"could not draw the dynamics dashboard of {history_path}: {error!r}")
        return done
    for kind, what in log_figure(
        loggers, figure, history_path, key=f"{prefix}/dashboard", step=step, warn=warn
    ).items():
        done[kind] = f"{done[kind]}+{what}" if kind in done else what
    return done


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
