"""One validated configuration of the measures, shared by the tracker, the callbacks and the benchmarks.

:class:`DynamicsConfig` is frozen: build it once (field by field from the typed ``__init__`` arguments of the
Lightning and Fabric adapters, or directly), and every part that computes a measure reads the same values. All
validation of the measures' settings lives here; each error names the argument, the value given and what is allowed.
Defaults are those of docs/method.md (sections 0, 1, 2, 5 and 6) and of :mod:`lightning_dynamics.functional`.
No Lightning import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from lightning_dynamics.capture.summaries import SUMMARY_CHOICES
from lightning_dynamics.functional._checks import check_choice
from lightning_dynamics.functional.detrend import DETREND_CHOICES
from lightning_dynamics.functional.hilbert import PAD_CHOICES
from lightning_dynamics.functional.integration import H_OPT, SIGMA
from lightning_dynamics.functional.stability import DEFAULT_VOLATILITY_WINDOW, DEFAULT_WINDOW

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
# Largest timeout a process group accepts without overflowing (a year, in seconds).
MAX_TIMEOUT_S = 365 * 24 * 3600.0
# The shortest window DFA accepts with the default scales: 3 scales of >= 2 segments (docs/method.md section 4).
MIN_WINDOW = 16


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    """``value`` as an int ``>= minimum`` (or None where allowed); a ValueError naming ``name`` otherwise."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")
    return int(value)


def check_finite_real(
    name: str,
    value: Any,
    positive: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite float (``> 0`` if ``positive``, within ``[minimum, maximum]``; None where allowed);
    a ValueError naming ``name``, the value and what is allowed otherwise.

    Example:
        >>> check_finite_real("h_opt", 1e30, minimum=0.0, maximum=2.0)
        Traceback (most recent call last):
        ...
        ValueError: `h_opt` must be a finite number in [0.0, 2.0], got 1e+30.
    """
    if value is None and allow_none:
        return None
    bad = not _is_real(value) or not math.isfinite(value) or (positive and value <= 0)
    bad = bad or (minimum is not None and value < minimum) or (maximum is not None and value > maximum)
    if bad:
        allowed = "a finite number" + (" > 0" if positive else "")
        if minimum is not None or maximum is not None:
            allowed += f" in [{'-inf' if minimum is None else minimum}, {'inf' if maximum is None else maximum}]"
        raise ValueError(f"`{name}` must be {allowed + (' or None' if allow_none else '')}, got {value!r}.")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; a ValueError naming ``name`` otherwise (no truthiness).

    Example:
        >>> check_bool("save_history", "x")
        Traceback (most recent call last):
        ...
        ValueError: `save_history` must be True or False, got 'x'.
    """
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return value


def check_prefix(name: str, value: Any) -> str:
    """A logging prefix: a non-empty name without ``/`` (keys are ``<prefix>/<measure>``)."""
    if not isinstance(value, str) or not value or "/" in value or value != value.strip():
        raise ValueError(f"`{name}` must be a non-empty name without '/' or surrounding spaces, got {value!r}.")
    return value


def check_layers(layers: Any) -> Any:
    """Validate a layer selection: ``"auto"``, ``"all"``, one module name or pattern, a non-empty list of
    names/patterns/module types/predicates, or a predicate ``(name, module) -> bool``.

    Example:
        >>> check_layers(123)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `layers` must be 'auto', 'all', a module name or pattern, ... got 123.
    """
    if isinstance(layers, str):
        if not layers:
            raise ValueError("`layers` must not be an empty string; use 'auto', 'all' or a module name.")
        return layers  # "auto", "all", or one module name / fnmatch pattern
    if callable(layers) and not isinstance(layers, type):
        return layers
    if isinstance(layers, (list, tuple)):
        if not layers:
            raise ValueError("`layers` must not be an empty list; use 'auto' or name at least one module.")
        for item in layers:
            is_module_type = isinstance(item, type) and issubclass(item, nn.Module)
            if not (isinstance(item, str) or is_module_type or (callable(item) and not isinstance(item, type))):
                raise ValueError(
                    "`layers` entries must be module names, fnmatch patterns, nn.Module subclasses or predicates, "
                    f"got {item!r} in {layers!r}."
                )
        return list(layers)
    raise ValueError(
        "`layers` must be 'auto', 'all', a module name or pattern, a list of module names/patterns/nn.Module types, "
        "or a predicate "
        f"(name, module) -> bool, got {layers!r}."
    )


def layers_key(layers: Any) -> str:
    """A description of a layer selection that is the same in every process (no memory addresses).

    Used in state keys: a predicate is named by its module and qualified name, so a resumed run finds its state.

    Example:
        >>> layers_key(["fc*", nn.Linear])
        "['fc*', 'torch.nn.modules.linear.Linear']"
        >>> layers_key(lambda name, module: True)
        'lightning_dynamics.config.<lambda>'
    """
    if isinstance(layers, str):
        return layers
    if isinstance(layers, (list, tuple)):
        return repr([item if isinstance(item, str) else _callable_key(item) for item in layers])
    return _callable_key(layers)


def _callable_key(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', type(function).__name__)}"


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
        history_window: compute the whole-history measures over the last this many points only (None: all).
        compute_phase_integration: also compute ``phase_integration`` (O(L^2) per sample point).
        every_n_steps: a sample point every this many optimizer steps, with the measures computed and logged at
            each; ``None``: sample by epoch.
        points_per_epoch: when sampling by epoch, sample points per epoch, evenly spread over its batches (fewer if
            the epoch has fewer batches; 1 for iterables without a length); the measures are computed and logged
            once per epoch, at its last point.
        null_surrogates: surrogates per noise floor (``<measure>_null_lo``/``_null_hi``, computed where the
            measures are logged, at most once per epoch); ``None`` turns the noise floors off.
        complexity_every_n_samples: every this many sample points also compute the opt-in complexity measures.

    Example:
        >>> DynamicsConfig(window=24).points_needed()["stability_volatility"]
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

    def __post_init__(self) -> None:
        check_choice("summary", self.summary, SUMMARY_CHOICES)
        check_choice("detrend", self.detrend, DETREND_CHOICES)
        check_choice("pad", self.pad, PAD_CHOICES)
        if not _is_int(self.window) or self.window < MIN_WINDOW:
            raise ValueError(
                f"`window` must be an integer >= {MIN_WINDOW} (DFA needs at least 3 scales of >= 2 segments), "
                f"got {self.window!r}."
            )
        check_int("volatility_window", self.volatility_window, 2)
        if self.history_window is not None and (not _is_int(self.history_window) or self.history_window < MIN_WINDOW):
            raise ValueError(
                f"`history_window` must be None or an integer >= {MIN_WINDOW} (the stability window's minimum), "
                f"got {self.history_window!r}."
            )
        weights = self.weights
        if (
            not isinstance(weights, (tuple, list))
            or len(weights) != 2
            or not all(_is_real(w) and math.isfinite(w) and w >= 0 for w in weights)
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

    def points_needed(self) -> dict[str, int]:
        """Sample points before each measure this config computes is first defined (NaN, and not logged, before).

        Read from :data:`lightning_dynamics.measure_registry.MEASURES`. With epoch sampling the measures are
        computed at each epoch's last point, so a measure appears at the first epoch end with this many points.
        """
        from lightning_dynamics.measure_registry import MEASURES

        return {name: m.points_needed(self) for name, m in MEASURES.items() if name in self.measure_names()}

    def measure_names(self) -> tuple[str, ...]:
        """The measures computed with this config: the default group, plus the complexity group when asked for."""
        from lightning_dynamics.measure_registry import measure_names

        return measure_names("default") + (measure_names("complexity") if self.complexity_every_n_samples else ())

    def logged_keys(self) -> tuple[str, ...]:
        """Every series the tracker records: the measures and, with noise floors on, their null bands."""
        from lightning_dynamics.measure_registry import null_keys

        names = self.measure_names()
        return names + (null_keys(names) if self.null_surrogates else ())

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for history files and hyper-parameter logs)."""
        out = asdict(self)
        out["weights"] = list(self.weights)
        return out
