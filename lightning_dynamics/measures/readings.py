"""What stands beside a measure's latest value: its noise floor and whether its series was long enough.

A reading means something only beside its null and its estimator's reliable length (docs/method.md section 8b;
issue 18 items 2 and 4). The tracker stores, for each measure that has a null, the series
``<measure>_null_lo`` and ``<measure>_null_hi`` in the history's ``metrics``: the 2.5% and 97.5% quantiles of the
measure on surrogates of the run's own history, at the points where the measure is logged (NaN elsewhere).
A latest value inside ``[null_lo, null_hi]`` at its point is *inside the noise floor*: it lies among the central
95% of what the same history gives with its structure destroyed. The reliable minimum length of each
estimator comes from :data:`lightning_dynamics.functional.reliability.RELIABLE_MIN_POINTS`; a measure computed on
fewer sample points is a *short series*. Both come through the measure registry
(:mod:`lightning_dynamics.measures.registry`).

This module only reads plain series (numpy arrays, tensors or lists), so the tracker can call
:func:`noise_floor_summary` on its in-memory history at the end of fit; the dashboard, the report table and the
HTML page read the same :class:`Reading` objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_dynamics.functional.change import min_relative_change_length
from lightning_dynamics.measures.registry import MEASURES, NULL_SUFFIXES, reliable_points

NULL_LO_SUFFIX, NULL_HI_SUFFIX = NULL_SUFFIXES
# Measures computed on the last `window` points at each sample point (docs/method.md section 6); every other
# measure reads the whole history so far (or its last `history_window` points).
WINDOWED_MEASURES = ("stability_index", "stability_volatility")


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
        reliable_min: the estimator's reliable minimum length; None when not known.
    """

    measure: str
    value: float
    index: int | None
    null_lo: float = math.nan
    null_hi: float = math.nan
    points: int | None = None
    reliable_min: int | None = None

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
    def short_series(self) -> bool:
        """True when the value was computed on fewer sample points than the estimator's reliable minimum."""
        return self.points is not None and self.reliable_min is not None and self.points < self.reliable_min

    @property
    def never_reliable(self) -> bool:
        """True when no measured length makes the estimator reliable (``reliability.NEVER_RELIABLE``)."""
        never = _never_reliable()
        return self.reliable_min is not None and never is not None and self.reliable_min >= never

    def short_text(self) -> str:
        """``"16 < 64 points"``, or ``"320 points; reliable at no measured length"``; ``""`` when not short."""
        if not self.short_series:
            return ""
        if self.never_reliable:
            return f"{self.points} points; reliable at no measured length"
        return f"{self.points} < {self.reliable_min} points"

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
        if self.short_series:
            text += f" (short series: {self.short_text()})"
        return text + "."


def _never_reliable() -> int | None:
    """The reliability table's mark for "no measured length is enough", where the table defines one."""
    from lightning_dynamics.functional import reliability

    never = getattr(reliability, "NEVER_RELIABLE", None)
    return int(never) if never is not None else None


def reliable_min_points() -> dict[str, int]:
    """Each registered measure's reliable minimum length, where known.

    From :func:`lightning_dynamics.measures.registry.reliable_points`.
    """
    table = {name: reliable_points(name) for name in MEASURES}
    return {name: points for name, points in table.items() if points is not None}


def _array(series: Any) -> np.ndarray:
    if hasattr(series, "detach"):  # a tensor, without importing torch here
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
        history_window = max(int(history_window), min_relative_change_length(int(config["window"])))  # its minimum
    return min(index + 1, int(history_window)) if history_window else index + 1


def first_reliable_point(
    measure: str, n_points: int, config: Mapping[str, Any], reliable_min: int | None
) -> int | None:
    """The first sample point at which ``measure`` reads at least ``reliable_min`` points; None if none of ``n_points``.

    ``reliable_min=None`` (unknown) counts as reliable from the start (no flag without a number).

    Example:
        >>> first_reliable_point("integration", 30, {}, 20)
        19
        >>> first_reliable_point("stability_index", 30, {"window": 16}, 64) is None
        True
    """
    if reliable_min is None:
        return 0
    for index in range(n_points):
        if points_read(measure, index, config) >= reliable_min:
            return index
    return None


def reading(
    metrics: Mapping[str, Any],
    measure: str,
    config: Mapping[str, Any] | None = None,
    reliable: Mapping[str, int] | None = None,
) -> Reading:
    """The :class:`Reading` of ``measure`` from a history's ``metrics`` (``{key: [T] series}``).

    The reading is taken at the last point where the measure is finite, and, when the measure has a null, where
    its band is finite too (the null is computed where the measure is logged, so the two points agree).

    Args:
        metrics: the history's ``metrics``.
        measure: a key of ``metrics``.
        config: the monitor's configuration (``window``, ``history_window``), for the points read.
        reliable: measure -> reliable minimum length (default: :func:`reliable_min_points`).

    Example:
        >>> nan = float("nan")
        >>> metrics = {"m": [nan, 0.2, 0.5], "m_null_lo": [nan, 0.1, 0.3], "m_null_hi": [nan, 0.4, 0.6]}
        >>> r = reading(metrics, "m", reliable={"m": 8})
        >>> r.value, r.inside_noise_floor, r.points, r.short_series
        (0.5, True, 3, True)
    """
    config = {} if config is None else config
    reliable = reliable_min_points() if reliable is None else reliable
    values = _array(metrics[measure])
    finite = np.isfinite(values)
    lo = _array(metrics[f"{measure}{NULL_LO_SUFFIX}"]) if f"{measure}{NULL_LO_SUFFIX}" in metrics else None
    hi = _array(metrics[f"{measure}{NULL_HI_SUFFIX}"]) if f"{measure}{NULL_HI_SUFFIX}" in metrics else None
    if not finite.any():
        return Reading(measure, math.nan, None, reliable_min=reliable.get(measure))
    index = int(np.flatnonzero(finite)[-1])
    null_lo = null_hi = math.nan
    if lo is not None and hi is not None:
        banded = np.flatnonzero(finite & np.isfinite(lo) & np.isfinite(hi))
        if banded.size:
            index = int(banded[-1])
            null_lo, null_hi = float(lo[index]), float(hi[index])
    return Reading(
        measure=measure,
        value=float(values[index]),
        index=index,
        null_lo=null_lo,
        null_hi=null_hi,
        points=points_read(measure, index, config),
        reliable_min=reliable.get(measure),
    )


def readings(
    metrics: Mapping[str, Any], config: Mapping[str, Any] | None = None, reliable: Mapping[str, int] | None = None
) -> dict[str, Reading]:
    """:func:`reading` of every measure in ``metrics`` (the null-band series themselves excluded)."""
    reliable = reliable_min_points() if reliable is None else reliable
    return {key: reading(metrics, key, config, reliable) for key in measure_keys(metrics)}


def noise_floor_summary(history_state: Mapping[str, Any], reliable: Mapping[str, int] | None = None) -> str:
    """One info line per run: for each measure with a null, whether its latest value is inside its noise floor.

    What the tracker can log at the end of fit: one sentence per measure that carries a null band in
    ``history_state["metrics"]`` (``<measure>_null_lo`` / ``_null_hi``), saying whether its latest value sits
    inside the null's 95% band, and flagging a short series. Empty string when no measure has a null.

    Args:
        history_state: a history as :meth:`~lightning_dynamics.DynamicsTracker.history_state` returns it or
            :func:`~lightning_dynamics.capture.load_history` reads it.
        reliable: measure -> reliable minimum length (default: :func:`reliable_min_points`).

    Example:
        >>> nan = float("nan")
        >>> state = {"config": {}, "metrics": {"integration": [nan, 0.9], "integration_null_lo": [nan, 0.2],
        ...                                    "integration_null_hi": [nan, 0.8]}}
        >>> noise_floor_summary(state, reliable={})
        'integration 0.9 is outside its noise floor [0.2, 0.8].'
    """
    metrics = dict(history_state.get("metrics") or {})
    config = dict(history_state.get("config") or {})
    reliable = reliable_min_points() if reliable is None else reliable
    return " ".join(reading(metrics, key, config, reliable).sentence() for key in null_measures(metrics))
