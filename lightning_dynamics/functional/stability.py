"""Dynamical stability index over a sliding window, and its rolling volatility (docs/method.md section 6).

Reference: La Quang, Ugail, Howard et al. (2026), arXiv:2604.09716 (a combined index of integration and
metastability whose volatility falls as training converges); the composite follows Ugail & Howard
(2025), arXiv:2512.10972.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient
from lightning_dynamics.functional.integration import H_OPT, SIGMA, integration
from lightning_dynamics.functional.kuramoto import metastability

# The largest population std a [0, 1]-valued variable can have: M / 0.5 maps metastability onto [0, 1].
MAX_METASTABILITY = 0.5
DEFAULT_WINDOW = 16
DEFAULT_VOLATILITY_WINDOW = 5


def combine_stability(
    integration_score: Tensor, metastability_score: Tensor, weights: tuple[float, float] = (0.5, 0.5)
) -> Tensor:
    r""":math:`S = w_I I + w_M \min(1, M / 0.5)`: the combined dynamical stability index in ``[0, 1]``.

    Example:
        >>> import torch
        >>> combine_stability(torch.tensor(0.8), torch.tensor(0.1))
        tensor(0.5000)
    """
    w_i, w_m = weights
    return w_i * integration_score + w_m * (metastability_score / MAX_METASTABILITY).clamp(max=1.0)


def _check_weights(weights: Sequence[float]) -> tuple[float, float]:
    if len(weights) != 2 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"`weights` must be two non-negative numbers (w_integration, w_metastability) with a positive "
            f"sum, got {tuple(weights)!r}."
        )
    return float(weights[0]), float(weights[1])


def stability_index(
    x: Tensor,
    window: int = DEFAULT_WINDOW,
    weights: Sequence[float] = (0.5, 0.5),
    detrend: str | None = "diff",
    pad: str | None = "reflect",
    h_opt: float = H_OPT,
    sigma: float = SIGMA,
    expanding: bool = False,
) -> Tensor:
    r"""Dynamical stability index :math:`S(t)` of layer series over a sliding window.

    .. math:: S(t) = w_I\, I\big(X_{[t-w+1,\,t]}\big) + w_M \min\!\Big(1, \frac{M(X_{[t-w+1,\,t]})}{0.5}\Big)

    with :math:`I` from :func:`integration` and :math:`M` from :func:`metastability`, each applied (detrend
    included) to the window alone. All windows are computed in one batched pass. Entries before the first
    full window are NaN. ``expanding=True`` uses ``X[:, 0..t]`` instead (not the default: the volatility of
    an expanding-window index falls only because the window grows).

    Args:
        x: ``[..., L, T]`` layer series.
        window: ``w``, sample points per window.
        weights: ``(w_I, w_M)``.
        detrend, pad: preprocessing of each window (see :func:`metastability`).
        h_opt, sigma: the integration map (see :func:`integration`).
        expanding: expanding instead of sliding window.

    Returns:
        ``[..., T]``, NaN for ``t < w - 1``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(6, 40, generator=g).cumsum(-1)
        >>> s = stability_index(x, window=16)
        >>> bool(s[:15].isnan().all()), bool(((s[15:] >= 0) & (s[15:] <= 1)).all())
        (True, True)
    """
    if int(window) != window or window < 2:
        raise ValueError(f"`window` must be an integer >= 2, got {window!r}.")
    w_i, w_m = _check_weights(weights)
    x = as_float_series(x, min_dim=2)
    n = x.shape[-1]
    out = torch.full((*x.shape[:-2], n), float("nan"), dtype=x.dtype, device=x.device)
    if n < window:
        warn_insufficient(f"stability_index needs T >= window={window} points, got T={n}. Returning NaN.")
        return out
    if expanding:
        for t in range(window - 1, n):
            segment = x[..., : t + 1]
            i = integration(segment, detrend=detrend, h_opt=h_opt, sigma=sigma)
            m = metastability(segment, detrend=detrend, pad=pad)
            out[..., t] = combine_stability(i, m, (w_i, w_m))
        return out
    windows = x.unfold(-1, window, 1).movedim(-2, -3)  # [..., W, L, w]
    i = integration(windows, detrend=detrend, h_opt=h_opt, sigma=sigma)
    m = metastability(windows, detrend=detrend, pad=pad)
    out[..., window - 1 :] = combine_stability(i, m, (w_i, w_m))
    return out


def rolling_volatility(s: Tensor, window: int = DEFAULT_VOLATILITY_WINDOW) -> Tensor:
    r"""Volatility :math:`V(t)`: population std of the last ``window`` values of a series.

    .. math:: V(t) = \operatorname{std}\big(S(t-k+1), \dots, S(t)\big)

    Args:
        s: ``[..., T]``, e.g. from :func:`stability_index`.
        window: ``k >= 2``.

    Returns:
        ``[..., T]``; NaN for ``t < k - 1`` and wherever the window holds a NaN.

    Example:
        >>> import torch
        >>> rolling_volatility(torch.tensor([0.0, 1.0, 0.0, 1.0]), window=2)
        tensor([   nan, 0.5000, 0.5000, 0.5000])
    """
    if int(window) != window or window < 2:
        raise ValueError(f"`window` must be an integer >= 2, got {window!r}.")
    s = as_float_series(s, name="s")
    out = torch.full_like(s, float("nan"))
    if s.shape[-1] >= window:
        out[..., window - 1 :] = s.unfold(-1, window, 1).std(dim=-1, correction=0)
    return out
