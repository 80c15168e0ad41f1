"""Detrended fluctuation analysis, batched over series (docs/method.md section 4).

Reference: Peng, C.-K. et al. (1994), "Mosaic organization of DNA nucleotides", Phys. Rev. E 49:1685;
order-q detrending after Kantelhardt, J. W. et al. (2001), "Detecting long-range correlations with
detrended fluctuation analysis", Physica A 295:441-454. Non-overlapping segments cut from the start, as
``nolds.dfa(overlap=False)`` and ``antropy.detrended_fluctuation`` do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, row_blocks, shape_cache, warn_insufficient
from lightning_dynamics.functional._least_squares import log_log_slope

MIN_SCALE = 4
N_DEFAULT_SCALES = 10
MIN_SCALES = 3


def dfa_scales(n: int, min_scale: int = MIN_SCALE, n_scales: int = N_DEFAULT_SCALES) -> list[int]:
    """Default DFA scales for a series of ``n`` points.

    ``unique(round(logspace(log10 min_scale, log10 floor(n / 2), n_scales)))``: integers ``>= min_scale``,
    each leaving at least two non-overlapping segments. Fewer than three scales (``n < 12``) means DFA is not
    defined for this length.

    Example:
        >>> dfa_scales(64)
        [4, 5, 6, 8, 10, 13, 16, 20, 25, 32]
        >>> dfa_scales(10)
        [4, 5]
    """
    top = n // 2
    if top < min_scale:
        return []
    grid = np.round(np.logspace(np.log10(min_scale), np.log10(top), n_scales)).astype(int)
    return sorted({int(s) for s in grid if min_scale <= s <= top})


def min_dfa_length(min_scale: int = MIN_SCALE, n_scales: int = N_DEFAULT_SCALES) -> int:
    """The shortest series for which :func:`dfa_scales` gives at least three scales (12 by default)."""
    n = 2 * min_scale
    while len(dfa_scales(n, min_scale, n_scales)) < MIN_SCALES:
        n += 1
    return n


@shape_cache(maxsize=256)
def _polynomial_basis(size: int, order: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Orthonormal basis ``[size, order + 1]`` of polynomials of degree <= order on ``0..size-1``.

    Built in float64 on centred, scaled abscissae so that the least-squares projection is well conditioned
    whatever the working dtype.
    """
    t = torch.linspace(-1.0, 1.0, size, dtype=torch.float64)
    vandermonde = torch.stack([t**k for k in range(order + 1)], dim=-1)
    q, _ = torch.linalg.qr(vandermonde)
    return q.to(dtype=dtype, device=device)


def _check_scales(scales: Sequence[int], n: int, order: int, min_count: int = 1) -> list[int]:
    checked = []
    for s in scales:
        if int(s) != s or not order + 2 <= int(s) <= n:
            raise ValueError(
                f"`scales` must be integers with {order + 2} <= s <= T={n} (a segment needs more points than "
                f"the order-{order} fit has coefficients), got {list(scales)}."
            )
        checked.append(int(s))
    if len(set(checked)) < min_count:
        raise ValueError(f"`scales` must hold at least {min_count} distinct values to fit a slope, got {list(scales)}.")
    return checked


def fluctuation_function(x: Tensor, scales: Sequence[int], order: int = 1) -> Tensor:
    r"""DFA fluctuation :math:`F(s)` for each scale, batched over leading dimensions.

    .. math:: y = \operatorname{cumsum}(x - \bar x),\quad
              F(s) = \sqrt{\tfrac{1}{N_s}\sum_{v=1}^{N_s} \tfrac{1}{s}\sum_{i=1}^{s} (y_{v,i} - p_v(i))^2}

    with :math:`p_v` the order-``order`` least-squares polynomial of segment :math:`v`.

    Args:
        x: ``[..., T]``.
        scales: segment sizes (checked: ``order + 2 <= s <= T``).
        order: detrending polynomial order ``q``.

    Returns:
        ``[..., len(scales)]``.

    Example:
        >>> import torch
        >>> fluctuation_function(torch.arange(16.0), [4, 8])  # a line: its profile is a parabola
        tensor([0.5000, 2.2913])
    """
    x = as_float_series(x)
    n = x.shape[-1]
    scales = _check_scales(scales, n, order)
    rows = x.reshape(-1, n)
    grad = x.requires_grad and torch.is_grad_enabled()
    bases = [_polynomial_basis(s, order, x.dtype, x.device) for s in scales]
    ramps = [_chord_ramp(s, order, x.dtype, x.device) for s in scales]
    out = torch.empty(rows.shape[0], len(scales), dtype=x.dtype, device=x.device)
    start = 0
    for block in row_blocks(rows):
        profile = torch.cumsum(block - block.mean(dim=-1, keepdim=True), dim=-1)
        for i, s in enumerate(scales):
            n_segments = n // s
            segments = profile[:, : n_segments * s].reshape(block.shape[0], n_segments, s)
            # Removing a polynomial the fit removes anyway (the chord through the segment's ends) leaves the
            # residual unchanged and brings |y|^2 down to the size of the residual; then, with an orthonormal
            # basis Q, the squared residual is |y|^2 - |Q^T y|^2, exact to working precision without ever
            # forming the residual.
            segments = torch.lerp(segments[..., :1], segments[..., -1:], ramps[i]).neg_().add_(segments)
            if grad:  # out of place: autograd needs the norms it differentiates through
                squared = torch.linalg.vector_norm(segments, dim=-1).square() - (segments @ bases[i]).square().sum(-1)
                out[start : start + block.shape[0], i] = (squared.clamp(min=0).mean(dim=-1) / s).sqrt()
            else:
                squared = torch.linalg.vector_norm(segments, dim=-1).square_() - (segments @ bases[i]).square_().sum(-1)
                out[start : start + block.shape[0], i] = (squared.clamp_(min=0).mean(dim=-1) / s).sqrt_()
        start += block.shape[0]
    return out.reshape(*x.shape[:-1], len(scales))


def _segment_mean_squares(profile: Tensor, scale: int, order: int) -> Tensor:
    """Mean squared residual of the order-``order`` fit in each non-overlapping segment of ``profile: [R, T]``.

    Returns ``[R, T // scale]`` (segments cut from the start), computed as :func:`fluctuation_function` does;
    MF-DFA (``functional/mfdfa.py``) averages their ``q/2`` powers instead of their mean.
    """
    rows, n_segments = profile.shape[0], profile.shape[-1] // scale
    basis = _polynomial_basis(scale, order, profile.dtype, profile.device)
    ramp = _chord_ramp(scale, order, profile.dtype, profile.device)
    segments = profile[:, : n_segments * scale].reshape(rows, n_segments, scale)
    segments = torch.lerp(segments[..., :1], segments[..., -1:], ramp).neg_().add_(segments)
    squared = torch.linalg.vector_norm(segments, dim=-1).square_() - (segments @ basis).square_().sum(-1)
    return squared.clamp_(min=0) / scale


@shape_cache(maxsize=256)
def _chord_ramp(size: int, order: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Interpolation weights of the reference removed from each segment: the chord through its first and
    last points (``order >= 1``), or its first point (``order = 0``, a constant: the only polynomial an
    order-0 fit removes)."""
    if order == 0:
        return torch.zeros(size, dtype=dtype, device=device)
    return torch.linspace(0.0, 1.0, size, dtype=dtype, device=device)


def dfa(x: Tensor, scales: Sequence[int] | None = None, order: int = 1) -> Tensor:
    r"""DFA scaling exponent :math:`\alpha` of each series, batched over leading dimensions.

    .. math:: \alpha = \frac{d \log F(s)}{d \log s}\ \ \text{(least-squares slope over the scales)}

    White noise gives :math:`\alpha \approx 0.5`, a random walk :math:`\approx 1.5`, long-range correlated
    noise lies in between. With explicit ``scales`` the result equals
    ``nolds.dfa(x, nvals=scales, overlap=False, order=order, fit_exp="poly")`` and, for antropy's own
    scales, ``antropy.detrended_fluctuation(x)``. Default scales come from :func:`dfa_scales`; a series
    too short for three of them gives NaN with an :class:`InsufficientDataWarning`, never a made-up value.
    A constant series (``F = 0`` at every scale) gives NaN.

    Args:
        x: ``[..., T]`` real series.
        scales: segment sizes, or ``None`` for :func:`dfa_scales` ``(T)``.
        order: order ``q`` of the detrending polynomial (1 = DFA1).

    Returns:
        ``[...]``, dtype of ``x`` (float32 for half inputs).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> noise = torch.randn(4096, generator=g, dtype=torch.float64)
        >>> 0.4 < float(dfa(noise)) < 0.6
        True
        >>> 1.4 < float(dfa(noise.cumsum(0))) < 1.6
        True
    """
    if int(order) != order or order < 0:
        raise ValueError(f"`order` must be a non-negative integer, got {order!r}.")
    x = as_float_series(x)
    n = x.shape[-1]
    if scales is None:
        scales = dfa_scales(n)
        if len(scales) < MIN_SCALES:
            warn_insufficient(
                f"dfa needs at least {MIN_SCALES} scales; T={n} gives {len(scales)} "
                f"(need T >= {min_dfa_length()}). Returning NaN."
            )
            return torch.full(x.shape[:-1], float("nan"), dtype=x.dtype, device=x.device)
        scales = [s for s in scales if s >= order + 2]
    else:
        scales = _check_scales(scales, n, order, min_count=2)
    return log_log_slope(scales, fluctuation_function(x, scales, order))
