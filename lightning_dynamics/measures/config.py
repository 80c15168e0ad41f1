"""One validated configuration of the measures, shared by the tracker, the callbacks and the benchmarks.

:class:`DynamicsConfig` is frozen: build it once (field by field from the typed ``__init__`` arguments of the
Lightning and Fabric adapters, or directly), and every part that computes a measure reads the same values. All
validation of the measures' settings lives here; each error names the argument, the value given and what is allowed.
Defaults are those of docs/method.md (sections 0, 1, 2, 5 and 6) and of :mod:`lightning_dynamics.functional`.
No Lightning import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lightning_dynamics.capture.summaries import SUMMARY_CHOICES
from lightning_dynamics.functional.detrend import DETREND_CHOICES
from lightning_dynamics.functional.hilbert import PAD_CHOICES
from lightning_dynamics.functional.integration import H_OPT, SIGMA
from lightning_dynamics.functional.stability import DEFAULT_VOLATILITY_WINDOW, DEFAULT_WINDOW
from lightning_dynamics.measures.registry import MEASURES, measure_names, null_keys
from lightning_dynamics.validation import check_bool, check_choice, check_finite_real, check_int, is_int, is_real

# The integration map of Ugail & Howard (arXiv:2512.10972): H_eff optimum and width (docs/method.md section 5).
DEFAULT_H_OPT = H_OPT
DEFAULT_SIGMA = SIGMA
DEFAULT_WEIGHTS = (0.5, 0.5)
# Sample points per training epoch when sampling by epoch (docs/method.md sections 0 and 8b). From the measured
# noise-floor tables (benchmarks/noise_floors.md, functional.reliability): synchrony is reliable from 64 history
# points, phase integration beside its same-length null from 96, metastability and the MF-DFA width from 200, the
# DFA exponent from 96 (independent layers) to 1000 (layers correlated at 0.9). 32 points an epoch reach 64 after
# 2 epochs, 96 after 3 and 256 after 8, while each point still averages several batches of a typical epoch; the
# measures are computed and logged once per epoch. 1 gives the paper's one point per epoch (T = 25-60 in a run:
# estimation noise for every measure but synchrony, by the same tables).
DEFAULT_POINTS_PER_EPOCH = 32
# Whole-history measures over the last this many points: bounds a sample point's cost in long runs.
DEFAULT_HISTORY_WINDOW = 1024
# Surrogates per noise floor (docs/method.md section 7): 39 puts a 95% band's edges at the 1st and 39th values.
DEFAULT_NULL_SURROGATES = 39
# Share of the training time the noise floors (and the end-of-fit dashboard) may take: spaced out to stay within it.
# Measured on the digits CNN (40 epochs of 22 batches): floors at every epoch and the figure doubled the run.
DEFAULT_COST_BUDGET = 0.05
# The shortest window DFA accepts with the default scales: 3 scales of >= 2 segments (docs/method.md section 4).
MIN_WINDOW = 16


@dataclass(frozen=True)
class DynamicsConfig:
    r"""The settings of every measure (docs/method.md sections 0-6), validated once.

    Args:
        summary: per-layer scalar of each sample interval: ``"rms"``, ``"mean"``, ``"abs_mean"`` or ``"std"``.
        detrend: preprocessing before phases and DFA: ``"diff"``, ``"linear"``, ``"mean"`` or ``None``.
        pad: Hilbert edge handling: ``"reflect"`` or ``None``.
        window: ``w``, sliding window of the stability index (>= 16: DFA needs 12 points, the index a margin).
        volatility_window: ``k``, stability-index values per volatility value (>= 2).
        weights: ``(w_I, w_M)``, non-negative, summing to 1 (so the index stays in ``[0, 1]``).
        h_opt, sigma: the integration map :math:`\exp(-(\alpha - h_{opt})^2 / 2\sigma^2)`.
        history_window: compute the whole-history measures over the last this many points only (None: all). The
            measures that need more read what they need, so each appears at its ``defined_from()``: the stability
            index its last ``window`` points, ``relative_change`` its last ``2 * window + 1``.
        compute_phase_integration: also compute ``phase_integration`` (O(L^2) per sample point).
        every_n_steps: a sample point every this many optimizer steps, with the measures computed and logged at
            each; ``None``: sample by epoch.
        points_per_epoch: when sampling by epoch, sample points per epoch, evenly spread over its batches (fewer if
            the epoch has fewer batches; 1 for iterables without a length); the measures are computed and logged
            once per epoch, at its last point.
        null_surrogates: surrogates per noise floor (``<measure>_null_lo``/``_null_hi``, computed where the
            measures are logged, at most once per epoch); ``None`` turns the noise floors off.
        complexity_every_n_samples: every this many sample points also compute the opt-in complexity measures.
        cost_budget: in ``(0, 1]``, the share of the fit's training time that the tracker's own work at its sample
            points (measures, noise floors, bookkeeping) may take: it times that work and computes the noise floors
            only while the total stays within it (always at the first point where each measure has one, and at the
            fit's last point), so with short epochs they are spaced out; the measures run at every computation.
            The end-of-fit dashboard is drawn only when it costs less than this share of the fit. ``None``: floors
            at every computation and the dashboard always.

    Example:
        >>> DynamicsConfig(window=24).defined_from()["stability_volatility"]
        28
        >>> DynamicsConfig(h_opt=-1)
        Traceback (most recent call last):
        ...
        ValueError: `h_opt` must be a finite number in [0.0, 2.0], got -1.
        >>> DynamicsConfig(weights=(0.7, 0.2))
        Traceback (most recent call last):
        ...
        ValueError: `weights` must be two finite, non-negative numbers summing to 1 ... got (0.7, 0.2).
    """

    summary: str = "rms"
    detrend: str | None = "diff"
    pad: str | None = "reflect"
    window: int = DEFAULT_WINDOW
    volatility_window: int = DEFAULT_VOLATILITY_WINDOW
    weights: tuple[float, float] = DEFAULT_WEIGHTS
    h_opt: float = DEFAULT_H_OPT
    sigma: float = DEFAULT_SIGMA
    history_window: int | None = DEFAULT_HISTORY_WINDOW
    compute_phase_integration: bool = True
    every_n_steps: int | None = None
    points_per_epoch: int = DEFAULT_POINTS_PER_EPOCH
    null_surrogates: int | None = DEFAULT_NULL_SURROGATES
    complexity_every_n_samples: int | None = None
    cost_budget: float | None = DEFAULT_COST_BUDGET

    def __post_init__(self) -> None:
        check_choice("summary", self.summary, SUMMARY_CHOICES)
        check_choice("detrend", self.detrend, DETREND_CHOICES)
        check_choice("pad", self.pad, PAD_CHOICES)
        if not is_int(self.window) or self.window < MIN_WINDOW:
            raise ValueError(
                f"`window` must be an integer >= {MIN_WINDOW} (DFA needs at least 3 scales of >= 2 segments), "
                f"got {self.window!r}."
            )
        check_int("volatility_window", self.volatility_window, 2)
        if self.history_window is not None and (not is_int(self.history_window) or self.history_window < MIN_WINDOW):
            raise ValueError(
                f"`history_window` must be None or an integer >= {MIN_WINDOW} (the stability window's minimum), "
                f"got {self.history_window!r}."
            )
        weights = self.weights
        if (
            not isinstance(weights, (tuple, list))
            or len(weights) != 2
            or not all(is_real(w) and math.isfinite(w) and w >= 0 for w in weights)
            or abs(float(weights[0]) + float(weights[1]) - 1.0) > 1e-9
        ):
            raise ValueError(
                "`weights` must be two finite, non-negative numbers summing to 1 (w_integration, w_metastability), "
                f"got {weights!r}."
            )
        object.__setattr__(self, "weights", (float(weights[0]), float(weights[1])))
        # DFA exponents live in about [0, 2] (white noise 0.5, random walk 1.5): an optimum outside is a typo.
        object.__setattr__(self, "h_opt", check_finite_real("h_opt", self.h_opt, minimum=0.0, maximum=2.0))
        object.__setattr__(self, "sigma", check_finite_real("sigma", self.sigma, positive=True, maximum=10.0))
        check_bool("compute_phase_integration", self.compute_phase_integration)
        check_int("every_n_steps", self.every_n_steps, 1, allow_none=True)
        check_int("points_per_epoch", self.points_per_epoch, 1)
        check_int("null_surrogates", self.null_surrogates, 9, allow_none=True)
        check_int("complexity_every_n_samples", self.complexity_every_n_samples, 1, allow_none=True)
        budget = check_finite_real("cost_budget", self.cost_budget, positive=True, maximum=1.0, allow_none=True)
        object.__setattr__(self, "cost_budget", budget)

    def defined_from(self) -> dict[str, int]:
        """Sample points before each measure this config computes is first defined (NaN, and not logged, before).

        Read from :data:`lightning_dynamics.measures.registry.MEASURES`. With epoch sampling the measures are
        computed at each epoch's last point, so a measure appears at the first epoch end with this many points.
        """
        return {name: m.defined_from(self) for name, m in MEASURES.items() if name in self.measure_names()}

    def measure_names(self) -> tuple[str, ...]:
        """The measures computed with this config: the default group, plus the complexity group when asked for."""
        return measure_names("default") + (measure_names("complexity") if self.complexity_every_n_samples else ())

    def logged_keys(self) -> tuple[str, ...]:
        """Every series the tracker records: the measures and, with noise floors on, their null bands."""
        names = self.measure_names()
        return names + (null_keys(names) if self.null_surrogates else ())

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for history files and hyper-parameter logs)."""
        out = asdict(self)
        out["weights"] = list(self.weights)
        return out
