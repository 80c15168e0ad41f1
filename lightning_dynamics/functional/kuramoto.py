"""Kuramoto order parameter, metastability and synchrony across layers (docs/method.md section 3).

References: Kuramoto, Y. (1984), Chemical Oscillations, Waves, and Turbulence, Springer; Shanahan, M.
(2010), "Metastable chimera states in community-structured oscillator networks", Chaos 20:013108
(metastability as the std of the order parameter); La Quang, Ugail, Howard et al., arXiv:2604.09716.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient
from lightning_dynamics.functional._layers import (
    MIN_PHASE_POINTS,
    few_layers_message,
    layer_phasors,
    order_parameter_from_phasors,
)
from lightning_dynamics.functional.detrend import detrended_length

__all__ = ["MIN_PHASE_POINTS", "kuramoto_order_parameter", "metastability", "synchrony"]


def kuramoto_order_parameter(phases: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""Kuramoto order parameter :math:`R(t)` of ``L`` phase series.

    .. math:: R(t) = \Big|\frac{1}{L}\sum_{l=1}^{L} e^{i\varphi_l(t)}\Big| \in [0, 1]

    Args:
        phases: ``[..., L, T]`` phases in radians.
        valid: optional ``[..., L]`` boolean mask; only ``True`` layers enter the mean.

    Returns:
        ``[..., T]``; NaN, with an :class:`InsufficientDataWarning`, where fewer than two layers are valid
        (``R`` compares layers: one layer is trivially in phase with itself, zero layers have no phase).

    Example:
        >>> import torch
        >>> locked = torch.zeros(3, 5)  # three identical phases
        >>> kuramoto_order_parameter(locked)
        tensor([1., 1., 1., 1., 1.])
        >>> spread = (2 * torch.pi * torch.arange(4.0) / 4).unsqueeze(-1).expand(4, 5)
        >>> kuramoto_order_parameter(spread).abs().max() < 1e-6  # equally spaced phases cancel
        tensor(True)
    """
    phases = as_float_series(phases, name="phases", min_dim=2)
    if valid is None:
        valid = torch.ones(phases.shape[:-1], dtype=torch.bool, device=phases.device)
    elif valid.shape != phases.shape[:-1]:
        raise ValueError(
            f"`valid` must have the shape [..., L] = {tuple(phases.shape[:-1])} of `phases` without time, "
            f"got {tuple(valid.shape)}."
        )
    _warn_few_layers("kuramoto_order_parameter", valid)
    return order_parameter_from_phasors(torch.cos(phases), torch.sin(phases), valid)


def _warn_few_layers(measure: str, valid: Tensor) -> None:
    message = few_layers_message(measure, valid.sum(dim=-1), valid.shape[-1])
    if message is not None:
        warn_insufficient(f"{message}. Returning NaN there.")


def _order_parameter(x: Tensor, detrend_method: str | None, pad: str | None, measure: str) -> Tensor | None:
    x = as_float_series(x, min_dim=2)
    n = detrended_length(x.shape[-1], detrend_method)
    if n < MIN_PHASE_POINTS:
        warn_insufficient(
            f"{measure} needs at least {MIN_PHASE_POINTS} points after detrend={detrend_method!r}; "
            f"the series has T={x.shape[-1]} (need T >= {MIN_PHASE_POINTS + (x.shape[-1] - n)}). Returning NaN."
        )
        return None
    cos, sin, valid = layer_phasors(x, detrend_method, pad)
    _warn_few_layers(measure, valid)
    return order_parameter_from_phasors(cos, sin, valid)


def metastability(x: Tensor, detrend: str | None = "diff", pad: str | None = "reflect") -> Tensor:
    r"""Metastability: the temporal std of the Kuramoto order parameter of the layers' Hilbert phases.

    .. math:: M = \operatorname{std}_t R(t)\ \ (\text{population std})

    Phase-locked layers give ``M = 0``; ``L`` independent white-noise layers give a finite-size floor
    ``M > 0`` (12 layers: about 0.15); compare with :func:`surrogate_test` rather than bare. Layers with
    zero variance or too many missing points are excluded (see :func:`detrend`); with fewer than two valid
    layers the result is NaN with an :class:`InsufficientDataWarning` (docs/method.md section 3).

    Args:
        x: ``[..., L, T]`` layer series (layers as channels, sample points as time).
        detrend: preprocessing, see :func:`detrend`.
        pad: edge handling of the Hilbert transform, see :func:`instantaneous_phase`.

    Returns:
        ``[...]``; NaN with an :class:`InsufficientDataWarning` when the series is too short or fewer than
        two layers are valid.

    Example:
        >>> import torch
        >>> t = torch.arange(200, dtype=torch.float64)
        >>> locked = torch.stack([torch.sin(0.3 * t), 2 * torch.sin(0.3 * t)])  # same phase
        >>> float(metastability(locked, detrend=None)) < 1e-6
        True
    """
    r = _order_parameter(x, detrend, pad, "metastability")
    if r is None:
        return _nan_like_batch(x)
    return r.std(dim=-1, correction=0)


def synchrony(x: Tensor, detrend: str | None = "diff", pad: str | None = "reflect") -> Tensor:
    r"""Synchrony: the temporal mean of the Kuramoto order parameter, :math:`\langle R(t) \rangle_t \in [0, 1]`.

    Args and exclusions as :func:`metastability`.

    Example:
        >>> import torch
        >>> t = torch.arange(200, dtype=torch.float64)
        >>> locked = torch.stack([torch.sin(0.3 * t), torch.sin(0.3 * t) + 1.0])
        >>> round(float(synchrony(locked, detrend="mean")), 6)
        1.0
    """
    r = _order_parameter(x, detrend, pad, "synchrony")
    if r is None:
        return _nan_like_batch(x)
    return r.mean(dim=-1)


def _nan_like_batch(x: Tensor) -> Tensor:
    x = as_float_series(x, min_dim=2)
    return torch.full(x.shape[:-2], float("nan"), dtype=x.dtype, device=x.device)
