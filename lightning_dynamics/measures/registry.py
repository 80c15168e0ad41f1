"""The one declaration of every measure the tracker logs: name, group, points needed, bounds, null, doc line.

The tracker, the config's ``points_needed``, the report, the command line and the docs read this table; nothing
else lists measures. Adding a measure touches its functional file, its entry here, its test and its doc page.

A :class:`Measure` computes from a :class:`MeasureContext`, which shares the expensive passes between measures
(detrending, Hilbert phases and DFA are computed once per history by
:func:`~lightning_dynamics.functional.dynamics_measures`). Every ``compute`` is batched: the same function runs on
the history ``[L, T]`` and on a batch of null histories ``[n, L, T]`` (the noise floor, docs/method.md sections 7
and 8b). No Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from lightning_dynamics.functional import (
    median_relative_change,
    min_points,
    surrogate_histories,
)
from lightning_dynamics.functional.change import min_relative_change_length
from lightning_dynamics.measures.context import MeasureContext

if TYPE_CHECKING:
    from lightning_dynamics.measures.config import DynamicsConfig

Group = Literal["default", "complexity"]
NullKind = Literal["phase", "shuffle"]
NULL_SUFFIXES = ("_null_lo", "_null_hi")
# The null band is a two-sided 5% rank test (Theiler et al. 1992): with n surrogates, its edges are the k-th
# smallest and k-th largest values, k = max(1, floor(0.025 (n + 1))); under the null the data's value falls outside
# with probability 2k / (n + 1): 5% for n = 39 (the default, edges = min and max), 10% for n = 19.
NULL_LEVEL = 0.05


@dataclass(frozen=True)
class Measure:
    """One logged measure.

    Attributes:
        name: the key under the prefix (``<prefix>/<name>``).
        group: ``"default"`` (always computed) or ``"complexity"`` (opt-in, ``complexity_every_n_samples``).
        doc: one line for tables and docs.
        points_needed: sample points before it is first defined, given the config (NaN and not logged before).
        bounds: the range for plots (``None`` where unbounded).
        null: the noise floor computed from the run's own history: ``"phase"`` (phase-randomised surrogates: keep
            each layer's spectrum, destroy the coupling), ``"shuffle"`` (time shuffles of the detrended series:
            destroy the temporal correlations that alpha reads) or ``None`` (a count or a diagnostic; no null).
        compute: ``MeasureContext -> Tensor`` of the point's batch shape; ``None`` for values the tracker fills
            itself (``nonfinite`` from the summaries, ``stability_volatility`` from the logged series).
    """

    name: str
    group: Group
    doc: str
    points_needed: Callable[[DynamicsConfig], int]
    bounds: tuple[float, float] | None = None
    null: NullKind | None = None
    compute: Callable[[MeasureContext], Tensor] | None = None

    @property
    def null_keys(self) -> tuple[str, ...]:
        """The keys of its null band (``<name>_null_lo``, ``<name>_null_hi``), or ``()``."""
        return tuple(self.name + suffix for suffix in NULL_SUFFIXES) if self.null else ()


def _phase_points(config: DynamicsConfig) -> int:
    return min_points(config.detrend)["metastability"]


def _dfa_points(config: DynamicsConfig) -> int:
    return min_points(config.detrend)["integration"]


def _complexity_points(config: DynamicsConfig) -> int:
    from lightning_dynamics.functional import complexity_min_points

    return max(complexity_min_points(config.detrend).values())


def _cross(field: str) -> Callable[[MeasureContext], Tensor]:
    def compute(point: MeasureContext) -> Tensor:
        return getattr(point.cross_layer, field).to(point.x.dtype)

    compute.__qualname__ = f"cross_layer.{field}"
    return compute


def _stability(point: MeasureContext) -> Tensor:
    return point.stability if point.n_points >= point.config.window else point.nan()


def _relative_change(point: MeasureContext) -> Tensor:
    # At least the 2 * window + 1 points it needs, whatever history_window is (as the stability index reads its own
    # window): a history_window below that would leave it NaN for the whole run, although points_needed promises it.
    needed = min_relative_change_length(point.config.window)
    x = point.x if point.x.shape[-1] >= needed else point.full[..., -needed:]
    return median_relative_change(x, point.config.window)


def _complexity(key: str) -> Callable[[MeasureContext], Tensor]:
    def compute(point: MeasureContext) -> Tensor:
        from lightning_dynamics.functional import history_complexity

        per_layer = history_complexity(point.x.double(), detrend=point.config.detrend)[key]
        return per_layer.nanmean(dim=-1).to(point.x.dtype)

    compute.__qualname__ = f"history_complexity.{key}"
    return compute


_MEASURES = (
    Measure(
        "nonfinite",
        "default",
        "layers whose activations held NaN/Inf in this interval (that point is missing for them)",
        lambda config: 1,
        bounds=None,
    ),
    Measure(
        "metastability",
        "default",
        "std over time of the Kuramoto order parameter R(t) of the layers' phases",
        _phase_points,
        bounds=(0.0, 0.5),  # the std of a variable in [0, 1] is at most 0.5
        null="phase",
        compute=_cross("metastability"),
    ),
    Measure(
        "synchrony",
        "default",
        "mean of R(t)",
        _phase_points,
        bounds=(0.0, 1.0),
        null="phase",
        compute=_cross("synchrony"),
    ),
    Measure(
        "phase_integration",
        "default",
        "mean largest component of the thresholded phase-locking graph (Deco et al. 2017)",
        _phase_points,
        bounds=(0.0, 1.0),
        null="phase",
        compute=_cross("phase_integration"),
    ),
    Measure(
        "n_excluded",
        "default",
        "layers left out (constant or non-finite series)",
        _phase_points,
        compute=_cross("n_excluded"),
    ),
    Measure(
        "integration_alpha",
        "default",
        "mean DFA exponent of the layers' detrended series",
        _dfa_points,
        bounds=(0.0, 2.0),
        null="shuffle",
        compute=_cross("integration_alpha"),
    ),
    Measure(
        "integration",
        "default",
        "exp(-(alpha - h_opt)^2 / (2 sigma^2)), in [0, 1]",
        _dfa_points,
        bounds=(0.0, 1.0),
        null="shuffle",
        compute=_cross("integration"),
    ),
    Measure(
        "stability_index",
        "default",
        "w_I I + w_M min(1, M / 0.5) over the last `window` points",
        lambda config: config.window,
        bounds=(0.0, 1.0),
        null="shuffle",
        compute=_stability,
    ),
    Measure(
        "stability_volatility",
        "default",
        "std of the last `volatility_window` stability index values (no null: read it beside the index's band)",
        lambda config: config.window + config.volatility_window - 1,
        bounds=(0.0, 0.5),
    ),
    Measure(
        "relative_change",
        "default",
        "median over layers of each layer's recent mean absolute change over its first-half one (scale-aware: about 1 "
        "while a layer moves as much as early on, towards 0 as it settles)",
        lambda config: min_relative_change_length(config.window),
        bounds=None,  # above 1 when a layer moves more than early on (e.g. after a warm-up)
        null="shuffle",
        compute=_relative_change,
    ),
    Measure(
        "higuchi_fd",
        "complexity",
        "mean over layers of the Higuchi fractal dimension of the detrended series",
        _complexity_points,
        bounds=(1.0, 2.0),
        compute=_complexity("higuchi_fd"),
    ),
    Measure(
        "katz_fd",
        "complexity",
        "mean over layers of the Katz fractal dimension of the detrended series",
        _complexity_points,
        compute=_complexity("katz_fd"),
    ),
    Measure(
        "mfdfa_width",
        "complexity",
        "mean over layers of the MF-DFA generalized Hurst exponent's width h(q_min) - h(q_max)",
        _complexity_points,
        compute=_complexity("mfdfa_width"),
    ),
)

MEASURES: dict[str, Measure] = {measure.name: measure for measure in _MEASURES}


def measure_names(group: Group | None = None) -> tuple[str, ...]:
    """Names of the registered measures (of one group), in logging order."""
    return tuple(name for name, m in MEASURES.items() if group is None or m.group == group)


def null_keys(names: tuple[str, ...]) -> tuple[str, ...]:
    """The null-band keys of the measures ``names`` that have a null."""
    return tuple(key for name in names for key in MEASURES[name].null_keys)


def reliable_points(name: str) -> int | None:
    """The shortest history on which the measure's estimator is reliable (measured tables), or ``None`` if unknown.

    From :data:`lightning_dynamics.functional.reliability.RELIABLE_MIN_POINTS` (docs/method.md, noise floors).
    """
    try:
        from lightning_dynamics.functional.reliability import RELIABLE_MIN_POINTS
    except ImportError:  # pragma: no cover - the tables' module is part of the package
        return None
    value = RELIABLE_MIN_POINTS.get(name)
    return int(value) if value is not None else None


def compute_measures(point: MeasureContext, names: tuple[str, ...]) -> dict[str, Tensor]:
    """``{name: value}`` of the named measures that compute from the history, on its device, no host sync."""
    out = {}
    for name in names:
        compute = MEASURES[name].compute
        if compute is not None:
            out[name] = compute(point) if point.n_points >= MEASURES[name].points_needed(point.config) else point.nan()
    return out


def null_bands(
    x: Tensor,
    config: DynamicsConfig,
    names: tuple[str, ...],
    n: int,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The noise floor of each named measure that has a null: ``{<name>_null_lo, <name>_null_hi: 0-d tensor}``.

    The measure is computed on ``n`` null histories made from the run's own history ``x: [L, T]``
    (:func:`~lightning_dynamics.functional.surrogate_histories`): phase-randomised surrogates for the phase
    measures (they keep each layer's spectrum and so its alpha, destroying only the coupling) and time shuffles of the
    detrended series for alpha, integration and the stability index (they keep each layer's values, destroying the
    temporal correlations DFA reads). One batched pass per kind of null. The band's edges are the k-th smallest and
    largest values, ``k = max(1, floor(0.025 (n + 1)))``: a value outside is significant at 5% (two-sided rank test)
    for ``n = 39``, and at ``2k / (n + 1)`` in general.
    """
    out: dict[str, Tensor] = {}
    kinds = sorted({str(MEASURES[name].null) for name in names if MEASURES[name].null is not None})
    for kind in kinds:
        wanted = tuple(name for name in names if MEASURES[name].null == kind)
        window = x if config.history_window is None else x[..., -config.history_window :]
        if kind == "shuffle" and "stability_index" in wanted:
            window = x[..., -max(config.window, window.shape[-1]) :]
        if kind == "shuffle" and "relative_change" in wanted:
            window = x[..., -max(min_relative_change_length(config.window), window.shape[-1]) :]
        histories = surrogate_histories(window, n, method=kind, detrend=config.detrend, generator=generator)
        values = compute_measures(MeasureContext(histories, config), wanted)
        k = max(1, int(NULL_LEVEL / 2 * (n + 1)))
        for name, batch in values.items():
            ordered = batch.sort(dim=0).values  # NaN sorts last: a NaN surrogate widens the band, never narrows it
            out[name + NULL_SUFFIXES[0]], out[name + NULL_SUFFIXES[1]] = ordered[k - 1], ordered[n - k]
    return out
