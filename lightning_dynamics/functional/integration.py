"""Integration score from the layers' DFA exponents (Ugail & Howard; docs/method.md section 5).

References: Ugail, H. & Howard, N. (2025), arXiv:2512.10972 (H_eff: a Gaussian of the DFA exponent
around the critical regime); La Quang, Ugail, Howard et al. (2026), arXiv:2604.09716. The phase-locking
counterpart (Deco et al. 2017) lives in :mod:`lightning_dynamics.functional.phase_locking`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient
from lightning_dynamics.functional._layers import masked_layer_mean
from lightning_dynamics.functional.detrend import detrend as detrend_series
from lightning_dynamics.functional.detrend import detrended_length
from lightning_dynamics.functional.dfa import MIN_SCALES, dfa, dfa_scales, min_dfa_length

H_OPT = 0.70
SIGMA = 0.15


def _layer_alphas(x: Tensor, detrend: str | None, scales: Sequence[int] | None, order: int) -> tuple[Tensor, Tensor]:
    if scales is None and len(dfa_scales(detrended_length(x.shape[-1], detrend))) < MIN_SCALES:
        warn_insufficient(
            f"integration needs at least {min_dfa_length()} points after detrend={detrend!r} for DFA; "
            f"the series has T={x.shape[-1]}. Returning NaN."
        )
        nan = torch.full(x.shape[:-1], float("nan"), dtype=x.dtype, device=x.device)
        return nan, torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
    d = detrend_series(x, detrend)
    if not bool(d.valid.any(dim=-1).all()):
        warn_insufficient(
            f"integration: no valid layer (of L={x.shape[-2]}) in some batch elements (all constant, non-finite "
            "or with too many missing points). Returning NaN there."
        )
    return dfa(d.series, scales=scales, order=order), d.valid


def integration_alpha(
    x: Tensor, detrend: str | None = "diff", scales: Sequence[int] | None = None, order: int = 1
) -> Tensor:
    r"""Mean DFA exponent over layers of the detrended series.

    .. math:: \bar\alpha = \frac{1}{L'}\sum_{l \text{ valid}} \alpha_l(d_l)

    Layers excluded by :func:`detrend` (constant, non-finite, too many missing points) do not enter the
    mean; one valid layer is enough (a per-layer average, not a comparison of layers); with none the result
    is NaN with an :class:`InsufficientDataWarning` (docs/method.md section 5).

    Args:
        x: ``[..., L, T]`` layer series.
        detrend: preprocessing (see :func:`detrend`).
        scales, order: passed to :func:`dfa`.

    Returns:
        ``[...]``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> walk = torch.randn(8, 2048, generator=g, dtype=torch.float64).cumsum(-1)  # diff: white noise
        >>> 0.4 < float(integration_alpha(walk)) < 0.6
        True
    """
    x = as_float_series(x, min_dim=2)
    alphas, valid = _layer_alphas(x, detrend, scales, order)
    return masked_layer_mean(alphas, valid)


def integration_from_alpha(alpha: Tensor, h_opt: float = H_OPT, sigma: float = SIGMA) -> Tensor:
    r""":math:`\exp(-(\alpha - h_{opt})^2 / (2\sigma^2))`, the H_eff map of Ugail & Howard (2025).

    Example:
        >>> import torch
        >>> integration_from_alpha(torch.tensor([0.70, 0.85, 1.5]))
        tensor([1.0000e+00, 6.0653e-01, 6.6584e-07])
    """
    if sigma <= 0:
        raise ValueError(f"`sigma` must be > 0, got {sigma!r}.")
    return torch.exp(-((alpha - h_opt) ** 2) / (2.0 * sigma**2))


def integration(
    x: Tensor,
    detrend: str | None = "diff",
    scales: Sequence[int] | None = None,
    order: int = 1,
    h_opt: float = H_OPT,
    sigma: float = SIGMA,
) -> Tensor:
    r"""Integration score in ``[0, 1]``: closeness of the mean DFA exponent to the critical ``h_opt``.

    .. math:: I = \exp\!\Big(-\frac{(\bar\alpha - h_{opt})^2}{2\sigma^2}\Big),\quad h_{opt}=0.70,\ \sigma=0.15

    after Ugail & Howard (2025, arXiv:2512.10972), with :math:`\bar\alpha` from :func:`integration_alpha`.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> walk = torch.randn(8, 2048, generator=g, dtype=torch.float64).cumsum(-1)
        >>> 0.0 <= float(integration(walk)) <= 1.0
        True
    """
    return integration_from_alpha(integration_alpha(x, detrend, scales, order), h_opt, sigma)
