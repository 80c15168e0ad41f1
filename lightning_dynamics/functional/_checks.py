"""Input checks shared by the functional measures (private).

Every public measure funnels its input through :func:`as_float_series` so that dtype handling and the
error messages are the same everywhere.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

_F = TypeVar("_F", bound=Callable[..., Any])
_SHAPE_CACHES: list[Any] = []


def shape_cache(maxsize: int) -> Callable[[_F], _F]:
    """``functools.lru_cache`` for small constant tensors that depend only on shapes (FFT multipliers, bases).

    Bounded, and registered so that :func:`clear_shape_caches` empties all of them (memory audits do).
    """

    def decorate(function: _F) -> _F:
        cached = functools.lru_cache(maxsize=maxsize)(function)
        _SHAPE_CACHES.append(cached)
        return cached  # type: ignore[return-value]

    return decorate


def clear_shape_caches() -> None:
    """Empty every :func:`shape_cache`."""
    for cached in _SHAPE_CACHES:
        cached.cache_clear()


class InsufficientDataWarning(UserWarning):
    """A measure returned NaN because its input is too short (or too degenerate) to define it."""


def as_float_series(x: Any, name: str = "x", min_dim: int = 1) -> Tensor:
    """Return ``x`` as a real floating tensor of at least ``min_dim`` dimensions.

    float32 and float64 are kept; half, bfloat16, integer and boolean inputs are cast to float32 (CPU FFT
    rejects half, cuFFT half needs power-of-two lengths). Complex input is rejected: every measure here is
    defined on real series.
    """
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.is_complex():
        raise ValueError(f"`{name}` must be real-valued, got dtype {x.dtype}.")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    if x.ndim < min_dim:
        raise ValueError(
            f"`{name}` must have at least {min_dim} dimension(s) ([..., L, T] for layer measures, "
            f"[..., T] for series measures), got shape {tuple(x.shape)}."
        )
    return x


# On CPU, per-layer work runs over blocks of rows of about this size, so that a block's chain of elementwise
# passes stays in cache instead of streaming the whole [L, T] history through memory once per pass (about
# 2x faster at L=1000, T=10000 on a 2-core machine). Accelerators get one block: their parallelism wants it.
CPU_BLOCK_BYTES = 4 * 2**20


def row_blocks(rows: Tensor) -> tuple[Tensor, ...]:
    """Split ``rows: [R, T]`` into consecutive blocks of rows (one block off the CPU); views, no copy."""
    if rows.device.type != "cpu" or rows.shape[0] == 0:
        return (rows,)
    per_row = max(1, rows.shape[-1] * rows.element_size())
    return rows.split(max(1, CPU_BLOCK_BYTES // per_row))


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed`` (never a bool standing in for 0/1); a ValueError naming ``name``."""
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"`{name}` must be one of {tuple(allowed)!r}, got {value!r}.")
    return value


def warn_insufficient(message: str) -> None:
    warnings.warn(message, InsufficientDataWarning, stacklevel=3)
