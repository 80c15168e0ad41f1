"""Per-layer helpers shared by the cross-layer measures (private).

The rule for layers (docs/method.md sections 1 and 3): a cross-layer measure (Kuramoto order parameter,
metastability, synchrony, phase integration) compares layers with each other, so it needs at least
:data:`MIN_CROSS_LAYERS` valid layers; with fewer it is NaN, never 0 or 1. A per-layer average
(integration, the mean DFA exponent) needs one valid layer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_dynamics.functional.detrend import detrend as detrend_series
from lightning_dynamics.functional.hilbert import unit_phasors

# Phases of fewer detrended points than this carry no usable oscillation.
MIN_PHASE_POINTS = 4
# A measure of coupling between layers needs two of them.
MIN_CROSS_LAYERS = 2


def refuse_grad(x: Tensor, measure: str) -> None:
    """Raise for inputs that require gradients in measures that are not differentiable."""
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"`{measure}` is not differentiable (its graph components are discrete); got an input with "
            "requires_grad=True. Pass `x.detach()`, or use metastability/synchrony/integration/stability_index, "
            "which support autograd."
        )


def masked_layer_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values [..., L]`` over layers where ``valid`` and the value is finite; NaN if none."""
    usable = valid & torch.isfinite(values)
    weight = usable.to(values.dtype)
    total = torch.where(usable, values, torch.zeros_like(values)).sum(dim=-1)
    return total / weight.sum(dim=-1)


def order_parameter_from_phasors(cos: Tensor, sin: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""Kuramoto :math:`R(t)` ``[..., T]`` from :math:`(\cos\varphi, \sin\varphi)` ``[..., L, T]``.

    The masked layer means are one matrix-vector product each: a single pass over the phasors. Where fewer
    than :data:`MIN_CROSS_LAYERS` layers are valid, ``R`` is NaN (one layer is trivially "in phase" with
    itself; no layer has no phase at all).
    """
    if valid is None:
        valid = torch.ones(cos.shape[:-1], dtype=torch.bool, device=cos.device)
    weight = valid.to(cos.dtype)
    n_valid = weight.sum(dim=-1, keepdim=True)
    enough = n_valid >= MIN_CROSS_LAYERS
    weight = torch.where(enough, weight / n_valid.clamp(min=1), torch.zeros_like(weight))
    weight = weight.unsqueeze(-2)  # [..., 1, L]
    mean_cos = (weight @ cos).squeeze(-2)
    mean_sin = (weight @ sin).squeeze(-2)
    r = torch.hypot(mean_cos, mean_sin).clamp(max=1.0)
    return torch.where(enough, r, torch.full_like(r, float("nan")))


def layer_phasors(
    x: Tensor, detrend_method: str | None = "diff", pad: str | None = "reflect"
) -> tuple[Tensor, Tensor, Tensor]:
    """Detrend ``x: [..., L, T]`` and return ``(cos [..., L, T'], sin [..., L, T'], valid [..., L])``."""
    d = detrend_series(x, detrend_method)
    cos, sin = unit_phasors(d.series, pad=pad)
    return cos, sin, d.valid


def few_layers_message(measure: str, n_valid: Tensor, n_layers: int) -> str | None:
    """Why ``measure`` is NaN for some batch elements (fewer than two valid layers), or ``None``.

    One host synchronisation (a sample point's measures already need one).
    """
    few = n_valid < MIN_CROSS_LAYERS
    if n_layers >= MIN_CROSS_LAYERS and not bool(few.any()):
        return None
    where = "" if few.numel() <= 1 else f" in {int(few.sum())} of {few.numel()} batch elements"
    least = int(n_valid.min()) if n_valid.numel() else 0
    return (
        f"{measure}: comparing layers needs at least {MIN_CROSS_LAYERS} valid layers; "
        f"{least} of {n_layers} valid{where} (the others are excluded: constant, non-finite or too many missing "
        "points)"
    )
