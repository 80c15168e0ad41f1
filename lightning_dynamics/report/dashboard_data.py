"""What a dashboard shows, computed from a run's saved history (no drawing here; see ``plots.py``).

The history that :class:`~lightning_dynamics.DynamicsMonitor` saves at fit end (``<log_dir>/<prefix>_history.pt``)
holds every series, whatever the logger, so the report reads it rather than a logger's files. This module finds
the file, checks it, and computes the dashboard's quantities: the z-scored layer summaries, the Kuramoto order
parameter :math:`R(t)` of the history, the logged measures with their noise floors and reliable lengths
(:mod:`~lightning_dynamics.measures.readings`), validation metrics, and the convergence-signal and accuracy-plateau
markers (:mod:`~lightning_dynamics.report.analysis`; docs/method.md sections 3, 6, 8 and 8b). Drawing is
:mod:`lightning_dynamics.report.plots`, after Cockpit's split of quantities from instruments.

Time is the epoch: a history with several sample points per epoch places them at fractional epochs, and a second
fit that restarts its epochs (a new Trainer) continues the axis after the first one.
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_dynamics.capture import continuous_time, load_history
from lightning_dynamics.capture.history import history_segments
from lightning_dynamics.decisions.diagnosis import DiagnosisRecord, findings_path, load_findings
from lightning_dynamics.functional import detrend, instantaneous_phase, kuramoto_order_parameter
from lightning_dynamics.measures.readings import Reading, readings
from lightning_dynamics.report.analysis import ConvergenceReport, convergence_points

HISTORY_PATTERN = re.compile(r"^(?P<prefix>.+)_history(?:-v(?P<version>\d+))?\.pt$")
ACCURACY_KEYS = ("val_acc", "val_accuracy", "val/acc", "val/accuracy")
LOSS_KEYS = ("val_loss", "val/loss")


class HistoryError(ValueError):
    """A history file that the report cannot read: an unknown format or inconsistent series."""


@dataclass(frozen=True)
class RunDashboard:
    """The quantities of one run's dashboard, as numpy arrays over its ``T`` sample points.

    Attributes:
        label: name of the run in titles and legends (its directory name).
        history_path: the history file read.
        format_version: the file's history format (1, 2 or 3).
        layer_names: the ``L`` hooked layers.
        summary: the per-layer summary (``"rms"``, ...).
        time: ``[T]`` the epoch of each sample point (see :func:`epoch_axis`): fractional for several points per
            epoch, continued across fits that restart their epochs.
        epochs: ``[T]`` epoch of each sample point, as recorded.
        steps: ``[T]`` optimizer step of each sample point, as recorded.
        segment_starts: first sample point of each fit (``[0]`` for one fit).
        zscored: ``[L, T]`` each layer's summary z-scored over time (zero for a constant layer, NaN where missing).
        order_parameter: ``[T]`` Kuramoto :math:`R(t)` of the whole history (NaN where undefined, e.g. the first
            point after ``detrend="diff"``).
        metrics: measure name (``integration``, ``metastability``, ...) -> ``[T]`` as the monitor logged it (NaN
            where not logged), including the null bands ``<measure>_null_lo`` / ``<measure>_null_hi``.
        logged: the trainer's other scalars at each sample point (``val_acc``, ``val_loss``, ...), NaN where absent.
        accuracy_key: the key of ``logged`` used as validation accuracy, or None.
        loss_key: the key of ``logged`` used as validation loss, or None.
        convergence: signal, plateau and lead (:func:`lightning_dynamics.report.analysis.convergence_points`).
        readings: each measure's latest value beside its noise floor and reliable length
            (:mod:`lightning_dynamics.measures.readings`).
        config: the monitor's configuration (format 2; empty for format 1).
        state: the history as read (for panels that draw from it).
        diagnosis: the findings of a :class:`~lightning_dynamics.DynamicsDiagnosis` that ran with the monitor (its
            file ``<prefix>_diagnosis[-vN].json`` beside the history), or ``None`` when no diagnosis ran.
    """

    label: str
    history_path: Path
    format_version: int
    layer_names: list[str]
    summary: str
    time: np.ndarray
    epochs: np.ndarray
    steps: np.ndarray
    segment_starts: list[int]
    zscored: np.ndarray
    order_parameter: np.ndarray
    metrics: dict[str, np.ndarray]
    logged: dict[str, np.ndarray]
    convergence: ConvergenceReport
    readings: dict[str, Reading]
    accuracy_key: str | None = None
    loss_key: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict, repr=False)
    diagnosis: DiagnosisRecord | None = None

    @property
    def n_points(self) -> int:
        return int(self.time.shape[0])

    @property
    def axis(self) -> str:
        """The time axis' label: ``"epoch"``, or ``"epoch (N fits, continued)"``."""
        n_fits = len(self.segment_starts)
        return "epoch" if n_fits <= 1 else f"epoch ({n_fits} fits, continued)"

    @property
    def signal_time(self) -> float | None:
        """Epoch of the convergence signal."""
        return self.convergence.signal_epoch

    @property
    def plateau_time(self) -> float | None:
        """Epoch of the accuracy plateau."""
        return self.convergence.plateau_epoch

    def inside_noise_floor(self) -> list[str]:
        """Measures whose latest value sits inside their null's 95% band."""
        return [key for key, r in self.readings.items() if r.inside_noise_floor]

    def short_series(self) -> list[str]:
        """Measures whose latest value was computed on fewer points than their estimator's reliable minimum."""
        return [key for key, r in self.readings.items() if r.short_series]

    def finding_time(self, epoch: int) -> float:
        """The last sample point of epoch ``epoch`` (a finding is made at its epoch's end; epochs of the last fit)."""
        start = self.segment_starts[-1] if self.segment_starts else 0
        epochs, time = self.epochs[start:], self.time[start:]
        at = np.flatnonzero(epochs == epoch)
        if at.size:
            return float(time[at[-1]])
        return float(time[-1]) if time.size and epoch > int(epochs.max()) else float(epoch)

    def layer_stat(self, stat: str) -> tuple[list[str], np.ndarray] | None:
        """``(layers, [L, T] values)`` of one per-layer statistic in the history's ``layer_stats`` (``dead_frac``,
        ``saturated_frac``, ``grad_norm``, ...), or ``None`` when the history has none with a finite value."""
        entry = (self.state.get("layer_stats") or {}).get(stat)
        if not isinstance(entry, dict) or not entry.get("layers"):
            return None
        values = _as_array(entry["values"]).reshape(len(entry["layers"]), -1)
        if values.shape[1] != self.n_points or not np.isfinite(values).any():
            return None
        return list(entry["layers"]), values

    def final_values(self) -> dict[str, float]:
        """The last finite value of every measure and logged scalar, plus ``R(t)``; NaN where none is finite."""
        series = {**self.metrics, "order_parameter": self.order_parameter, **self.logged}
        return {key: _last_finite(values) for key, values in series.items()}


def find_history(run: str | Path) -> Path:
    """The history file of one run: ``run`` itself, or the newest ``<prefix>_history[-vN].pt`` under it.

    Looks in ``run`` first, then in its subdirectories (``runs/demo`` finds ``runs/demo/version_0/...``).
    Several versions of one prefix in a directory (later fits) resolve to the highest version.

    Raises:
        FileNotFoundError: ``run`` does not exist or holds no history file.
        ValueError: histories of several runs or prefixes lie under ``run`` (name one of them).
    """
    path = Path(run)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist.")
    candidates = sorted(p for p in path.glob("*_history*.pt") if HISTORY_PATTERN.match(p.name))
    if not candidates:
        candidates = sorted(p for p in path.rglob("*_history*.pt") if HISTORY_PATTERN.match(p.name))
    if not candidates:
        raise FileNotFoundError(
            f"no DynamicsMonitor history (*_history.pt) in {str(path)!r} or below it. Pass the logger's log_dir "
            "(e.g. lightning_logs/version_0) of a fit run with DynamicsMonitor(save_history=True), or the .pt file."
        )
    groups: dict[tuple[Path, str], list[Path]] = {}
    for candidate in candidates:
        match = HISTORY_PATTERN.match(candidate.name)
        assert match is not None
        groups.setdefault((candidate.parent, match["prefix"]), []).append(candidate)
    if len(groups) > 1:
        names = ", ".join(str(p) for p in candidates[:6]) + (" ..." if len(candidates) > 6 else "")
        raise ValueError(
            f"{str(path)!r} holds the histories of {len(groups)} runs ({names}); pass one directory or file, "
            "or use `lightning-dynamics compare` to draw them together."
        )
    (files,) = groups.values()
    return max(files, key=_history_version)


def epoch_of(time: float | None) -> str:
    """The epoch a point of the time axis falls in, for labels: ``36.875`` (epoch 36's last of 8 points) -> ``"36"``.

    Example:
        >>> epoch_of(36.875), epoch_of(30.0), epoch_of(None)
        ('36', '30', 'none')
    """
    return "none" if time is None else str(math.floor(time + 1e-9))


def dashboard_stem(history_path: str | Path) -> str:
    """The run's dashboard file name without suffix: ``<prefix>_history[-vN].pt`` -> ``<prefix>_dashboard[-vN]``.

    The monitor's figure at fit end and ``lightning-dynamics report`` both use it, so a run folder holds one
    dashboard figure.

    Example:
        >>> dashboard_stem("logs/version_0/dynamics_history-v1.pt")
        'dynamics_dashboard-v1'
    """
    stem = Path(history_path).stem
    return stem.replace("_history", "_dashboard", 1) if "_history" in stem else stem + "_dashboard"


def _history_version(path: Path) -> int:
    match = HISTORY_PATTERN.match(path.name)
    return int(match["version"]) if match is not None and match["version"] is not None else 0


def load_run(
    run: str | Path,
    label: str | None = None,
    ratio: float = 0.25,
    patience: int = 3,
    eps: float = 0.5,
) -> RunDashboard:
    """Read one run's history and compute its dashboard quantities.

    Args:
        run: a log directory (searched as :func:`find_history` says) or a history file.
        label: name of the run (default: the run directory's name).
        ratio: the convergence signal's ratio: of DynamicsEarlyStopping's relative-change rule, replayed on the
            history (docs/method.md section 8).
        patience: the rule's number of consecutive checks.
        eps: accuracy-plateau tolerance in percentage points (accuracies in [0, 1] are read as fractions).

    Raises:
        FileNotFoundError: no history found (see :func:`find_history`).
        HistoryError: the file is not a history this version can read.

    Example:
        >>> import tempfile, torch
        >>> from lightning_dynamics.capture import save_history
        >>> state = {"format_version": 1, "layer_names": ["a", "b"], "summary": "rms",
        ...          "values": torch.randn(2, 30).cumsum(-1), "epochs": list(range(30)), "steps": list(range(30))}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run = load_run(save_history(state, f"{tmp}/dynamics_history.pt").parent, label="demo")
        >>> run.axis, run.zscored.shape, run.order_parameter.shape, run.convergence.signal_epoch
        ('epoch', (2, 30), (30,), None)
    """
    path = find_history(run)
    try:
        state = load_history(path)
    except Exception as error:  # a truncated file or an arbitrary pickle refused by weights_only
        raise HistoryError(f"{str(path)!r} is not a readable dynamics history: {error}") from error
    if state["values"].shape[1] == 0:  # load_history checked every field; an empty history has nothing to show
        raise HistoryError(f"{str(path)!r} holds no sample point (T=0): the fit ended before the first one.")
    config = dict(state.get("config") or {})
    values = state["values"].to(torch.float64)
    epochs = np.asarray(state["epochs"], dtype=np.int64)
    steps = np.asarray(state["steps"], dtype=np.int64)
    metrics = {key: _as_array(series) for key, series in dict(state.get("metrics") or {}).items()}
    logged = {key: _as_array(series) for key, series in dict(state.get("logged") or {}).items()}
    if state["format_version"] == 1 and not logged:
        logged = _logged_from_csv(path.parent, epochs)
    accuracy_key = next((k for k in ACCURACY_KEYS if k in logged and np.isfinite(logged[k]).any()), None)
    loss_key = next((k for k in LOSS_KEYS if k in logged and np.isfinite(logged[k]).any()), None)
    time, segment_starts = epoch_axis(epochs, steps, history_segments(dict(state)))
    convergence = convergence_points(
        time,
        metrics.get("stability_volatility"),
        logged[accuracy_key] if accuracy_key is not None else None,
        eps=eps,
        ratio=ratio,
        patience=patience,
        history=(values, epochs.tolist()),
    )
    if label is None:
        directory = (Path(run) if Path(run).is_dir() else path.parent).resolve()
        # Lightning's version_N alone says little: name the run by its parent too.
        label = (
            f"{directory.parent.name}/{directory.name}"
            if re.fullmatch(r"version_\d+", directory.name)
            else directory.name
        )
    return RunDashboard(
        label=label,
        history_path=path,
        format_version=int(state["format_version"]),
        layer_names=list(state["layer_names"]),
        summary=str(state["summary"]),
        time=time,
        epochs=epochs,
        steps=steps,
        segment_starts=segment_starts,
        zscored=zscore_layers(values).numpy(),
        order_parameter=history_order_parameter(
            values, config.get("detrend", "diff"), config.get("pad", "reflect")
        ).numpy(),
        metrics=metrics,
        logged=logged,
        convergence=convergence,
        readings=readings(metrics, config, values=values),
        accuracy_key=accuracy_key,
        loss_key=loss_key,
        config=config,
        state=dict(state),
        diagnosis=_read_diagnosis(path),
    )


def _read_diagnosis(history_path: Path) -> DiagnosisRecord | None:
    """The findings file beside the history, if any; a broken one warns (the rest of the report still stands)."""
    path = findings_path(history_path)
    if not path.is_file():
        return None
    try:
        return load_findings(path)
    except (OSError, ValueError) as error:
        warnings.warn(f"the diagnosis findings are not shown: {error}", stacklevel=3)
        return None


def epoch_axis(
    epochs: Sequence[int] | np.ndarray, steps: Sequence[int] | np.ndarray, segments: Sequence[int]
) -> tuple[np.ndarray, list[int]]:
    """The dashboard's time axis: each sample point's epoch, continued across fits, fractional within an epoch.

    Fits that restart their epochs (a new Trainer) are continued after the previous one
    (:func:`lightning_dynamics.capture.continuous_time`). Within an epoch holding ``n`` points, the ``j``-th
    (from 0) sits at ``epoch + j / n``: one point per epoch stays on its integer epoch. A fit's last epoch, which
    may be cut short, keeps the spacing of the epoch before it.

    Args:
        epochs: ``[T]`` recorded epoch of each sample point.
        steps: ``[T]`` recorded optimizer step of each sample point.
        segments: first sample point of each fit (the history's ``segments``).

    Returns:
        ``([T] float64 epochs, segments)``.

    Example:
        >>> time, starts = epoch_axis([0, 0, 1, 1, 0, 0, 1], [1, 2, 3, 4, 1, 2, 3], [0, 4])
        >>> time.tolist(), starts
        ([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], [0, 4])
        >>> epoch_axis([0, 0, 0, 0, 1], [1, 2, 3, 4, 5], [0])[0].tolist()  # epoch 1 stopped after its first point
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    starts = [int(s) for s in segments]
    continued, _ = continuous_time([int(e) for e in epochs], [int(s) for s in steps], starts)
    time = np.asarray(continued, dtype=np.float64)
    if time.shape[0] and np.any(np.diff(time) < 0):  # not ordered even across fits: fall back to the point index
        return np.arange(time.shape[0], dtype=np.float64), starts
    _, group_start, counts = np.unique(time, return_index=True, return_counts=True)
    ends = set(starts[1:]) | {time.shape[0]}
    for k, (begin, count) in enumerate(zip(group_start, counts, strict=True)):
        spacing = count
        if begin + count in ends and k > 0 and group_start[k - 1] + counts[k - 1] == begin and begin not in starts:
            spacing = max(count, counts[k - 1])  # a fit's last epoch may be cut short: keep the spacing before it
        time[begin : begin + count] += np.arange(count) / spacing
    return time, starts


def load_runs(runs: Sequence[str | Path], progress: bool | None = None, **kwargs: Any) -> list[RunDashboard]:
    """:func:`load_run` for each run, labelled by directory name (made unique with parents), with a progress bar.

    Args:
        runs: log directories or history files.
        progress: show a tqdm bar on stderr; default: when there are more than 3 runs and stderr is a terminal.
        kwargs: passed to :func:`load_run`.
    """
    from tqdm.auto import tqdm

    labels = _unique_labels([Path(r) for r in runs])
    show = (len(runs) > 3 and sys.stderr.isatty()) if progress is None else progress  # no bar in a log file
    return [
        load_run(run, label=label, **kwargs)
        for run, label in tqdm(list(zip(runs, labels, strict=True)), desc="runs", unit="run", disable=not show)
    ]


def _unique_labels(paths: list[Path]) -> list[str]:
    """Directory names; where two runs share one (``version_0``), prepend parents until they differ."""
    resolved = [(p if p.is_dir() else p.parent).resolve() for p in paths]
    depth = 1
    while True:
        labels = ["/".join(p.parts[-depth:]) for p in resolved]
        if len(set(labels)) == len(labels) or depth >= max(len(p.parts) for p in resolved):
            return labels
        depth += 1


def zscore_layers(values: torch.Tensor) -> torch.Tensor:
    r"""Each layer's series z-scored over time, ignoring non-finite points (they stay NaN).

    .. math:: z_l(t) = (x_l(t) - \bar x_l) / \sigma_l, \qquad z_l \equiv 0 \text{ where } \sigma_l = 0

    Args:
        values: ``[L, T]`` layer summaries.

    Returns:
        ``[L, T]`` float64.

    Example:
        >>> import torch
        >>> zscore_layers(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, float("nan")]]))
        tensor([[-1.2247,  0.0000,  1.2247],
                [ 0.0000,  0.0000,     nan]], dtype=torch.float64)
    """
    x = values.to(torch.float64)
    finite = torch.isfinite(x)
    count = finite.sum(dim=-1, keepdim=True).clamp(min=1)
    mean = torch.where(finite, x, 0.0).sum(dim=-1, keepdim=True) / count
    centred = torch.where(finite, x - mean, 0.0)
    std = (centred.square().sum(dim=-1, keepdim=True) / count).sqrt()
    scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1e-300), std, torch.inf)
    return torch.where(finite, centred / scale, torch.nan)


def history_order_parameter(
    values: torch.Tensor, detrend_method: str | None = "diff", pad: str | None = "reflect"
) -> torch.Tensor:
    r"""The Kuramoto order parameter :math:`R(t)` of a whole history, aligned to its ``T`` sample points.

    .. math:: R(t) = \Big|\frac{1}{L}\sum_{l} e^{i\varphi_l(t)}\Big|

    The phases are those that ``metastability`` uses (docs/method.md sections 1-3): the detrended, z-scored
    layers' Hilbert phases over the kept layers. With ``detrend="diff"`` the value at point ``t`` is that of
    the difference ``x(t) - x(t-1)``, so the first point is NaN. Too short a history (fewer than 4 detrended
    points) or no usable layer gives all NaN.

    Args:
        values: ``[L, T]`` layer summaries.
        detrend_method: as :func:`lightning_dynamics.functional.detrend`.
        pad: as :func:`lightning_dynamics.functional.instantaneous_phase`.

    Returns:
        ``[T]`` float64, in [0, 1] where defined.

    Example:
        >>> import torch
        >>> t = torch.arange(40, dtype=torch.float64)
        >>> r = history_order_parameter(torch.stack([torch.sin(0.5 * t), torch.sin(0.5 * t)]).cumsum(-1))
        >>> bool(r[0].isnan()), float(r[1:].min()) > 0.999  # identical layers are phase-locked
        (True, True)
    """
    n_points = values.shape[-1]
    out = torch.full((n_points,), torch.nan, dtype=torch.float64)
    shift = 1 if detrend_method == "diff" else 0
    if n_points - shift < 4:
        return out
    d = detrend(values.to(torch.float64), detrend_method)
    if not bool(d.valid.any()):
        return out
    phases = instantaneous_phase(d.series, pad=pad)
    out[shift:] = kuramoto_order_parameter(phases, d.valid)
    return out


def cell_edges(t: np.ndarray) -> np.ndarray:
    """Edges of heatmap cells centred on the sample points ``t`` (any spacing): ``[T + 1]``.

    Example:
        >>> cell_edges(np.array([0.0, 1.0, 3.0])).tolist()
        [-0.5, 0.5, 2.0, 4.0]
    """
    if t.shape[0] == 1:
        return np.array([t[0] - 0.5, t[0] + 0.5])
    middle = (t[1:] + t[:-1]) / 2
    return np.concatenate([[t[0] - (middle[0] - t[0])], middle, [t[-1] + (t[-1] - middle[-1])]])


def short_name(name: str, width: int = 18) -> str:
    """A layer or run name cut to ``width`` characters from its end (its most specific part) for axis labels."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _as_array(series: Any) -> np.ndarray:
    if isinstance(series, torch.Tensor):
        return series.detach().to(torch.float64).cpu().numpy()
    return np.asarray(series, dtype=np.float64)


def _last_finite(values: np.ndarray) -> float:
    finite = np.flatnonzero(np.isfinite(values))
    return float(values[finite[-1]]) if finite.size else math.nan


def _logged_from_csv(log_dir: Path, epochs: np.ndarray) -> dict[str, np.ndarray]:
    """Format-1 histories hold no validation metrics: take them from a CSVLogger ``metrics.csv`` beside, by epoch."""
    if not (log_dir / "metrics.csv").is_file():
        return {}
    from lightning_dynamics.report.logs import epoch_metrics, read_metrics

    per_epoch = epoch_metrics(read_metrics(log_dir))
    logged = {}
    for column in per_epoch.columns:
        if column.startswith("dynamics/"):
            continue
        by_epoch = per_epoch[column].astype(float)
        logged[str(column)] = np.array([by_epoch.get(int(e), math.nan) for e in epochs], dtype=np.float64)
    return logged


def comparability_notes(runs: Sequence[RunDashboard]) -> list[str]:
    """One line per setting in which compared runs differ and so are not comparable measure by measure.

    The measures depend on the number of layers (floors such as synchrony's ~ 1/sqrt(L)), the summary, the detrending
    and the sampling (docs/reading_the_dashboard.md); overlaid runs that differ in any of them are compared
    through their noise floors only.
    """
    if len(runs) < 2:
        return []
    settings = {
        "layers": lambda run: len(run.layer_names),
        "summary": lambda run: run.summary,
        "detrend": lambda run: run.config.get("detrend"),
        "points_per_epoch": lambda run: run.config.get("points_per_epoch"),
        "every_n_steps": lambda run: run.config.get("every_n_steps"),
        "window": lambda run: run.config.get("window"),
    }
    notes = []
    for name, of in settings.items():
        values = [of(run) for run in runs]
        if len({repr(v) for v in values}) > 1:
            shown = ", ".join(f"{run.label} {value}" for run, value in zip(runs, values, strict=True))
            notes.append(
                f"warning: the runs differ in {name} ({shown}): their measures are not comparable value by value; "
                "compare each against its own noise floor."
            )
    return notes
