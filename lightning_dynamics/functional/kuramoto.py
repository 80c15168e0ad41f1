"""Kuramoto order parameter, metastability and synchrony across layers (METHOD.md section 3).

References: Kuramoto, Y. (1984), Chemical Oscillations, Waves, and Turbulence, Springer; Shanahan, M.
(2010), "Metastable chimera states in community-structured oscillator networks", Chaos 20:013108
(metastability as the std of the order parameter); La Quang, Ugail, Howard et al., arXiv:2604.09716.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient
from lightning_dynamics.functional.detrend import detrend as detrend_series
from lightning_dynamics.functional.detrend import detrended_length
from lightning_dynamics.functional.hilbert import unit_phasors

# Phases of fewer detrended points than this carry no usable oscillation.
MIN_PHASE_POINTS = 4


def kuramoto_order_parameter(phases: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""Kuramoto order parameter :math:`R(t)` of ``L`` phase series.

    .. math:: R(t) = \Big|\frac{1}{L}\sum_{l=1}^{L} e^{i\varphi_l(t)}\Big| \in [0, 1]

    Args:
        phases: ``[..., L, T]`` phases in radians.
        valid: optional ``[..., L]`` boolean mask; only ``True`` layers enter the mean. Where no layer is
            valid the result is NaN.

    Returns:
        ``[..., T]``.

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
    return order_parameter_from_phasors(torch.cos(phases), torch.sin(phases), valid)


def order_parameter_from_phasors(cos: Tensor, sin: Tensor, valid: Tensor | None = None) -> Tensor:
    r""":func:`kuramoto_order_parameter` from :math:`(\cos\varphi, \sin\varphi)` (see :func:`unit_phasors`).

    The masked layer means are one matrix-vector product each: a single pass over the phasors.
    """
    if valid is None:
        weight = torch.full(cos.shape[:-1], 1.0 / cos.shape[-2], dtype=cos.dtype, device=cos.device)
    else:
        weight = valid.to(cos.dtype)
        weight = weight / weight.sum(dim=-1, keepdim=True)
    weight = weight.unsqueeze(-2)  # [..., 1, L]
    mean_cos = (weight @ cos).squeeze(-2)
    mean_sin = (weight @ sin).squeeze(-2)
    return torch.hypot(mean_cos, mean_sin).clamp(max=1.0)


def layer_phasors(
    x: Tensor, detrend_method: str | None = "diff", pad: str | None = "reflect"
) -> tuple[Tensor, Tensor, Tensor]:
    """Detrend ``x: [..., L, T]`` and return ``(cos [..., L, T'], sin [..., L, T'], valid [..., L])``."""
    d = detrend_series(x, detrend_method)
    cos, sin = unit_phasors(d.series, pad=pad)
    return cos, sin, d.valid


def _order_parameter(x: Tensor, detrend_method: str | None, pad: str | None, measure: str) -> Tensor | None:
    x = as_float_series(x, min_dim=2)
    n = detrended_length(x.shape[-1], detrend_method)
    if n < MIN_PHASE_POINTS:
        warn_insufficient(
            f"{measure} needs at least {MIN_PHASE_POINTS} points after detrend={detrend_method!r}; "
            f"the series has T={x.shape[-1]} (need T >= {MIN_PHASE_POINTS + (x.shape[-1] - n)}). Returning NaN."
        )
        return None
    return order_parameter_from_phasors(*layer_phasors(x, detrend_method, pad))


def metastability(x: Tensor, detrend: str | None = "diff", pad: str | None = "reflect") -> Tensor:
    r"""Metastability: the temporal std of the Kuramoto order parameter of the layers' Hilbert phases.

    .. math:: M = \operatorname{std}_t R(t)\ \ (\text{population std})

    Phase-locked layers give ``M = 0``; ``L`` independent white-noise layers give a finite-size floor
    ``M > 0`` (12 layers: about 0.15); compare with :func:`surrogate_test` rather than bare. Layers with
    zero variance or non-finite values are excluded (see :func:`detrend`); if none is left the result is NaN.

    Args:
        x: ``[..., L, T]`` layer series (layers as channels, sample points as time).
        detrend: preprocessing, see :func:`detrend`.
        pad: edge handling of the Hilbert transform, see :func:`instantaneous_phase`.

    Returns:
        ``[...]``; NaN with an :class:`InsufficientDataWarning` when the series is too short.

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
