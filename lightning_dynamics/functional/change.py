r"""Relative change of each layer's summary: how large its recent changes are against its early-training scale.

A scale-aware convergence quantity (docs/method.md section 8). The phase and DFA measures are scale-free: a layer
whose changes shrink as it converges looks like any other noise to them. This one is not: for each layer it
divides the mean absolute change of the summary over the last ``window`` sample intervals by the mean absolute
change over the first half of the history,

.. math::

    r_l = \frac{\frac{1}{w} \sum_{t = n - w}^{n - 1} |\Delta x_l(t)|}
               {\frac{1}{\lfloor n/2 \rfloor} \sum_{t = 0}^{\lfloor n/2 \rfloor - 1} |\Delta x_l(t)|},
    \qquad \Delta x_l(t) = x_l(t + 1) - x_l(t),\ n = T - 1.

Any process with stationary increments (white noise, a random walk) gives :math:`r_l \approx 1` at every ``T``;
increments that decay as a power law :math:`t^{-\beta}` (a summary that drifts like :math:`\sqrt{t}`, as the norm
of a random walk in weight space does) give a ratio that does not shrink with ``T`` (about 0.35 for
:math:`\beta = 1/2`, since the reference is the first *half* of the history, not a fixed early window); a layer
that settles (changes decaying faster than a power law, down to a floor) gives :math:`r_l \to` floor / early scale.
In the spirit of the per-layer relative change of Ahmad et al., arXiv:2403.02473 (a layer whose representation
stops changing relative to its own scale is done training); here applied to the layer-summary history.

:func:`relative_change_test` calibrates the cross-layer median against the run's own null: the same random
permutation of the time order of the increments applied to every layer (keeps each layer's increment
distribution and the cross-layer correlation, destroys any trend in their size; the "time shuffle of the
differenced series" of docs/method.md section 8b).

No Lightning import.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import InsufficientDataWarning


def _check_history(x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor shaped [..., L, T], got {type(x).__name__}.")
    if x.dim() < 2:
        raise ValueError(f"`{name}` must have at least 2 dimensions [..., L, T], got shape {tuple(x.shape)}.")
    if x.is_complex():
        raise ValueError(f"`{name}` must be real, got dtype {x.dtype}.")
    if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point():
        x = x.float()
    return x


def _check_window(window: object) -> int:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"`window` must be an integer >= 1, got {window!r}.")
    return window


def relative_change_defined_from(window: int) -> int:
    """The fewest sample points :func:`relative_change` needs: ``2 * window + 1`` (the recent window of ``window``
    increments does not overlap the reference, the first half of the increments).

    Example:
        >>> relative_change_defined_from(5)
        11
    """
    return 2 * _check_window(window) + 1


def relative_change(x: Tensor, window: int) -> Tensor:
    r"""Per-layer relative change :math:`r_l` (module docstring): recent mean absolute change / early one.

    Args:
        x: layer-summary history ``[..., L, T]``.
        window: ``w``, the number of most recent increments (sample intervals) to average.

    Returns:
        ``[..., L]``. NaN for a layer whose reference changes are all zero or whose window holds a non-finite
        value, and for every layer (with an :class:`InsufficientDataWarning`) when ``T < 2 * window + 1``.

    Example:
        >>> t = torch.arange(41, dtype=torch.float64)
        >>> x = torch.stack([t, 1 - torch.exp(-t / 8)])  # a steady drift, and a layer that settles
        >>> relative_change(x, window=5)
        tensor([1.0000, 0.0255], dtype=torch.float64)
    """
    x = _check_history(x)
    window = _check_window(window)
    steps = x.shape[-1] - 1
    if steps + 1 < relative_change_defined_from(window):
        warnings.warn(
            f"relative_change needs at least {relative_change_defined_from(window)} sample points for window={window}, "
            f"got T={x.shape[-1]}; returning NaN.",
            InsufficientDataWarning,
            stacklevel=2,
        )
        return torch.full(x.shape[:-1], float("nan"), dtype=x.dtype, device=x.device)
    changes = (x[..., 1:] - x[..., :-1]).abs()
    recent = changes[..., steps - window :].mean(-1)
    reference = changes[..., : steps // 2].mean(-1)
    ratio = recent / reference
    undefined = ~torch.isfinite(ratio) | (reference <= 0)
    return ratio.masked_fill(undefined, float("nan"))


def median_relative_change(x: Tensor, window: int) -> Tensor:
    """Cross-layer summary of :func:`relative_change`: the median over the defined layers, ``[..., L, T] -> [...]``.

    The median, so that a run counts as settled when most layers have (a head or a normalisation layer that keeps
    moving does not veto it, one frozen layer does not decide it). NaN when no layer is defined.

    Example:
        >>> t = torch.arange(41, dtype=torch.float64)
        >>> x = torch.stack([1 - torch.exp(-t / 4), 2 - torch.exp(-t / 5), t])
        >>> round(float(median_relative_change(x, window=5)), 4)
        0.0023
    """
    return relative_change(x, window).nanmedian(dim=-1).values


class RelativeChangeTest(NamedTuple):
    """Result of :func:`relative_change_test`.

    Attributes:
        statistic: the cross-layer median relative change, ``[...]``.
        p_value: share of permutations (the observed order included) whose median is at or below the statistic.
        per_layer: :func:`relative_change`, ``[..., L]``.
    """

    statistic: Tensor
    p_value: Tensor
    per_layer: Tensor


def relative_change_test(
    x: Tensor, window: int, n_permutations: int = 199, generator: torch.Generator | None = None
) -> RelativeChangeTest:
    r"""The median relative change and its p-value under a time-shuffle null of the increments.

    Null: the increments' time order is exchangeable (stationary increments: white noise, a random walk). Each of
    ``n_permutations`` surrogates applies one random permutation of the ``T - 1`` time indices to every layer's
    increments (so the cross-layer correlation is kept) and recomputes the median relative change;
    :math:`p = (1 + \#\{\text{surrogate} \le \text{observed}\}) / (1 + n_{perm})` (Phipson & Smyth 2010,
    Stat Appl Genet Mol Biol 9:39). The smallest possible ``p`` is ``1 / (1 + n_permutations)``.
    Cost: two ``[..., L, T-1] x [T-1, n_permutations]`` products.

    Args:
        x: history ``[..., L, T]``.
        window: as :func:`relative_change`.
        n_permutations: surrogates (>= 1).
        generator: for reproducible permutations (on the CPU).

    Example:
        >>> t = torch.arange(61, dtype=torch.float64)
        >>> settled = torch.stack([s * (1 - torch.exp(-t / 5)) for s in (1.0, 2.0, 3.0)])
        >>> result = relative_change_test(settled, 5, 99, torch.Generator().manual_seed(0))
        >>> float(result.p_value)
        0.01
    """
    x = _check_history(x)
    window = _check_window(window)
    if not isinstance(n_permutations, int) or isinstance(n_permutations, bool) or n_permutations < 1:
        raise ValueError(f"`n_permutations` must be an integer >= 1, got {n_permutations!r}.")
    per_layer = relative_change(x, window)
    statistic = per_layer.nanmedian(dim=-1).values
    steps = x.shape[-1] - 1
    if steps + 1 < relative_change_defined_from(window):
        return RelativeChangeTest(statistic, torch.full_like(statistic, float("nan")), per_layer)
    changes = (x[..., 1:] - x[..., :-1]).abs()
    defined = torch.isfinite(per_layer)
    changes = changes.masked_fill(~defined.unsqueeze(-1) | ~torch.isfinite(changes), 0.0)
    order = torch.stack([torch.randperm(steps, generator=generator) for _ in range(n_permutations)])  # [P, n]
    positions = torch.empty_like(order)
    positions.scatter_(1, order, torch.arange(steps).expand(n_permutations, steps))  # where each index lands
    positions = positions.to(x.device)
    recent_weight = (positions >= steps - window).to(x.dtype) / window  # [P, n]
    reference_weight = (positions < steps // 2).to(x.dtype) / (steps // 2)
    recent = changes @ recent_weight.T  # [..., L, P]
    reference = changes @ reference_weight.T
    ratio = (recent / reference).masked_fill(~defined.unsqueeze(-1) | (reference <= 0), float("nan"))
    null = ratio.nanmedian(dim=-2).values  # [..., P]
    at_or_below = (null <= statistic.unsqueeze(-1)).sum(-1)
    p_value = (1 + at_or_below).to(x.dtype) / (1 + n_permutations)
    p_value = p_value.masked_fill(torch.isnan(statistic), float("nan"))
    return RelativeChangeTest(statistic, p_value, per_layer)
