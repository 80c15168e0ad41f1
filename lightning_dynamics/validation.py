"""One home for argument and state checks: each error names the argument, the value given and what is allowed.

Every layer of the package validates through these helpers (the settings in :mod:`lightning_dynamics.measures`,
the loop in :mod:`lightning_dynamics.tracking`, the decisions and the adapters), so the same mistake gets the same
message everywhere. No Lightning import; it imports only :mod:`lightning_dynamics.functional`'s choice check.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from torch import nn

from lightning_dynamics.functional._checks import check_choice

__all__ = [
    "MAX_TIMEOUT_S",
    "check_bool",
    "check_choice",
    "check_finite_real",
    "check_int",
    "check_layers",
    "check_prefix",
    "is_count",
    "is_int",
    "is_real",
    "layers_key",
]

# Largest timeout a process group accepts without overflowing (a year, in seconds).
MAX_TIMEOUT_S = 365 * 24 * 3600.0


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real number (``int``, ``float``, numpy scalar) that is not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    """``value`` as an int ``>= minimum`` (or None where allowed); a ValueError naming ``name`` otherwise."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value < minimum:
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
    bad = not is_real(value) or not math.isfinite(value) or (positive and value <= 0)
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
        'lightning_dynamics.validation.<lambda>'
    """
    if isinstance(layers, str):
        return layers
    if isinstance(layers, (list, tuple)):
        return repr([item if isinstance(item, str) else _callable_key(item) for item in layers])
    return _callable_key(layers)


def _callable_key(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', type(function).__name__)}"


def is_count(value: Any) -> bool:
    """A non-negative ``int`` that is not a ``bool``."""
    return is_int(value) and value >= 0
