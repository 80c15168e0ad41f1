"""Preprocessing of layer series before phase and DFA measures (METHOD.md section 1).

Training curves are dominated by trends: a Hilbert phase of a trend is meaningless (R ~ 1, M ~ 0 for any
network) and DFA of a trend gives alpha ~ 2. The default removes the trend by first differences and then
z-scores each layer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, check_choice

DETREND_CHOICES = ("diff", "linear", "mean", None)

# A detrended layer whose std is below this many float epsilons of its original magnitude is constant up
# to rounding: its phase and DFA exponent would be noise of the arithmetic, so it is excluded.
_CONSTANT_TOLERANCE_EPS = 64.0


class Detrended(NamedTuple):
    """The output of :func:`detrend`.

    Attributes:
        series: ``[..., L, T']`` z-scored series (``T' = T - 1`` for ``"diff"``); excluded layers are zero,
            missing points of a kept layer hold the layer's mean (zero after z-scoring).
        valid: ``[..., L]`` boolean, ``False`` for a layer with zero variance or too many non-finite points.
        n_missing: ``[..., L]`` number of points of ``series`` that were missing (non-finite input).
    """

    series: Tensor
    valid: Tensor
    n_missing: Tensor


def detrended_length(n: int, method: str | None) -> int:
    """Length of a series of ``n`` points after :func:`detrend` with ``method``."""
    return n - 1 if method == "diff" else n


def detrend(x: Tensor, method: str | None = "diff", max_missing: float = 0.1) -> Detrended:
    r"""Remove each series' trend and z-score it; flag series that cannot be used.

    .. math:: d_l(t) = x_l(t+1) - x_l(t),\qquad \tilde d_l = (d_l - \bar d_l) / \sigma(d_l)

    Methods: ``"diff"`` (first differences, default), ``"linear"`` (residual of the least-squares line),
    ``"mean"`` (plain z-scoring), each followed by z-scoring (population std); ``None`` leaves the series
    as they are (METHOD.md section 1).

    Non-finite input points are missing: a difference touching one is missing too; statistics use the
    valid points only and a missing point is filled with the layer's mean (zero after z-scoring), so a
    NaN at one sample point never poisons later ones. A layer is excluded (``valid`` False, series set to
    zero) when more than ``max_missing`` of its points are missing, or when its std is zero up to float
    rounding relative to its magnitude: it never produces a silent NaN downstream, and measures report the
    count.

    Args:
        x: ``[..., T]`` real series (layers in the dimension before time for layer measures).
        method: ``"diff"``, ``"linear"``, ``"mean"`` or ``None``.
        max_missing: largest share of missing points a layer may have and stay in, in ``[0, 1)``.

    Returns:
        :class:`Detrended` ``(series, valid, n_missing)``.

    Example:
        >>> import torch
        >>> out = detrend(torch.tensor([[0.0, 1.0, 3.0, 6.0], [2.0, 2.0, 2.0, 2.0]]))
        >>> out.series
        tensor([[-1.2247,  0.0000,  1.2247],
                [ 0.0000,  0.0000,  0.0000]])
        >>> out.valid
        tensor([ True, False])
    """
    check_choice("detrend", method, DETREND_CHOICES)
    if not 0.0 <= max_missing < 1.0:
        raise ValueError(f"`max_missing` must be in [0, 1), got {max_missing!r}.")
    x = as_float_series(x)
    finite = torch.isfinite(x)
    x = x.masked_fill(~finite, 0.0)
    # Single-pass reductions (vector norms, bool sums) keep this memory-bound step at ~8 passes over x.
    magnitude = torch.linalg.vector_norm(x, ord=float("inf"), dim=-1)
    if method == "diff":
        d = torch.diff(x, dim=-1)
        present = finite[..., 1:] & finite[..., :-1]
    elif method == "linear":
        d, present = _remove_line(x, finite), finite
    else:
        d, present = x, finite
    n = d.shape[-1]
    count = present.sum(dim=-1)
    n_missing = n - count
    d = d.masked_fill(~present, 0.0)
    mean = d.sum(dim=-1) / count.clamp(min=1)
    centred = (d - mean.unsqueeze(-1)).masked_fill_(~present, 0.0)
    std = torch.linalg.vector_norm(centred, dim=-1) / count.clamp(min=1).sqrt()
    tolerance = _CONSTANT_TOLERANCE_EPS * torch.finfo(d.dtype).eps * magnitude
    valid = (count >= 2) & (n_missing <= max_missing * n) & torch.isfinite(std) & (std > tolerance) & (std > 0)
    if method is None:
        d = torch.where(present, d, mean.unsqueeze(-1))
        d = d.masked_fill_(~valid.unsqueeze(-1), 0.0)
    else:
        # One multiply both scales kept layers to unit variance and zeroes excluded ones.
        scale = torch.where(valid, 1.0 / torch.where(valid, std, torch.ones_like(std)), torch.zeros_like(std))
        d = centred.mul_(scale.unsqueeze(-1))
    return Detrended(d, valid, n_missing)


def _remove_line(x: Tensor, present: Tensor) -> Tensor:
    """Residual of the least-squares line through the present points (missing points are ignored)."""
    weight = present.to(x.dtype)
    count = weight.sum(dim=-1, keepdim=True).clamp(min=1)
    t = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
    t_mean = (weight * t).sum(dim=-1, keepdim=True) / count
    x_mean = (weight * x).sum(dim=-1, keepdim=True) / count
    dt = (t - t_mean) * weight
    denominator = dt.square().sum(dim=-1, keepdim=True)
    slope = (dt * (x - x_mean)).sum(dim=-1, keepdim=True) / torch.where(denominator > 0, denominator, 1.0)
    return x - x_mean - slope * (t - t_mean)
