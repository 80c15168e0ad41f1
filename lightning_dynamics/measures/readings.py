"""What stands beside a measure's latest value: its noise floor and whether its series was long enough.

A reading means something only beside its null and its estimator's reliable length (docs/method.md section 8b): a
value inside the band of its own null says nothing, and one computed on too short a series is estimation noise. The
tracker stores, for each measure that has a null, the series
``<measure>_null_lo`` and ``<measure>_null_hi`` in the history's ``metrics``: the 2.5% and 97.5% quantiles of the
measure on surrogates of the run's own history, at the points where the measure is logged (NaN elsewhere).
A latest value inside ``[null_lo, null_hi]`` at its point is *inside the noise floor*: it lies among the central
95% of what the same history gives with its structure destroyed. Each estimator is reliable from the length its
registry entry declares (:attr:`~lightning_dynamics.measures.registry.Measure.reliable_from`, from the measured
table :data:`lightning_dynamics.functional.reliability.RELIABLE_FROM`); a measure computed on fewer sample points
is a *short series*.

**Settled layers.** A layer whose summary jitters around a level (what a converged layer looks like) has
anti-persistent differences: a step up is followed by a step down. Its alpha (and with it the stability index)
then falls *below* the time-shuffle band, which alone would read as "anti-persistent changes". Where the history's
values are at hand, a measure below its band is compared with a second band, :func:`level_bands`: the measure on
histories whose *values* are shuffled in time (one permutation shared by all layers), i.e. layers jittering
without memory around fixed levels. A value inside or below that band is read as *settled around a level*; above
it, as anti-persistent dynamics (the path still wanders). Rates: ``benchmarks/null_calibration.md``.

This module reads plain series (numpy arrays, tensors or lists), so the tracker can call
:func:`noise_floor_summary` on its in-memory history at the end of fit; the dashboard, the report table and the
HTML page read the same :class:`Reading` objects.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_dynamics.functional import InsufficientDataWarning, surrogate_histories
from lightning_dynamics.functional.change import relative_change_defined_from
from lightning_dynamics.measures.config import DynamicsConfig
from lightning_dynamics.measures.context import MeasureContext
from lightning_dynamics.measures.registry import MEASURES, NULL_LEVEL, NULL_SUFFIXES, compute_measures

NULL_LO_SUFFIX, NULL_HI_SUFFIX = NULL_SUFFIXES
# Measures computed on the last `window` points at each sample point (docs/method.md section 6); every other
# measure reads the whole history so far (or its last `history_window` points).
WINDOWED_MEASURES = ("stability_index", "stability_volatility")
# Measures that a layer settled around a level pushes below their time-shuffle band (its differences alternate in
# sign, which DFA reads as anti-persistence): a reading below the band is compared with the settled-level band.
LEVEL_MEASURES = ("integration_alpha", "stability_index")
# Surrogates of the settled-level band, and the seed that makes a reading repeatable.
LEVEL_SURROGATES = 39
LEVEL_SEED = 20261130


@dataclass(frozen=True)
class Reading:
    """The latest finite value of one measure and what stands beside it.

    Attributes:
        measure: the measure's key (``integration``, ...).
        value: its last finite value (NaN when it never was finite).
        index: the sample point of ``value`` (None when never finite).
        null_lo, null_hi: the measure's null band (2.5% and 97.5% surrogate quantiles) at ``index``; NaN when the
            history holds no null for this measure or none at that point.
        points: sample points the estimator read to produce ``value`` (None when never finite).
        reliable_from: the shortest history on which the estimator is reliable; None when not known.
        level_lo, level_hi: the settled-level band (:func:`level_bands`) at ``index``, computed only for a measure of
            :data:`LEVEL_MEASURES` below its noise floor when the history's values were given; NaN otherwise.
    """

    measure: str
    value: float
    index: int | None
    null_lo: float = math.nan
    null_hi: float = math.nan
    points: int | None = None
    reliable_from: int | None = None
    level_lo: float = math.nan
    level_hi: float = math.nan

    @property
    def has_null(self) -> bool:
        """Whether a null band exists at the reading's point."""
        return math.isfinite(self.null_lo) and math.isfinite(self.null_hi)

    @property
    def inside_noise_floor(self) -> bool | None:
        """True when the value lies in its null's 95% band; None when there is no band to compare with."""
        if not self.has_null or not math.isfinite(self.value):
            return None
        return self.null_lo <= self.value <= self.null_hi

    @property
    def settled(self) -> bool | None:
        """Below the noise floor and at or below the settled-level band's top: the layers jitter around a level.

        False: below the noise floor but above the settled-level band (anti-persistent changes of a path that still
        wanders). None when the value is not below its noise floor or no settled-level band was computed.
        """
        if not self.has_null or not math.isfinite(self.value) or self.value >= self.null_lo:
            return None
        if not math.isfinite(self.level_hi):
            return None
        return self.value <= self.level_hi

    def status(self) -> str:
        """The plain-words mark of a panel: ``"inside noise floor"``, ``"outside noise floor"``, ``"settled around a
        level"``; ``""`` when there is no band."""
        inside = self.inside_noise_floor
        if inside is None:
            return ""
        if inside:
            return "inside noise floor"
        return "settled around a level" if self.settled else "outside noise floor"

    @property
    def short_series(self) -> bool:
        """True when the value was computed on fewer sample points than the estimator's reliable minimum."""
        return self.points is not None and self.reliable_from is not None and self.points < self.reliable_from

    @property
    def never_reliable(self) -> bool:
        """True when no measured length makes the estimator reliable (``reliability.NEVER_RELIABLE``)."""
        never = _never_reliable()
        return self.reliable_from is not None and never is not None and self.reliable_from >= never

    def short_text(self) -> str:
        """``"16 < 64 points"``, or ``"320 points; reliable at no measured length"``; ``""`` when not short."""
        if not self.short_series:
            return ""
        if self.never_reliable:
            return f"{self.points} points; reliable at no measured length"
        return f"{self.points} < {self.reliable_from} points"

    def sentence(self) -> str:
        """One sentence for a run's info line, e.g. ``integration 0.62 is inside its noise floor [0.41, 0.80].``"""
        if self.index is None:
            return f"{self.measure} was never defined (too few sample points)."
        text = f"{self.measure} {self.value:.3g}"
        status = self.inside_noise_floor
        if status is None:
            text += " has no noise floor in the history"
        else:
            where = "inside" if status else "outside"
            text += f" is {where} its noise floor [{self.null_lo:.3g}, {self.null_hi:.3g}]"
            settled = self.settled
            if settled:
                text += (
                    ": the layers look settled around a level (their summaries jitter about fixed values, as "
                    f"converged layers' do; settled-level band [{self.level_lo:.3g}, {self.level_hi:.3g}])"
                )
            elif settled is False:
                text += (
                    ": anti-persistent changes of layers that still move (above the settled-level band "
                    f"[{self.level_lo:.3g}, {self.level_hi:.3g}])"
                )
        if self.short_series:
            text += f" (short series: {self.short_text()})"
        return text + "."


def _never_reliable() -> int | None:
    """The reliability table's mark for "no measured length is enough", where the table defines one."""
    from lightning_dynamics.functional import reliability

    never = getattr(reliability, "NEVER_RELIABLE", None)
    return int(never) if never is not None else None


def reliable_from() -> dict[str, int]:
    """Each registered measure's :attr:`~lightning_dynamics.measures.registry.Measure.reliable_from`, where known."""
    return {name: m.reliable_from for name, m in MEASURES.items() if m.reliable_from is not None}


def _array(series: Any) -> np.ndarray:
    if isinstance(series, Tensor):
        series = series.detach().cpu().double().numpy()
    return np.asarray(series, dtype=np.float64)


def null_measures(metrics: Mapping[str, Any]) -> list[str]:
    """Measures of ``metrics`` that carry a null band (both ``<measure>_null_lo`` and ``_null_hi``), in order."""
    return [
        key
        for key in metrics
        if not key.endswith((NULL_LO_SUFFIX, NULL_HI_SUFFIX))
        and f"{key}{NULL_LO_SUFFIX}" in metrics
        and f"{key}{NULL_HI_SUFFIX}" in metrics
    ]


def measure_keys(metrics: Mapping[str, Any]) -> list[str]:
    """The measures of ``metrics``, without their null-band series."""
    return [key for key in metrics if not key.endswith((NULL_LO_SUFFIX, NULL_HI_SUFFIX))]


def points_read(measure: str, index: int, config: Mapping[str, Any]) -> int:
    """Sample points the estimator of ``measure`` read at sample point ``index`` (0-based).

    Windowed measures read ``config["window"]`` points (docs/method.md section 6); the others read the history up
    to and including ``index``, or its last ``config["history_window"]`` points when that is set.

    Example:
        >>> points_read("integration", 9, {}), points_read("integration", 9, {"history_window": 4})
        (10, 4)
        >>> points_read("stability_index", 30, {"window": 16})
        16
        >>> points_read("relative_change", 40, {"window": 16, "history_window": 16})  # its 2 * window + 1 at least
        33
    """
    if measure in WINDOWED_MEASURES and config.get("window"):
        return int(config["window"])
    history_window = config.get("history_window")
    if history_window and measure == "relative_change" and config.get("window"):
        history_window = max(int(history_window), relative_change_defined_from(int(config["window"])))  # its minimum
    return min(index + 1, int(history_window)) if history_window else index + 1


def first_reliable_point(
    measure: str, n_points: int, config: Mapping[str, Any], reliable_from: int | None
) -> int | None:
    """The first sample point at which ``measure`` reads ``reliable_from`` points or more; None if none of ``n_points``.

    ``reliable_from=None`` (unknown) counts as reliable from the start (no flag without a number).

    Example:
        >>> first_reliable_point("integration", 30, {}, 20)
        19
        >>> first_reliable_point("stability_index", 30, {"window": 16}, 64) is None
        True
    """
    if reliable_from is None:
        return 0
    for index in range(n_points):
        if points_read(measure, index, config) >= reliable_from:
            return index
    return None


def level_bands(
    x: Tensor,
    config: DynamicsConfig,
    names: tuple[str, ...],
    n: int = LEVEL_SURROGATES,
    generator: torch.Generator | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """The settled-level band of each named measure: ``{name: (lo, hi)}``, each of the batch shape of ``x``.

    The null is "each layer's summary jitters without memory around a fixed level": the values of the points the
    measure reads (the last ``window`` for the stability index, the last ``history_window`` for the others) are
    permuted in time by one permutation shared by all layers (:func:`~lightning_dynamics.functional.
    time_shuffle_surrogates`, keeping the layers' correlation), and the measure is computed on ``n`` such histories.
    The edges are the k-th smallest and largest values, ``k = max(1, floor(0.025 (n + 1)))`` (as the noise floor's,
    :func:`~lightning_dynamics.measures.registry.null_bands`): a settled layer with white jitter falls outside
    with probability 5% for ``n = 39``.

    Args:
        x: the history ``[..., L, T]`` up to the reading's point.
        config: the measures' settings.
        names: measures with a ``compute`` in the registry.
        n: surrogates (>= 1).
        generator: for reproducible surrogates.
    """
    out: dict[str, tuple[Tensor, Tensor]] = {}
    k = max(1, int(NULL_LEVEL / 2 * (n + 1)))
    for name in names:
        if name in WINDOWED_MEASURES:
            points = x[..., -config.window :]
        elif config.history_window is not None:
            read = config.history_window
            if name == "relative_change":  # it reads at least the 2 * window + 1 points it is defined from
                read = max(read, relative_change_defined_from(config.window))
            points = x[..., -read:]
        else:
            points = x
        surrogates = surrogate_histories(points, n, method="shuffle", detrend=None, generator=generator)
        batch = compute_measures(MeasureContext(surrogates, config), (name,))[name]
        ordered = batch.sort(dim=0).values  # NaN sorts last: a NaN surrogate widens the band, never narrows it
        out[name] = (ordered[k - 1], ordered[n - k])
    return out


def _level_band(measure: str, values: Any, index: int, config: Mapping[str, Any]) -> tuple[float, float]:
    """The settled-level band of ``measure`` at sample point ``index`` of the history ``values: [L, T]``."""
    x = torch.as_tensor(_array(values))[..., : index + 1]
    known = {field.name for field in dataclasses.fields(DynamicsConfig)}
    given = {key: value for key, value in config.items() if key in known}
    if "weights" in given:
        given["weights"] = tuple(given["weights"])
    try:
        settings = DynamicsConfig(**given)
    except (TypeError, ValueError):  # a config this version rejects: the defaults are the best guess
        settings = DynamicsConfig()
    if x.dim() != 2 or x.shape[-1] < MEASURES[measure].defined_from(settings):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        lo, hi = level_bands(x, settings, (measure,), generator=torch.Generator().manual_seed(LEVEL_SEED))[measure]
    return float(lo), float(hi)


def reading(
    metrics: Mapping[str, Any],
    measure: str,
    config: Mapping[str, Any] | None = None,
    reliable: Mapping[str, int] | None = None,
    values: Any | None = None,
) -> Reading:
    """The :class:`Reading` of ``measure`` from a history's ``metrics`` (``{key: [T] series}``).

    The reading is taken at the last point where the measure is finite, and, when the measure has a null, where
    its band is finite too (the null is computed where the measure is logged, so the two points agree). A measure
    of :data:`LEVEL_MEASURES` below its noise floor also gets its settled-level band (:func:`level_bands`) when
    the history's ``values`` are given, so that :attr:`Reading.settled` tells a settled layer from anti-persistent
    dynamics.

    Args:
        metrics: the history's ``metrics``.
        measure: a key of ``metrics``.
        config: the monitor's configuration (``window``, ``history_window``), for the points read.
        reliable: measure -> the length it is reliable from (default: :func:`reliable_from`, the registry's).
        values: the history's values ``[L, T]`` (its ``values`` field), for the settled-level band; None: no band.

    Example:
        >>> nan = float("nan")
        >>> metrics = {"m": [nan, 0.2, 0.5], "m_null_lo": [nan, 0.1, 0.3], "m_null_hi": [nan, 0.4, 0.6]}
        >>> r = reading(metrics, "m", reliable={"m": 8})
        >>> r.value, r.inside_noise_floor, r.points, r.short_series
        (0.5, True, 3, True)
    """
    config = {} if config is None else config
    reliable = reliable_from() if reliable is None else reliable
    series = _array(metrics[measure])
    finite = np.isfinite(series)
    lo = _array(metrics[f"{measure}{NULL_LO_SUFFIX}"]) if f"{measure}{NULL_LO_SUFFIX}" in metrics else None
    hi = _array(metrics[f"{measure}{NULL_HI_SUFFIX}"]) if f"{measure}{NULL_HI_SUFFIX}" in metrics else None
    if not finite.any():
        return Reading(measure, math.nan, None, reliable_from=reliable.get(measure))
    index = int(np.flatnonzero(finite)[-1])
    null_lo = null_hi = math.nan
    if lo is not None and hi is not None:
        banded = np.flatnonzero(finite & np.isfinite(lo) & np.isfinite(hi))
        if banded.size:
            index = int(banded[-1])
            null_lo, null_hi = float(lo[index]), float(hi[index])
    value = float(series[index])
    level_lo = level_hi = math.nan
    if values is not None and measure in LEVEL_MEASURES and math.isfinite(null_lo) and value < null_lo:
        level_lo, level_hi = _level_band(measure, values, index, config)
    return Reading(
        measure=measure,
        value=value,
        index=index,
        null_lo=null_lo,
        null_hi=null_hi,
        points=points_read(measure, index, config),
        reliable_from=reliable.get(measure),
        level_lo=level_lo,
        level_hi=level_hi,
    )


def readings(
    metrics: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    reliable: Mapping[str, int] | None = None,
    values: Any | None = None,
) -> dict[str, Reading]:
    """:func:`reading` of every measure in ``metrics`` (the null-band series themselves excluded)."""
    reliable = reliable_from() if reliable is None else reliable
    return {key: reading(metrics, key, config, reliable, values) for key in measure_keys(metrics)}


def noise_floor_summary(history_state: Mapping[str, Any], reliable: Mapping[str, int] | None = None) -> str:
    """One info line per run: for each measure with a null, whether its latest value is inside its noise floor.

    What the tracker can log at the end of fit: one sentence per measure that carries a null band in
    ``history_state["metrics"]`` (``<measure>_null_lo`` / ``_null_hi``), saying whether its latest value sits
    inside the null's 95% band, saying when a value below it is what layers settled around a level give (when the
    state holds the history's ``values``), and flagging a short series. Empty string when no measure has a null.

    Args:
        history_state: a history as :meth:`~lightning_dynamics.DynamicsTracker.history_state` returns it or
            :func:`~lightning_dynamics.capture.load_history` reads it.
        reliable: measure -> the length it is reliable from (default: :func:`reliable_from`, the registry's).

    Example:
        >>> nan = float("nan")
        >>> state = {"config": {}, "metrics": {"integration": [nan, 0.9], "integration_null_lo": [nan, 0.2],
        ...                                    "integration_null_hi": [nan, 0.8]}}
        >>> noise_floor_summary(state, reliable={})
        'integration 0.9 is outside its noise floor [0.2, 0.8].'
    """
    metrics = dict(history_state.get("metrics") or {})
    config = dict(history_state.get("config") or {})
    reliable = reliable_from() if reliable is None else reliable
    values = history_state.get("values")
    return " ".join(reading(metrics, key, config, reliable, values).sentence() for key in null_measures(metrics))


# What a value of the relative change says about training, from the lowest band up (docs/reading_the_dashboard.md).
# Measured on the digits CNN: a dead run (learning rate 20x too high) read 0.012 at epoch 2 and 1e-6 at epoch 10;
# a run that moves without learning 0.2-0.9; a run whose first half hardly moved (a slow start) 7.35 at its end.
# 0.25 is the stopping rule's ratio (docs/method.md section 8).
RELATIVE_CHANGE_BANDS: tuple[tuple[float, str, str], ...] = (
    (
        0.01,
        "stopped",
        "the layers have all but stopped changing (under 1% of their early change): finished, or a dead run "
        "(accuracy at chance: lower the learning rate)",
    ),
    (
        0.25,
        "settled",
        "the layers move less than a quarter as much as while learning: settled (what DynamicsEarlyStopping waits for)",
    ),
    (
        2.0,
        "moving",
        "the layers still move about as much as in the first half: learning if validation improves, moving without "
        "learning if it does not (learning rate too high, or labels the network cannot fit)",
    ),
    (
        math.inf,
        "rising",
        "the layers move more than in the first half of the run: a slow start (the first half hardly moved) or a run "
        "growing unstable (if the loss rises)",
    ),
)


def relative_change_reading(value: float) -> tuple[str, str]:
    """``(kind, sentence)``: what a relative change says about training (``("undefined", ...)`` for NaN).

    The relative change (:func:`lightning_dynamics.functional.median_relative_change`) is the median over layers of
    each layer's recent mean absolute change over its mean absolute change in the first half of the history.

    Example:
        >>> relative_change_reading(1e-6)[0], relative_change_reading(0.1)[0], relative_change_reading(0.6)[0]
        ('stopped', 'settled', 'moving')
        >>> relative_change_reading(7.35)[0], relative_change_reading(float("nan"))[0]
        ('rising', 'undefined')
    """
    if not math.isfinite(value):
        return "undefined", "not defined yet (it needs 2 x window + 1 sample points)"
    for edge, kind, sentence in RELATIVE_CHANGE_BANDS:
        if value < edge:
            return kind, sentence
    return RELATIVE_CHANGE_BANDS[-1][1], RELATIVE_CHANGE_BANDS[-1][2]


def fit_summary(history_state: Mapping[str, Any], reliable: Mapping[str, int] | None = None) -> str:
    """The end-of-fit line: what the relative change says, and how many descriptive measures left their noise floor.

    The relative change comes first because it is the reading that tells a dead run, a slow start and a run that
    moves without learning apart; the phase and DFA measures describe the run and are counted, not listed
    (:func:`noise_floor_summary` lists them). Empty string when nothing is defined.

    Example:
        >>> nan = float("nan")
        >>> state = {"config": {}, "epochs": [0, 1, 2], "metrics": {
        ...     "relative_change": [nan, nan, 0.1], "integration": [nan, 0.4, 0.5],
        ...     "integration_null_lo": [nan, 0.3, 0.3], "integration_null_hi": [nan, 0.7, 0.7]}}
        >>> fit_summary(state, reliable={})  # doctest: +NORMALIZE_WHITESPACE
        'relative_change 0.1 at epoch 2: the layers move less than a quarter as much as while learning: settled
        (what DynamicsEarlyStopping waits for). 0 of 1 descriptive measures outside their noise floor.'
    """
    metrics = dict(history_state.get("metrics") or {})
    config = dict(history_state.get("config") or {})
    epochs = list(history_state.get("epochs") or [])
    reliable = reliable_from() if reliable is None else reliable
    parts = []
    if "relative_change" in metrics:
        change = reading(metrics, "relative_change", config, reliable)
        if change.index is not None:
            where = f" at epoch {int(epochs[change.index])}" if change.index < len(epochs) else ""
            parts.append(f"relative_change {change.value:.3g}{where}: {relative_change_reading(change.value)[1]}.")
    described = [reading(metrics, key, config, reliable) for key in null_measures(metrics) if key != "relative_change"]
    described = [r for r in described if r.inside_noise_floor is not None]
    if described:
        outside = [r.measure for r in described if not r.inside_noise_floor]
        text = f"{len(outside)} of {len(described)} descriptive measures outside their noise floor"
        parts.append(text + (f" ({', '.join(outside)})." if outside else "."))
    return " ".join(parts)
