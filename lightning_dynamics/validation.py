"""One home for argument and state checks: each error names the argument, the value given and what is allowed.

Every layer of the package validates through these helpers (the settings in :mod:`lightning_dynamics.measures`,
the loop in :mod:`lightning_dynamics.tracking`, the decisions and the adapters), so the same mistake gets the same
message everywhere. No Lightning import; it imports only :mod:`lightning_dynamics.functional`'s choice check.

Checkpoint states are checked against a declared schema (:func:`check_state`): a dict that maps each field to its
kind (:class:`Int`, :class:`Real`, :class:`Bool`, :class:`Str`, :class:`Choice`, :class:`Equals`, :class:`TensorOf`,
:class:`ListOf`, :class:`DictOf`, :class:`Series`, a nested :class:`StateSchema`; :class:`OrNone` and
:class:`Default` for fields that may be None or absent). Every field is checked before the caller changes
anything, and an error reads ``<where>: `<field>` must be <what is allowed>, got <the value>.``, the field named
by its dotted path, as torchmetrics' ``add_state`` declares a metric's state once for everything that reads it.

Example:
    >>> schema = {"wait_count": Int(0), "history": StateSchema({"values": TensorOf(ndim=2, floating=True)})}
    >>> check_state({"wait_count": 2, "history": {"values": [1.0]}}, schema, "MyRule state")
    Traceback (most recent call last):
    ...
    ValueError: MyRule state: `history.values` must be a floating-point tensor with 2 dimensions, got [1.0].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamics.functional._checks import check_choice

__all__ = [
    "ANY_DICT",
    "MAX_TIMEOUT_S",
    "Bool",
    "Choice",
    "Constrained",
    "Default",
    "DictOf",
    "Equals",
    "Int",
    "Kind",
    "ListOf",
    "OrNone",
    "Real",
    "Series",
    "StateSchema",
    "Str",
    "TensorOf",
    "check_bool",
    "check_choice",
    "check_ddp_timeout",
    "check_finite_real",
    "check_int",
    "check_layers",
    "check_path",
    "check_prefix",
    "check_state",
    "check_value",
    "field_error",
    "is_count",
    "is_int",
    "is_real",
    "layers_key",
    "shown",
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
    value = check_value(name, value, OrNone(Int(minimum)) if allow_none else Int(minimum))
    return None if value is None else int(value)


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
    kind = Real(minimum, maximum, positive)
    value = check_value(name, value, OrNone(kind) if allow_none else kind)
    return None if value is None else float(value)


def check_ddp_timeout(value: Any) -> float | None:
    """A process-group timeout in seconds, finite, in ``(0, MAX_TIMEOUT_S]``, or None (the framework's own timeout).

    Example:
        >>> check_ddp_timeout(0)
        Traceback (most recent call last):
        ...
        ValueError: `ddp_timeout` must be a finite number > 0 in [-inf, 31536000.0] or None, got 0.
    """
    return check_finite_real("ddp_timeout", value, positive=True, maximum=MAX_TIMEOUT_S, allow_none=True)


def check_path(name: str, value: Any) -> str | Path | None:
    """A file-system path (``str`` or ``Path``) or None; a ValueError naming ``name`` otherwise."""
    if value is not None and not isinstance(value, (str, Path)):
        raise ValueError(f"`{name}` must be a path or None, got {value!r}.")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; a ValueError naming ``name`` otherwise (no truthiness).

    Example:
        >>> check_bool("save_history", "x")
        Traceback (most recent call last):
        ...
        ValueError: `save_history` must be True or False, got 'x'.
    """
    return bool(check_value(name, value, Bool()))


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


# ---------------------------------------------------------------------------------------------- state schemas


def shown(value: Any) -> str:
    """A value as an error message shows it: a tensor by its dtype and shape, anything else by its ``repr`` (at most
    80 characters).

    Example:
        >>> shown(torch.zeros(2, 3))
        'a torch.float32 tensor of shape (2, 3)'
        >>> len(shown(list(range(100))))
        80
    """
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def field_error(where: str, field: str, complaint: str) -> ValueError:
    """The error of one field: ``<where>: `<field>` <complaint>.`` (without ``where``: an argument's error)."""
    if not field:
        return ValueError(f"{where} {complaint}.")
    return ValueError(f"{where}: `{field}` {complaint}." if where else f"`{field}` {complaint}.")


class Kind:
    """What one field of a state may hold: :attr:`allowed` and :attr:`many` say it in words (one value, a list of
    them), :meth:`accepts` tests the value itself and, for containers, :meth:`content_problem` what is inside.

    A list or dict of plain values names a bad entry in its own message (``found -1 at index 2``); a list or dict
    of containers (:attr:`container`) lets the entry's message name it by its path (``metrics['loss']``).
    """

    allowed = "anything"
    many = "anything"
    container = False

    def accepts(self, value: Any) -> bool:
        return True

    def content_problem(self, value: Any, field: str) -> tuple[str, str] | None:
        """The first problem inside an accepted value, as ``(field, complaint)``; None if there is none."""
        return None

    def problem(self, value: Any, field: str) -> tuple[str, str] | None:
        """The first problem of ``value``, as ``(field, complaint)`` with ``field`` a dotted path; None if valid."""
        if not self.accepts(value):
            return field, f"must be {self.allowed}, got {shown(value)}"
        return self.content_problem(value, field)


class Int(Kind):
    """An ``int`` (not a ``bool``) in ``[minimum, maximum]``."""

    def __init__(self, minimum: int = 0, maximum: int | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum
        if maximum is None:
            self.allowed = f"an integer >= {minimum}"
            self.many = "non-negative integers" if minimum == 0 else f"integers >= {minimum}"
        else:
            self.allowed, self.many = f"an integer in [{minimum}, {maximum}]", f"integers in [{minimum}, {maximum}]"

    def accepts(self, value: Any) -> bool:
        return is_int(value) and value >= self.minimum and (self.maximum is None or value <= self.maximum)


class Real(Kind):
    """A real number (not a ``bool``): finite, ``> 0`` if ``positive``, within ``[minimum, maximum]``; NaN,
    ``-inf`` and ``inf`` only where allowed (all three: any number)."""

    def __init__(
        self,
        minimum: float | None = None,
        maximum: float | None = None,
        positive: bool = False,
        nan: bool = False,
        neg_inf: bool = False,
        pos_inf: bool = False,
    ) -> None:
        self.minimum, self.maximum, self.positive = minimum, maximum, positive
        self.nan, self.infinities = nan, [v for v, ok in ((-math.inf, neg_inf), (math.inf, pos_inf)) if ok]
        if nan and neg_inf and pos_inf:
            self.allowed, self.many = "a number", "numbers"
            return
        bounds = " > 0" if positive else ""
        if minimum is not None or maximum is not None:
            bounds += f" in [{'-inf' if minimum is None else minimum}, {'inf' if maximum is None else maximum}]"
        bounds += "".join(f" or {v}" for v, ok in (("NaN", nan), ("-inf", neg_inf), ("inf", pos_inf)) if ok)
        self.allowed, self.many = f"a finite number{bounds}", f"finite numbers{bounds}"

    def accepts(self, value: Any) -> bool:
        if not is_real(value):
            return False
        if math.isnan(value):
            return self.nan
        if math.isinf(value):
            return value in self.infinities
        return (
            (not self.positive or value > 0)
            and (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
        )


class Bool(Kind):
    """``True`` or ``False`` (no truthiness: ``0``, ``1`` and ``None`` are refused)."""

    allowed, many = "True or False", "booleans"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


class Str(Kind):
    """A string."""

    allowed, many = "a string", "strings"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)


class Choice(Kind):
    """One of a few values (never a ``bool`` standing in for ``0`` or ``1``)."""

    def __init__(self, options: tuple[Any, ...] | list[Any]) -> None:
        self.options = tuple(options)
        self.allowed, self.many = f"one of {list(self.options)!r}", f"values in {list(self.options)!r}"

    def accepts(self, value: Any) -> bool:
        return not isinstance(value, (bool, Tensor)) and any(_equal(value, option) for option in self.options)


class Equals(Kind):
    """Exactly ``expected`` (a setting the state must have been saved with); ``why`` says where it comes from."""

    def __init__(self, expected: Any, why: str | None = None) -> None:
        self.expected = expected
        self.allowed = self.many = shown(expected) + (f" ({why})" if why else "")

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool) == isinstance(self.expected, bool) and _equal(value, self.expected)


class TensorOf(Kind):
    """A tensor: floating point, finite, of a given shape or number of dimensions, where asked."""

    def __init__(
        self,
        shape: tuple[int, ...] | None = None,
        ndim: int | None = None,
        floating: bool = False,
        finite: bool = False,
    ) -> None:
        self.shape, self.ndim, self.floating, self.finite = (
            None if shape is None else tuple(shape),
            ndim,
            floating,
            finite,
        )
        adjectives = ("finite " if finite else "") + ("floating-point " if floating else "")
        size = f" of shape {self.shape}" if self.shape is not None else f" with {ndim} dimensions" if ndim else ""
        self.allowed, self.many = f"a {adjectives}tensor{size}", f"{adjectives}tensors{size}"

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, Tensor)
            and (value.is_floating_point() or not self.floating)
            and (self.shape is None or tuple(value.shape) == self.shape)
            and (self.ndim is None or value.ndim == self.ndim)
            and (not self.finite or bool(value.isfinite().all()))
        )


class OrNone(Kind):
    """``kind``, or None."""

    def __init__(self, kind: Kind) -> None:
        self.kind, self.container = kind, kind.container
        self.allowed, self.many = f"{kind.allowed} or None", f"{kind.many} or None"

    def accepts(self, value: Any) -> bool:
        return value is None or self.kind.accepts(value)

    def content_problem(self, value: Any, field: str) -> tuple[str, str] | None:
        return None if value is None else self.kind.content_problem(value, field)


class Default(Kind):
    """A field of ``kind`` that may be absent (states saved before it existed): it reads ``value`` then."""

    def __init__(self, kind: Kind, value: Any) -> None:
        self.kind, self.default, self.container = kind, value, kind.container
        self.allowed, self.many = kind.allowed, kind.many

    def problem(self, value: Any, field: str) -> tuple[str, str] | None:
        return self.kind.problem(value, field)


class Constrained(Kind):
    """``kind`` with a condition on the whole value, said in words by ``allowed`` (e.g. sorted indices)."""

    def __init__(self, kind: Kind, predicate: Callable[[Any], bool], allowed: str) -> None:
        self.kind, self.predicate = kind, predicate
        self.allowed = self.many = allowed

    def accepts(self, value: Any) -> bool:
        return self.kind.problem(value, "") is None and bool(self.predicate(value))


class ListOf(Kind):
    """A list (or tuple) of ``item``: ``length`` of them where given (``each``: what one entry stands for)."""

    def __init__(self, item: Kind, length: int | None = None, each: str | None = None) -> None:
        self.item, self.length = item, length
        if length is None:
            self.allowed = f"a list of {item.many}"
        else:
            self.allowed = f"{length} {item.many}" + (f" (one entry per {each})" if each else "")
        self.many = f"lists of {item.many}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and (self.length is None or len(value) == self.length)

    container = True

    def content_problem(self, value: Any, field: str) -> tuple[str, str] | None:
        for index, item in enumerate(value):
            problem = self.item.problem(item, f"{field}[{index}]")
            if problem is not None:
                found = f"must be {self.allowed}, found {shown(item)} at index {index}"
                return problem if self.item.container else (field, found)
        return None


class DictOf(Kind):
    """A dict from strings to ``value``; a bad entry is named ``field['key']``."""

    def __init__(self, value: Kind) -> None:
        self.value = value
        self.allowed, self.many = f"a dict of {value.many}", f"dicts of {value.many}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping)

    container = True

    def content_problem(self, value: Any, field: str) -> tuple[str, str] | None:
        for key, item in value.items():
            if not isinstance(key, str):
                return field, f"must have string keys, found {key!r}"
            problem = self.value.problem(item, f"{field}[{key!r}]")
            if problem is not None:
                found = f"must be {self.allowed}, found {shown(item)} at key {key!r}"
                return problem if self.value.container else (field, found)
        return None


class Series(Kind):
    """``length`` real numbers, one per ``each``: a list or tuple of numbers (NaN allowed) or a 1-d real tensor."""

    container = True

    def __init__(self, length: int, each: str = "sample point") -> None:
        self.length, self.each = length, each
        self.allowed = f"a list or 1-d real tensor of {length} numbers (one per {each})"
        self.many = f"series of {length} numbers (one per {each})"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, Tensor):
            return value.ndim == 1 and not value.is_complex() and value.dtype != torch.bool
        return isinstance(value, (list, tuple))

    def content_problem(self, value: Any, field: str) -> tuple[str, str] | None:
        if not isinstance(value, Tensor):
            bad = next((v for v in value if not is_real(v)), _NOTHING)
            if bad is not _NOTHING:
                return field, f"must hold numbers, found {shown(bad)}"
        if len(value) != self.length:
            return field, f"has {len(value)} values for {self.length} {self.each}s"
        return None


class StateSchema(Kind):
    """A dict with the declared ``fields`` (each mapped to its kind), and, if ``closed``, no other key.

    Fields are checked in their declared order; the first problem is reported, by its dotted path.
    """

    container = True

    def __init__(self, fields: Mapping[str, Kind], closed: bool = False) -> None:
        self.fields, self.closed = dict(fields), closed
        self.keys = ", ".join(self.fields)
        self.allowed = f"a dict with keys {self.keys}" if self.fields else "a dict"
        self.many = f"dicts with keys {self.keys}" if self.fields else "dicts"

    def problem(self, value: Any, field: str) -> tuple[str, str] | None:
        if not isinstance(value, Mapping):
            return field, f"must be {self.allowed}; got {type(value).__name__}, not a dict"
        return self.content_problem(value, field)

    def content_problem(self, value: Any, field: str) -> tuple[str, str] | None:
        path = f"{field}." if field else ""
        missing = [k for k, kind in self.fields.items() if k not in value and not isinstance(kind, Default)]
        if missing:
            names = ", ".join(f"`{path}{k}`" for k in missing)
            return "", f"lacks {names}; expected keys {self.keys}, got keys {sorted(value, key=str)}"
        extra = sorted(set(value) - set(self.fields), key=str) if self.closed else []
        if extra:
            return field, f"has unexpected keys {extra}; expected keys {self.keys}"
        for key, kind in self.fields.items():
            if key in value:
                problem = kind.problem(value[key], f"{path}{key}")
                if problem is not None:
                    return problem
        return None

    def values(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The declared fields of a valid ``state``, absent :class:`Default` fields at their default."""
        return {k: state[k] if k in state else getattr(kind, "default", None) for k, kind in self.fields.items()}


#: Any dict: a field whose own loader checks what is inside.
ANY_DICT = StateSchema({})


def check_state(state: Any, schema: StateSchema | Mapping[str, Kind], where: str, field: str = "") -> dict[str, Any]:
    """Check every field of ``state`` against ``schema``; its declared fields (defaults filled in) if all are valid.

    Args:
        state: the state to check (anything: a non-dict is refused).
        schema: a :class:`StateSchema`, or the mapping ``{field: kind}`` of one (other keys are not looked at).
        where: how the message names the state, e.g. ``"RelativeChangeRule state"``.
        field: the state's own name when it is a field of a larger state (messages then name ``field.<key>``).

    Raises:
        ValueError: ``<where>: `<field>` must be <allowed>, got <value>.`` for the first invalid field, or
            ``<where> lacks `<field>`; ...`` when required fields are missing.

    Example:
        >>> schema = {"counts": ListOf(Int(0), length=2, each="layer"), "shift": Default(Real(), 0.0)}
        >>> check_state({"counts": [3, 4]}, schema, "sums")
        {'counts': [3, 4], 'shift': 0.0}
        >>> check_state({"counts": [3, -1]}, schema, "sums")
        Traceback (most recent call last):
        ...
        ValueError: sums: `counts` must be 2 non-negative integers (one entry per layer), found -1 at index 1.
    """
    schema = schema if isinstance(schema, StateSchema) else StateSchema(schema)
    problem = schema.problem(state, field)
    if problem is not None:
        raise field_error(where, *problem)
    return schema.values(state)


def check_value(name: str, value: Any, kind: Kind, where: str = "") -> Any:
    """``value`` if it is of ``kind``; a ValueError naming ``name`` (and ``where``), the value and what is allowed.

    Example:
        >>> check_value("lag", 0, Int(1))
        Traceback (most recent call last):
        ...
        ValueError: `lag` must be an integer >= 1, got 0.
    """
    problem = kind.problem(value, name)
    if problem is not None:
        raise field_error(where, *problem)
    return value


_NOTHING = object()


def _equal(value: Any, expected: Any) -> bool:
    """``value == expected`` as one bool; False where the comparison itself fails (e.g. tensors against lists)."""
    try:
        return bool(value == expected)
    except (RuntimeError, TypeError, ValueError):
        return False
