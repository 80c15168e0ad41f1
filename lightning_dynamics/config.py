"""One validated configuration of the measures, shared by the tracker, the callbacks and the benchmarks.

:class:`DynamicsConfig` is frozen: build it once (from typed ``__init__`` arguments in the Lightning and Fabric
adapters, or directly), and every part that computes a measure reads the same values. All validation of the
measures' settings lives here; each error names the argument, the value given and what is allowed.
Defaults are those of docs/method.md (sections 0, 1, 2, 5 and 6) and of :mod:`lightning_dynamics.functional`.
No Lightning import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from lightning_dynamics.functional.detrend import DETREND_CHOICES
from lightning_dynamics.functional.hilbert import PAD_CHOICES
from lightning_dynamics.functional.stability import DEFAULT_VOLATILITY_WINDOW, DEFAULT_WINDOW

SUMMARY_CHOICES = ("rms", "mean", "abs_mean", "std")
# The integration map of Ugail & Howard (arXiv:2512.10972): H_eff optimum and width (docs/method.md section 5).
DEFAULT_H_OPT = 0.70
DEFAULT_SIGMA = 0.15
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


def check_finite_real(name: str, value: Any, positive: bool = False) -> float:
    """``value`` as a finite float (``> 0`` if ``positive``); a ValueError naming ``name`` otherwise."""
    if not _is_real(value) or not math.isfinite(value) or (positive and value <= 0):
        allowed = "a finite number" + (" > 0" if positive else "")
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices or isinstance(value, bool):
        raise ValueError(f"`{name}` must be one of {tuple(choices)!r}, got {value!r}.")
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

    Example:
        >>> DynamicsConfig(window=24).points_needed()["stability_volatility"]
        28
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
    weights: tuple[float, float] = (0.5, 0.5)
    h_opt: float = DEFAULT_H_OPT
    sigma: float = DEFAULT_SIGMA
    history_window: int | None = None
    compute_phase_integration: bool = True

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> DynamicsConfig:
        """The config of an adapter's typed ``__init__`` arguments (its ``locals()``): the fields, by name.

        The adapters keep explicit typed signatures (LightningCLI reads them) and build their config here, so
        a new field is validated in one place.
        """
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in arguments]
        if missing:
            raise TypeError(f"DynamicsConfig.from_arguments: no value for {missing}.")
        return cls(**{name: arguments[name] for name in names})

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
        object.__setattr__(self, "h_opt", check_finite_real("h_opt", self.h_opt))
        object.__setattr__(self, "sigma", check_finite_real("sigma", self.sigma, positive=True))
        if not isinstance(self.compute_phase_integration, bool):
            raise ValueError(
                f"`compute_phase_integration` must be True or False, got {self.compute_phase_integration!r}."
            )

    def points_needed(self) -> dict[str, int]:
        """Sample points before each logged measure is first defined (NaN, and not logged, before)."""
        from lightning_dynamics.functional import min_points

        needed = dict(min_points(self.detrend))
        needed["integration_alpha"] = needed["integration"]
        needed["stability_index"] = self.window
        needed["stability_volatility"] = self.window + self.volatility_window - 1
        return needed

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for history files and hyper-parameter logs)."""
        out = asdict(self)
        out["weights"] = list(self.weights)
        return out
