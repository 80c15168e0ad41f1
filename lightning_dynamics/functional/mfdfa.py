"""Multifractal detrended fluctuation analysis (MF-DFA), batched over series (docs/method.md section 9).

Reference: Kantelhardt, J. W. et al. (2002), "Multifractal detrended fluctuation analysis of nonstationary
time series", Physica A 316:87-114. Built on the DFA machinery of :mod:`lightning_dynamics.functional.dfa`
(same profile, scales and segment fits), so that ``h(2)`` is the DFA exponent on the same scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, row_blocks, warn_insufficient
from lightning_dynamics.functional._least_squares import log_log_slope
from lightning_dynamics.functional.dfa import (
    MIN_SCALES,
    _check_scales,
    _segment_mean_squares,
    dfa_scales,
    min_dfa_length,
)

DEFAULT_Q = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
# Smallest default scale: a 4-point segment leaves 2 degrees of freedom after a line fit, and its near-zero
# variances dominate negative moments (white noise then looks multifractal: width ~0.4 at T=4096 with
# scales from 4; ~0.1 with scales from 10).
MIN_MFDFA_SCALE = 10


class MFDFAResult(NamedTuple):
    """The output of :func:`mfdfa`.

    Attributes:
        q: ``[Q]`` the moments, increasing.
        h: ``[..., Q]`` generalized Hurst exponents :math:`h(q)`.
        tau: ``[..., Q]`` mass exponents :math:`\\tau(q) = q h(q) - 1`.
        alpha: ``[..., Q]`` singularity strengths :math:`\\alpha = \\tau'(q)`.
        f_alpha: ``[..., Q]`` singularity spectrum :math:`f(\\alpha) = q \\alpha - \\tau`.
        width: ``[...]`` spectrum width :math:`\\max \\alpha - \\min \\alpha` (0 for a monofractal).
        delta_h: ``[...]`` :math:`h(q_{min}) - h(q_{max})`, the spread of :math:`h(q)`.
    """

    q: Tensor
    h: Tensor
    tau: Tensor
    alpha: Tensor
    f_alpha: Tensor
    width: Tensor
    delta_h: Tensor


def mfdfa_scales(n: int) -> list[int]:
    """Default MF-DFA scales: :func:`~lightning_dynamics.functional.dfa_scales` from ``MIN_MFDFA_SCALE`` = 10.

    Example:
        >>> mfdfa_scales(200)
        [10, 13, 17, 22, 28, 36, 46, 60, 77, 100]
    """
    return dfa_scales(n, min_scale=MIN_MFDFA_SCALE)


def min_mfdfa_length() -> int:
    """The shortest series for which :func:`mfdfa_scales` gives at least three scales.

    Example:
        >>> min_mfdfa_length()
        24
    """
    return min_dfa_length(min_scale=MIN_MFDFA_SCALE)


def _check_q(q: Sequence[float] | Tensor) -> Tensor:
    values = torch.as_tensor(q, dtype=torch.float64).flatten()
    if values.numel() < 2 or not bool(torch.isfinite(values).all()) or not bool((values.diff() > 0).all()):
        raise ValueError(f"`q` must hold at least 2 finite, strictly increasing moments, got {values.tolist()}.")
    return values


def generalized_fluctuation(
    x: Tensor, scales: Sequence[int], q: Sequence[float] | Tensor = DEFAULT_Q, order: int = 1, both_ends: bool = False
) -> Tensor:
    r"""MF-DFA fluctuation function :math:`F_q(s)`, batched over leading dimensions.

    .. math:: F_q(s) = \Big\{\tfrac{1}{N_s} \sum_{v=1}^{N_s} [F^2(v, s)]^{q/2}\Big\}^{1/q},\quad
              F_0(s) = \exp\Big\{\tfrac{1}{2N_s} \sum_v \ln F^2(v, s)\Big\}

    with :math:`F^2(v, s)` the mean squared residual of the order-``order`` fit to the profile in segment
    :math:`v` (as in :func:`~lightning_dynamics.functional.fluctuation_function`, whose value is
    :math:`F_2`). Segments are cut from the start; ``both_ends=True`` also cuts them from the end
    (:math:`2 N_s` segments, Kantelhardt et al. 2002, and the ``MFDFA`` package).

    Args:
        x: ``[..., T]``.
        scales: segment sizes (``order + 2 <= s <= T``).
        q: moments, strictly increasing.
        order: detrending polynomial order.
        both_ends: also use the segments cut from the end of the series.

    Returns:
        ``[..., len(scales), Q]``.

    Example:
        >>> import torch
        >>> x = torch.randn(256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> from lightning_dynamics.functional import fluctuation_function
        >>> f = generalized_fluctuation(x, [8, 16, 32], q=[1.0, 2.0])
        >>> torch.allclose(f[..., 1], fluctuation_function(x, [8, 16, 32]))
        True
    """
    x = as_float_series(x)
    n = x.shape[-1]
    scales = _check_scales(scales, n, order)
    moments = _check_q(q).to(dtype=x.dtype, device=x.device)
    rows = x.reshape(-1, n)
    out = torch.empty(rows.shape[0], len(scales), moments.numel(), dtype=x.dtype, device=x.device)
    is_zero = moments == 0
    safe_q = torch.where(is_zero, torch.ones_like(moments), moments)
    start = 0
    for block in row_blocks(rows):
        profile = torch.cumsum(block - block.mean(dim=-1, keepdim=True), dim=-1)
        for i, s in enumerate(scales):
            squares = _segment_mean_squares(profile, s, order)
            if both_ends:
                squares = torch.cat([squares, _segment_mean_squares(profile[:, n % s :], s, order)], dim=-1)
            log_sq = torch.log(squares)[:, None, :]  # [B, 1, segments]; -inf where a segment is fitted exactly
            # Averaging in log space keeps large |q| from overflowing: log mean exp(q/2 log F^2).
            log_mean = torch.logsumexp(log_sq * (safe_q[:, None] / 2), dim=-1) - torch.log(
                torch.tensor(float(squares.shape[-1]), dtype=x.dtype, device=x.device)
            )
            power_mean = torch.exp(log_mean / safe_q)
            geometric = torch.exp(log_sq.mean(dim=-1) / 2)
            out[start : start + block.shape[0], i] = torch.where(is_zero, geometric, power_mean)
        start += block.shape[0]
    return out.reshape(*x.shape[:-1], len(scales), moments.numel())


def mfdfa(
    x: Tensor,
    q: Sequence[float] | Tensor = DEFAULT_Q,
    scales: Sequence[int] | None = None,
    order: int = 1,
    both_ends: bool = False,
) -> MFDFAResult:
    r"""Generalized Hurst exponents and singularity spectrum of each series (MF-DFA), batched.

    .. math:: F_q(s) \sim s^{h(q)},\quad \tau(q) = q\,h(q) - 1,\quad \alpha = \tau'(q),\quad
              f(\alpha) = q\,\alpha - \tau(q)

    :math:`h(q)` is the least-squares slope of :math:`\log F_q(s)` (:func:`generalized_fluctuation`)
    against :math:`\log s`; :math:`\tau'` is taken by finite differences over the ``q`` grid
    (Kantelhardt et al. 2002, Physica A 316:87). A monofractal (white noise, fractional Gaussian noise) has
    a flat :math:`h(q)` and a narrow spectrum; a multiplicative cascade has
    :math:`h(q) = 1/q - \ln(a^q + (1 - a)^q) / (q \ln 2)`. :math:`h(2)` is the DFA exponent of
    :func:`~lightning_dynamics.functional.dfa` on the same scales (``both_ends=False``, the default).
    Default scales are :func:`mfdfa_scales` ``(T)`` (from 10, not 4: tiny segments bias negative moments);
    a series too short for three of them gives NaN with an :class:`InsufficientDataWarning`.

    The width is reliable from ``RELIABLE_FROM["mfdfa_width"]`` = 200 history points (199 differences,
    :mod:`~lightning_dynamics.functional.reliability`): there white noise gives 0.15 +- 0.08 and a binomial
    cascade (a = 0.75, width 1.39) 1.44 +- 0.32. Below it the width of a monofractal is noise: white noise
    gives 0.57 +- 0.55 at T = 32, 0.33 +- 0.26 at 48 and 0.27 +- 0.19 at 64 (0.09 +- 0.04 at 1000), and the
    cascade's own spread (+- 0.55 at 64) covers the gap; a width read at such lengths says nothing about
    multifractality (docs/method.md section 8b).

    Negative ``q`` weighs the quietest segments: a series with exactly fitted (e.g. constant) stretches gives
    NaN or infinite values there.

    Args:
        x: ``[..., T]`` real series.
        q: moments, strictly increasing (0 allowed: the geometric mean).
        scales: segment sizes, or ``None`` for :func:`mfdfa_scales` ``(T)``.
        order: detrending polynomial order (1 = MF-DFA1).
        both_ends: also cut segments from the end (:math:`2 N_s` segments, as the ``MFDFA`` package).

    Returns:
        :class:`MFDFAResult`.

    Example:
        >>> import torch
        >>> noise = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> result = mfdfa(noise)
        >>> result.h.shape, bool(result.width < 0.15)
        (torch.Size([7]), True)
        >>> from lightning_dynamics.functional import dfa
        >>> torch.allclose(result.h[result.q == 2][0], dfa(noise, scales=mfdfa_scales(4096)))
        True
    """
    if int(order) != order or order < 0:
        raise ValueError(f"`order` must be a non-negative integer, got {order!r}.")
    x = as_float_series(x)
    n = x.shape[-1]
    moments = _check_q(q).to(dtype=x.dtype, device=x.device)
    if scales is None:
        scales = [s for s in mfdfa_scales(n) if s >= order + 2]
        if len(scales) < MIN_SCALES:
            warn_insufficient(
                f"mfdfa needs at least {MIN_SCALES} scales; T={n} gives {len(scales)} "
                f"(need T >= {min_mfdfa_length()}). Returning NaN."
            )
            h = torch.full((*x.shape[:-1], moments.numel()), float("nan"), dtype=x.dtype, device=x.device)
            return _spectrum(moments, h)
    else:
        scales = _check_scales(scales, n, order, min_count=2)
    fluctuation = generalized_fluctuation(x, scales, moments, order, both_ends)  # [..., S, Q]
    h = log_log_slope(scales, fluctuation.transpose(-1, -2))
    return _spectrum(moments, h)


def _spectrum(q: Tensor, h: Tensor) -> MFDFAResult:
    """Legendre transform of ``h: [..., Q]`` into the singularity spectrum."""
    tau = q * h - 1
    alpha = torch.gradient(tau, spacing=(q,), dim=-1)[0]
    f_alpha = q * alpha - tau
    width = alpha.amax(dim=-1) - alpha.amin(dim=-1)
    return MFDFAResult(q, h, tau, alpha, f_alpha, width, h[..., 0] - h[..., -1])
