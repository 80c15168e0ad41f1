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
        series: ``[..., L, T']`` z-scored series (``T' = T - 1`` for ``"diff"``); excluded layers are zero.
        valid: ``[..., L]`` boolean, ``False`` for a layer with zero variance or a non-finite value.
    """

    series: Tensor
    valid: Tensor


def detrended_length(n: int, method: str | None) -> int:
    """Length of a series of ``n`` points after :func:`detrend` with ``method``."""
    return n - 1 if method == "diff" else n


def detrend(x: Tensor, method: str | None = "diff") -> Detrended:
    r"""Remove each series' trend and z-score it; flag series that cannot be used.

    .. math:: d_l(t) = x_l(t+1) - x_l(t),\qquad \tilde d_l = (d_l - \bar d_l) / \sigma(d_l)

    Methods: ``"diff"`` (first differences, default), ``"linear"`` (residual of the least-squares line),
    ``"mean"`` (plain z-scoring), each followed by z-scoring (population std); ``None`` leaves the series
    as they are. A series whose detrended std is zero (up to float rounding relative to its magnitude) or
    that holds a NaN or Inf is marked invalid and set to zero, so that it never produces a silent NaN
    downstream; measures exclude it and report the count (METHOD.md section 1).

    Args:
        x: ``[..., T]`` real series (layers in the dimension before time for layer measures).
        method: ``"diff"``, ``"linear"``, ``"mean"`` or ``None``.

    Returns:
        :class:`Detrended` ``(series, valid)``.

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
    x = as_float_series(x)
    finite = torch.isfinite(x).all(dim=-1)
    magnitude = torch.where(torch.isfinite(x), x.abs(), torch.zeros_like(x)).amax(dim=-1)
    if method == "diff":
        d = x[..., 1:] - x[..., :-1] if x.shape[-1] > 0 else x
    elif method == "linear":
        d = _remove_line(x)
    else:
        d = x
    if d.shape[-1] == 0:
        return Detrended(d, torch.zeros(d.shape[:-1], dtype=torch.bool, device=d.device))
    mean = d.mean(dim=-1, keepdim=True)
    std = (d - mean).square().mean(dim=-1).sqrt()
    tolerance = _CONSTANT_TOLERANCE_EPS * torch.finfo(d.dtype).eps * magnitude
    valid = finite & torch.isfinite(std) & (std > tolerance) & (std > 0)
    if method is not None:
        d = (d - mean) / torch.where(valid, std, torch.ones_like(std)).unsqueeze(-1)
    d = torch.where(valid.unsqueeze(-1), d, torch.zeros_like(d))
    return Detrended(d, valid)


def _remove_line(x: Tensor) -> Tensor:
    n = x.shape[-1]
    if n < 2:
        return x - x.mean(dim=-1, keepdim=True)
    t = torch.arange(n, dtype=x.dtype, device=x.device)
    t = t - t.mean()
    slope = (x * t).sum(dim=-1, keepdim=True) / t.square().sum()
    residual = x - x.mean(dim=-1, keepdim=True) - slope * t
    return residual
