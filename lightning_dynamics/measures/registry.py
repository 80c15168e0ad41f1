"""The one declaration of every measure the tracker logs: name, group, plot label, doc line, the points from which it
is defined and from which it is reliable, bounds, null and how it computes.

The tracker, the config's :meth:`~lightning_dynamics.measures.DynamicsConfig.defined_from`, the readings, the report
(figures, printed table, HTML page), the command line and the docs read this table; nothing else lists measures, and
the README's key table and the point counts of docs/callbacks.md are generated from it
(:mod:`lightning_dynamics.measures.tables`). Adding a measure touches its functional file, its entry here, its
subclass of the shared measure tester (``tests/measures``) and its doc page.

Two lengths, in history points (sample points), name every "points a measure needs":

- *defined from* (:attr:`Measure.defined_from`): the fewest points at which the estimator returns a value; NaN, and
  not logged, before.
- *reliable from* (:attr:`Measure.reliable_from`): the shortest history on which the estimator tells apart signals
  of known, different truth, measured by ``benchmarks/noise_floors.py`` (docs/method.md section 8b,
  :data:`~lightning_dynamics.functional.reliability.RELIABLE_FROM`); ``None`` where not measured.

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
    complexity_defined_from,
    defined_from,
    history_complexity,
    median_relative_change,
    surrogate_histories,
)
from lightning_dynamics.functional.change import relative_change_defined_from
from lightning_dynamics.functional.reliability import RELIABLE_FROM
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
    """One logged measure, declared once.

    Attributes:
        name: the key under the prefix (``<prefix>/<name>``).
        group: ``"default"`` (always computed) or ``"complexity"`` (opt-in, ``complexity_every_n_samples``).
        doc: one line for tables and docs.
        defined_from: sample points before it is first defined, given the config (NaN and not logged before).
        bounds: the range for plots (``None`` where unbounded).
        null: the noise floor computed from the run's own history: ``"phase"`` (phase-randomised surrogates: keep
            each layer's spectrum, destroy the coupling), ``"shuffle"`` (time shuffles of the detrended series:
            destroy the temporal correlations that alpha reads) or ``None`` (a count or a diagnostic; no null).
        compute: ``MeasureContext -> Tensor`` of the point's batch shape; ``None`` for values the tracker fills
            itself (``nonfinite`` from the summaries, ``stability_volatility`` from the logged series).
        label: the axis label of its panel in the figures (every registered measure declares one; the figures use
            the name where it is empty).
        reliable_from: the shortest history (sample points) on which its estimator is reliable, from the measured
            table :data:`~lightning_dynamics.functional.reliability.RELIABLE_FROM` (``NEVER_RELIABLE`` where no
            measured length is enough); ``None`` where not measured (counts, diagnostics, ``relative_change``).
    """

    name: str
    group: Group
    doc: str
    defined_from: Callable[[DynamicsConfig], int]
    bounds: tuple[float, float] | None = None
    null: NullKind | None = None
    compute: Callable[[MeasureContext], Tensor] | None = None
    label: str = ""
    reliable_from: int | None = None

    @property
    def null_keys(self) -> tuple[str, ...]:
        """The keys of its null band (``<name>_null_lo``, ``<name>_null_hi``), or ``()``."""
        return tuple(self.name + suffix for suffix in NULL_SUFFIXES) if self.null else ()


def _phase_points(config: DynamicsConfig) -> int:
    return defined_from(config.detrend)["metastability"]


def _dfa_points(config: DynamicsConfig) -> int:
    return defined_from(config.detrend)["integration"]


def _complexity_points(config: DynamicsConfig) -> int:
    return max(complexity_defined_from(config.detrend).values())


def _cross(field: str) -> Callable[[MeasureContext], Tensor]:
    def compute(point: MeasureContext) -> Tensor:
        return getattr(point.cross_layer, field).to(point.x.dtype)

    compute.__qualname__ = f"cross_layer.{field}"
    return compute


def _stability(point: MeasureContext) -> Tensor:
    return point.stability if point.n_points >= point.config.window else point.nan()


def _relative_change(point: MeasureContext) -> Tensor:
    # At least the 2 * window + 1 points it needs, whatever history_window is (as the stability index reads its own
    # window): a history_window below that would leave it NaN for the whole run, although defined_from promises it.
    needed = relative_change_defined_from(point.config.window)
    x = point.x if point.x.shape[-1] >= needed else point.full[..., -needed:]
    return median_relative_change(x, point.config.window)


def _complexity(key: str) -> Callable[[MeasureContext], Tensor]:
    def compute(point: MeasureContext) -> Tensor:
        per_layer = history_complexity(point.x.double(), detrend=point.config.detrend)[key]
        return per_layer.nanmean(dim=-1).to(point.x.dtype)

    compute.__qualname__ = f"history_complexity.{key}"
    return compute


_MEASURES = (
    Measure(
        name="nonfinite",
        group="default",
        label="non-finite layers",
        doc="layers whose activations held NaN/Inf since the last computation (those points are missing for them)",
        defined_from=lambda config: 1,
    ),
    Measure(
        name="metastability",
        group="default",
        label="metastability M",
        doc="std over time of the Kuramoto order parameter R(t) of the layers' phases",
        defined_from=_phase_points,
        reliable_from=RELIABLE_FROM["metastability"],
        bounds=(0.0, 0.5),  # the std of a variable in [0, 1] is at most 0.5
        null="phase",
        compute=_cross("metastability"),
    ),
    Measure(
        name="synchrony",
        group="default",
        label="synchrony (mean R)",
        doc="mean of R(t)",
        defined_from=_phase_points,
        reliable_from=RELIABLE_FROM["synchrony"],
        bounds=(0.0, 1.0),
        null="phase",
        compute=_cross("synchrony"),
    ),
    Measure(
        name="phase_integration",
        group="default",
        label="phase integration",
        doc="mean largest component of the thresholded phase-locking graph (Deco et al. 2017)",
        defined_from=_phase_points,
        reliable_from=RELIABLE_FROM["phase_integration"],
        bounds=(0.0, 1.0),
        null="phase",
        compute=_cross("phase_integration"),
    ),
    Measure(
        name="n_excluded",
        group="default",
        label="layers left out",
        doc="layers left out (constant or non-finite series)",
        defined_from=_phase_points,
        compute=_cross("n_excluded"),
    ),
    Measure(
        name="integration_alpha",
        group="default",
        label="mean DFA exponent α",
        doc="mean DFA exponent of the layers' detrended series",
        defined_from=_dfa_points,
        reliable_from=RELIABLE_FROM["integration_alpha"],
        bounds=(0.0, 2.0),
        null="shuffle",
        compute=_cross("integration_alpha"),
    ),
    Measure(
        name="integration",
        group="default",
        label="integration I",
        doc="exp(-(alpha - h_opt)^2 / (2 sigma^2)), in [0, 1]",
        defined_from=_dfa_points,
        reliable_from=RELIABLE_FROM["integration"],
        bounds=(0.0, 1.0),
        null="shuffle",
        compute=_cross("integration"),
    ),
    Measure(
        name="stability_index",
        group="default",
        label="stability index S",
        doc="w_I I + w_M min(1, M / 0.5) over the last `window` points",
        defined_from=lambda config: config.window,
        reliable_from=RELIABLE_FROM["stability_index"],
        bounds=(0.0, 1.0),
        null="shuffle",
        compute=_stability,
    ),
    Measure(
        name="stability_volatility",
        group="default",
        label="volatility V of S",
        doc="std of the last `volatility_window` stability index values (no null: read it beside the index's band)",
        defined_from=lambda config: config.window + config.volatility_window - 1,
        bounds=(0.0, 0.5),
    ),
    Measure(
        name="relative_change",
        group="default",
        label="relative change\n(median over layers)",
        doc="median over layers of each layer's recent mean absolute change over its first-half one (scale-aware: "
        "about 1 while a layer moves as much as early on, towards 0 as it settles)",
        defined_from=lambda config: relative_change_defined_from(config.window),
        bounds=None,  # above 1 when a layer moves more than early on (e.g. after a warm-up)
        null="shuffle",
        compute=_relative_change,
    ),
    Measure(
        name="higuchi_fd",
        group="complexity",
        label="Higuchi fractal dimension",
        doc="mean over layers of the Higuchi fractal dimension of the detrended series",
        defined_from=_complexity_points,
        reliable_from=RELIABLE_FROM["higuchi_fd"],
        bounds=(1.0, 2.0),
        compute=_complexity("higuchi_fd"),
    ),
    Measure(
        name="katz_fd",
        group="complexity",
        label="Katz fractal dimension",
        doc="mean over layers of the Katz fractal dimension of the detrended series",
        defined_from=_complexity_points,
        reliable_from=RELIABLE_FROM["katz_fd"],
        compute=_complexity("katz_fd"),
    ),
    Measure(
        name="mfdfa_width",
        group="complexity",
        label="MF-DFA width",
        doc="mean over layers of the MF-DFA generalized Hurst exponent's width h(q_min) - h(q_max)",
        defined_from=_complexity_points,
        reliable_from=RELIABLE_FROM["mfdfa_width"],
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


def compute_measures(point: MeasureContext, names: tuple[str, ...]) -> dict[str, Tensor]:
    """``{name: value}`` of the named measures that compute from the history, on its device, no host sync."""
    out = {}
    for name in names:
        compute = MEASURES[name].compute
        if compute is not None:
            out[name] = compute(point) if point.n_points >= MEASURES[name].defined_from(point.config) else point.nan()
    return out


def null_bands(
    x: Tensor,
    config: DynamicsConfig,
    names: tuple[str, ...],
    n: int,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The noise floor of each named measure that has a null: ``{<name>_null_lo, <name>_null_hi: [...] tensor}``.

    The measure is computed on ``n`` null histories made from the run's own history ``x: [..., L, T]`` (a batch of
    histories gives a band each; :func:`~lightning_dynamics.functional.surrogate_histories`): phase-randomised
    surrogates for the phase measures (they keep each layer's spectrum and so its alpha, destroying only the
    coupling) and time shuffles of the detrended series for alpha, integration and the stability index (they keep
    each layer's values, destroying the temporal correlations DFA reads). One batched pass per kind of null. The
    band's edges are the k-th smallest and largest values, ``k = max(1, floor(0.025 (n + 1)))``: a value outside is
    significant at 5% (two-sided rank test) for ``n = 39``, and at ``2k / (n + 1)`` in general.
    """
    out: dict[str, Tensor] = {}
    kinds = sorted({str(MEASURES[name].null) for name in names if MEASURES[name].null is not None})
    for kind in kinds:
        wanted = tuple(name for name in names if MEASURES[name].null == kind)
        window = x if config.history_window is None else x[..., -config.history_window :]
        if kind == "shuffle" and "stability_index" in wanted:
            window = x[..., -max(config.window, window.shape[-1]) :]
        if kind == "shuffle" and "relative_change" in wanted:
            window = x[..., -max(relative_change_defined_from(config.window), window.shape[-1]) :]
        histories = surrogate_histories(window, n, method=kind, detrend=config.detrend, generator=generator)
        values = compute_measures(MeasureContext(histories, config), wanted)
        k = max(1, int(NULL_LEVEL / 2 * (n + 1)))
        for name, batch in values.items():
            ordered = batch.sort(dim=0).values  # NaN sorts last: a NaN surrogate widens the band, never narrows it
            out[name + NULL_SUFFIXES[0]], out[name + NULL_SUFFIXES[1]] = ordered[k - 1], ordered[n - k]
    return out
