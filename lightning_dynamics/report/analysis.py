"""When did a run converge? The convergence-signal point, the accuracy-plateau point and the lead between.

The one place that answers it for reports (docs/method.md section 8): the signal replays the rule that
:class:`~lightning_dynamics.DynamicsEarlyStopping` stops with by default,
:class:`~lightning_dynamics.decisions.stopping.RelativeChangeRule`, at every epoch end over the run's history (the
learning-rate schedule is not in a history: a stop it would have held shows here); a run given only a logged
volatility (a CSVLogger run) falls back to the legacy volatility-drop rule
(:func:`lightning_dynamics.decisions.stopping.convergence_signal`), and the report says which (``rule``); the
plateau is the first point whose validation accuracy is within ``eps`` percentage points of the run's best;
``lead = plateau - signal`` in epochs (positive: the signal came first).
:func:`convergence_points` computes it from per-point series; the dashboard
(:func:`lightning_dynamics.report.load_run`, whose ``convergence`` attribute it fills) and
:func:`convergence_report` (a CSVLogger's ``metrics.csv``, for runs without a history) both call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lightning_dynamics.decisions.stopping import RelativeChangeRule, convergence_signal
from lightning_dynamics.report.logs import epoch_metrics, read_metrics

if TYPE_CHECKING:
    import pandas as pd


# In units of `eps`: the accuracy must rise above its first value by more than this for a plateau to be marked.
NO_PLATEAU_RISE = 4


def accuracy_plateau_epoch(accuracy: Sequence[float], epochs: Sequence[int] | None = None, eps: float = 0.5) -> int:
    """First epoch whose accuracy is within ``eps`` (same units, e.g. percentage points) of the best.

    Example:
        >>> accuracy_plateau_epoch([50.0, 80.0, 90.0, 94.6, 95.0, 94.0])
        3
    """
    values = [float(a) for a in accuracy]
    epochs = list(range(len(values))) if epochs is None else [int(e) for e in epochs]
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        raise ValueError("the accuracy series has no finite value.")
    best = max(finite)
    for epoch, value in zip(epochs, values, strict=True):
        if not math.isnan(value) and value >= best - eps:
            return epoch
    raise AssertionError("unreachable: the best value is within eps of itself")


def val_loss_stop_epoch(val_loss: Sequence[float], patience: int = 5, min_delta: float = 0.0) -> int | None:
    """The epoch at which Lightning's ``EarlyStopping(monitor="val_loss", patience=patience)`` stops.

    Replays its rule (an improvement is ``value < best - min_delta``; stop after ``patience`` checks
    without one) over a per-epoch series; ``None`` if it never stops.

    Example:
        >>> val_loss_stop_epoch([1.0, 0.8, 0.9, 0.85, 0.81, 0.82, 0.83], patience=5)
        6
    """
    best, wait = math.inf, 0
    for epoch, value in enumerate(val_loss):
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


@dataclass(frozen=True)
class ConvergenceReport:
    """Where a run converged, by sample point and by epoch (``None`` where the signal never fired).

    Attributes:
        signal_index: sample point at which the volatility-drop rule first says stop.
        plateau_index: first sample point whose accuracy is within ``eps`` of the best (None: no accuracy).
        signal_epoch, plateau_epoch: the same points on the run's epoch axis (fractional for sub-epoch points,
            continued across fits).
        lead: ``plateau_epoch - signal_epoch``.
        best_accuracy: the best validation accuracy (None: no accuracy).
        accuracy_at_signal: the accuracy at the signal point (None: no signal or no accuracy there).
        n_points: sample points (epochs, for a CSV run) read.
        ratio, patience: the rule replayed.
        rule: ``"relative_change"`` (the default stop, replayed on the history), ``"volatility"`` (the legacy rule
            on a logged volatility) or ``None`` (no signal source).
    """

    signal_index: int | None
    plateau_index: int | None
    signal_epoch: float | None
    plateau_epoch: float | None
    lead: float | None
    best_accuracy: float | None
    accuracy_at_signal: float | None
    n_points: int
    ratio: float = 0.25
    patience: int = 3
    rule: str | None = None


def relative_change_signal(
    values: torch.Tensor, epochs: Sequence[int], ratio: float = 0.25, patience: int = 3, min_epochs: int = 0
) -> int | None:
    """Replay :class:`~lightning_dynamics.decisions.stopping.RelativeChangeRule` at every epoch end over a history
    ``[L, T]``; the index of the last sample point of the epoch it first says stop at, or None.

    Example:
        >>> t = torch.arange(40, dtype=torch.float64)
        >>> x = torch.stack([s * (1 - torch.exp(-t / 4)) for s in (1.0, 2.0, 3.0)])
        >>> relative_change_signal(x, list(range(40)))
        18
    """
    rule = RelativeChangeRule(ratio=ratio, patience=patience, min_epochs=min_epochs)
    epochs = [int(e) for e in epochs]
    last = {epoch: index for index, epoch in enumerate(epochs)}
    for _epoch, index in sorted(last.items()):
        if rule.update(values[:, : index + 1], epochs[: index + 1])[0]:
            return index
    return None


def convergence_points(
    time: Sequence[float] | np.ndarray,
    volatility: Sequence[float] | np.ndarray | None,
    accuracy: Sequence[float] | np.ndarray | None,
    eps: float = 0.5,
    ratio: float = 0.25,
    patience: int = 3,
    min_epochs: int = 0,
    history: tuple[torch.Tensor, Sequence[int]] | None = None,
) -> ConvergenceReport:
    """Signal, plateau and lead from per-point series on one time axis.

    Args:
        time: ``[T]`` the epoch of each sample point (non-decreasing; fractional for sub-epoch points).
        volatility: ``[T]`` the logged volatility, NaN where not logged; None: no signal.
        accuracy: ``[T]`` validation accuracy, NaN where absent; fractions (all <= 1) are read as percent, so
            ``eps`` stays in percentage points; None: no plateau. An accuracy that never rises more than
            ``NO_PLATEAU_RISE * eps`` above its first value (a run stuck at chance) has no plateau.
        eps: plateau tolerance in percentage points.
        ratio, patience, min_epochs: the stopping rule (as :class:`~lightning_dynamics.DynamicsEarlyStopping`).
        history: the run's ``([L, T] values, epoch of each point)``: the signal is then the default rule's
            (:func:`relative_change_signal`), and ``volatility`` is not read.

    Example:
        >>> nan = float("nan")
        >>> r = convergence_points([0, 1, 2, 3, 4, 5], [nan, 0.4, 0.05, 0.05, 0.05, 0.05], [50, 90, 95, 96, 96, 96])
        >>> r.signal_epoch, r.plateau_epoch, r.lead
        (4.0, 3.0, -1.0)
    """
    times = np.asarray(time, dtype=np.float64)
    index = list(range(times.shape[0]))
    signal, rule = None, None
    if history is not None:
        signal, rule = relative_change_signal(history[0], history[1], ratio, patience, min_epochs), "relative_change"
    elif volatility is not None:
        rule = "volatility"
        # The rule counts `min_epochs` in epochs: replayed by sample point, it starts at the first point of that epoch.
        first = int(np.searchsorted(times, float(min_epochs), side="left"))
        values = [float(v) for v in volatility]
        signal = convergence_signal(values, index, ratio=ratio, patience=patience, min_epochs=first)
    plateau = best = at_signal = None
    if accuracy is not None:
        scores = np.asarray(accuracy, dtype=np.float64)
        if np.isfinite(scores).any():
            scores = scores * (100.0 if np.nanmax(scores) <= 1.0 else 1.0)
            best = float(np.nanmax(scores))
            # A run that never rose (stuck at chance, a dead run) has no plateau to mark, only a flat line.
            if best - float(scores[np.isfinite(scores)][0]) > NO_PLATEAU_RISE * eps:
                plateau = accuracy_plateau_epoch(scores.tolist(), index, eps)
            if signal is not None and math.isfinite(scores[signal]):
                at_signal = float(scores[signal])
    signal_epoch = None if signal is None else float(times[signal])
    plateau_epoch = None if plateau is None else float(times[plateau])
    return ConvergenceReport(
        signal_index=signal,
        plateau_index=plateau,
        signal_epoch=signal_epoch,
        plateau_epoch=plateau_epoch,
        lead=None if signal_epoch is None or plateau_epoch is None else plateau_epoch - signal_epoch,
        best_accuracy=best,
        accuracy_at_signal=at_signal,
        n_points=int(times.shape[0]),
        ratio=ratio,
        patience=patience,
        rule=rule,
    )


def convergence_report(
    metrics: pd.DataFrame | str | Path,
    accuracy_key: str = "val_acc",
    volatility_key: str = "stability_volatility",
    prefix: str = "dynamics",
    eps: float = 0.5,
    ratio: float = 0.25,
    patience: int = 3,
    min_epochs: int = 0,
) -> ConvergenceReport:
    """Signal, plateau and lead of a run logged with a CSVLogger (for a run with a history, use ``load_run``).

    The history is the report's source (``lightning_dynamics.report.load_run(run).convergence`` gives this same
    report for it); this reads a CSVLogger's per-epoch values into the same series and calls
    :func:`convergence_points`.

    Args:
        metrics: a CSVLogger ``log_dir`` (or its ``metrics.csv``), or a DataFrame of it, or a per-epoch frame
            indexed by epoch.
        accuracy_key: validation accuracy column, in percent (or fractions).
        volatility_key: the volatility measure (or a full ``<prefix>/<measure>`` column).
        prefix: the :class:`~lightning_dynamics.DynamicsMonitor` prefix the run was logged with.
        eps: plateau tolerance in percentage points.
        ratio, patience, min_epochs: the stopping rule (as :class:`~lightning_dynamics.DynamicsEarlyStopping`).

    Raises:
        KeyError: a column is missing (named, with the columns present).
    """
    if "/" not in volatility_key:
        volatility_key = f"{prefix}/{volatility_key}"
    frame = read_metrics(metrics) if isinstance(metrics, (str, Path)) else metrics
    per_epoch = epoch_metrics(frame) if "epoch" in frame.columns else frame
    for key in (accuracy_key, volatility_key):
        if key not in per_epoch:
            raise KeyError(f"column {key!r} not in the run's metrics (columns: {list(per_epoch.columns)}).")
    return convergence_points(
        [float(e) for e in per_epoch.index],
        per_epoch[volatility_key].astype(float).tolist(),
        per_epoch[accuracy_key].astype(float).tolist(),
        eps=eps,
        ratio=ratio,
        patience=patience,
        min_epochs=min_epochs,
    )
