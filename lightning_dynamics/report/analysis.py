"""When did a run converge? The convergence-signal epoch, the accuracy-plateau epoch and the lead between.

Definitions: METHOD.md section 8. The signal replays the stopping rule of
:class:`~lightning_dynamics.DynamicsEarlyStopping` (:func:`~lightning_dynamics.convergence.convergence_signal`)
over the logged volatility; the plateau is the first epoch whose validation accuracy is within ``eps``
percentage points of the run's best; ``lead = plateau - signal`` (positive: the signal came first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_dynamics.convergence import convergence_signal

if TYPE_CHECKING:
    import pandas as pd


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
    """Epochs of one run (``None`` where the signal never fired)."""

    signal_epoch: int | None
    plateau_epoch: int
    lead: int | None
    best_accuracy: float
    accuracy_at_signal: float | None
    n_epochs: int


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
    """Signal epoch, plateau epoch and lead of a run, from a CSVLogger directory or its metrics DataFrame.

    Args:
        metrics: a CSVLogger ``log_dir`` (or its ``metrics.csv``), or a DataFrame of it, or a per-epoch frame
            indexed by epoch.
        accuracy_key: validation accuracy column, in percent.
        volatility_key: the volatility measure (or a full ``<prefix>/<measure>`` column).
        prefix: the :class:`~lightning_dynamics.DynamicsMonitor` prefix the run was logged with.
        eps: plateau tolerance in the accuracy's units (percentage points).
        ratio, patience, min_epochs: the stopping rule (as :class:`~lightning_dynamics.DynamicsEarlyStopping`).
    """
    from lightning_dynamics.report.logs import epoch_metrics, read_metrics

    if "/" not in volatility_key:
        volatility_key = f"{prefix}/{volatility_key}"
    frame = read_metrics(metrics) if isinstance(metrics, (str, Path)) else metrics
    per_epoch = epoch_metrics(frame) if "epoch" in frame.columns else frame
    for key in (accuracy_key, volatility_key):
        if key not in per_epoch:
            raise KeyError(f"column {key!r} not in the run's metrics (columns: {list(per_epoch.columns)}).")
    epochs = [int(e) for e in per_epoch.index]
    accuracy = per_epoch[accuracy_key].astype(float).tolist()
    signal = convergence_signal(
        per_epoch[volatility_key].astype(float).tolist(), epochs, ratio=ratio, patience=patience, min_epochs=min_epochs
    )
    plateau = accuracy_plateau_epoch(accuracy, epochs, eps)
    return ConvergenceReport(
        signal_epoch=signal,
        plateau_epoch=plateau,
        lead=None if signal is None else plateau - signal,
        best_accuracy=max(a for a in accuracy if not math.isnan(a)),
        accuracy_at_signal=None if signal is None else float(per_epoch[accuracy_key].loc[signal]),
        n_epochs=len(epochs),
    )
