"""Preprocessing of layer series before phase and DFA measures (docs/method.md section 1).

Training curves are dominated by trends: a Hilbert phase of a trend is meaningless (R ~ 1, M ~ 0 for any
network) and DFA of a trend gives alpha ~ 2. The default removes the trend by first differences and then
z-scores each layer.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, check_choice

DETREND_CHOICES = ("diff", "linear", "mean", None)

# A detrended layer whose std is below this many float epsilons of its original magnitude is constant up
# to rounding: its phase and DFA exponent would be noise of the arithmetic, so it is excluded.
_CONSTANT_TOLERANCE_EPS = 64.0


class Exclusion(enum.IntEnum):
    """Why :func:`detrend` excludes a layer (the codes of ``Detrended.exclusion``)."""

    KEPT = 0
    CONSTANT = 1  # zero variance up to float rounding
    NON_FINITE = 2  # the detrended statistics are not finite
    TOO_MANY_MISSING = 3  # more than ``max_missing`` of the input points are NaN/Inf


EXCLUSION_REASONS = ("kept", "constant", "non-finite", "too many missing points")


class Detrended(NamedTuple):
    """The output of :func:`detrend`.

    Attributes:
        series: ``[..., L, T']`` z-scored series (``T' = T - 1`` for ``"diff"``); excluded layers are zero.
        valid: ``[..., L]`` boolean, ``False`` for an excluded layer.
        n_missing: ``[..., L]`` number of missing (non-finite) points of the input ``x``; in a kept layer
            they were bridged (see :func:`detrend`).
        exclusion: ``[..., L]`` int8 :class:`Exclusion` code of each layer (``0`` = kept).
    """

    series: Tensor
    valid: Tensor
    n_missing: Tensor
    exclusion: Tensor


def detrended_length(n: int, method: str | None) -> int:
    """Length of a series of ``n`` points after :func:`detrend` with ``method``."""
    return max(0, n - 1) if method == "diff" else n


def detrend(x: Tensor, method: str | None = "diff", max_missing: float = 0.1) -> Detrended:
    r"""Remove each series' trend and z-score it; flag series that cannot be used.

    .. math:: d_l(t) = x_l(t+1) - x_l(t),\qquad \tilde d_l = (d_l - \bar d_l) / \sigma(d_l)

    Methods: ``"diff"`` (first differences, default), ``"linear"`` (residual of the least-squares line),
    ``"mean"`` (plain z-scoring), each followed by z-scoring (population std); ``None`` leaves the series
    as they are (docs/method.md section 1).

    Missing points (NaN/Inf input, e.g. one bad batch) are bridged before differencing: linear interpolation
    between the nearest finite neighbours, the nearest finite value at the ends. So one missing point changes
    two differences slightly instead of blanking the layer. The rule for layers: a layer is excluded
    (``valid`` False, series set to zero, the reason in ``exclusion``) when more than ``max_missing`` of its
    input points are missing (``TOO_MANY_MISSING``; with the default 0.1 a 16-point window tolerates one),
    when its detrended std is zero up to float rounding relative to its magnitude (``CONSTANT``), or when its
    statistics are not finite (``NON_FINITE``). It never produces a silent NaN downstream, and measures report
    the count. Each layer is scaled by its largest magnitude first (every method but ``None`` is
    scale-invariant), so squares neither overflow (values up to the float maximum) nor underflow (values
    down to the smallest normal float).

    Args:
        x: ``[..., T]`` real series (layers in the dimension before time for layer measures).
        method: ``"diff"``, ``"linear"``, ``"mean"`` or ``None``.
        max_missing: largest share of missing input points a layer may have and stay in, in ``[0, 1)``.

    Returns:
        :class:`Detrended` ``(series, valid, n_missing, exclusion)``.

    Example:
        >>> import torch
        >>> out = detrend(torch.tensor([[0.0, 1.0, 3.0, 6.0], [2.0, 2.0, 2.0, 2.0]]))
        >>> out.series
        tensor([[-1.2247,  0.0000,  1.2247],
                [ 0.0000,  0.0000,  0.0000]])
        >>> out.valid, [Exclusion(int(c)).name for c in out.exclusion]
        (tensor([ True, False]), ['KEPT', 'CONSTANT'])
    """
    check_choice("detrend", method, DETREND_CHOICES)
    if not 0.0 <= max_missing < 1.0:
        raise ValueError(f"`max_missing` must be in [0, 1), got {max_missing!r}.")
    x = as_float_series(x)
    grad = x.requires_grad and torch.is_grad_enabled()
    n_points = x.shape[-1]
    if n_points == 0:
        raise ValueError(f"`x` must have a non-empty time axis (the last dimension), got shape {tuple(x.shape)}.")
    finite = torch.isfinite(x)
    n_missing = n_points - finite.sum(dim=-1)
    original = x
    x = x.masked_fill(~finite, 0.0)
    # Single-pass reductions (vector norms, bool sums) keep this memory-bound step at ~10 passes over x.
    magnitude = torch.linalg.vector_norm(x, ord=float("inf"), dim=-1, keepdim=True)
    x = x / torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))
    if x.device.type != "cpu" or bool(n_missing.any()):  # off the CPU: no host sync, bridge unconditionally
        x = _bridge_missing(x, finite)
    if method == "diff":
        d = torch.diff(x, dim=-1)
    elif method == "linear":
        d = _remove_line(x)
    else:
        d = x
    n = d.shape[-1]
    mean = d.mean(dim=-1, keepdim=True) if n else d.sum(dim=-1, keepdim=True)
    centred = d - mean
    std = torch.linalg.vector_norm(centred, dim=-1) / max(n, 1) ** 0.5
    tolerance = _CONSTANT_TOLERANCE_EPS * torch.finfo(d.dtype).eps * magnitude.squeeze(-1).clamp(max=1.0)
    too_many = n_missing > max_missing * n_points
    non_finite = ~torch.isfinite(std)
    constant = ~(std > tolerance) | (n_points - n_missing < 2) | (n < 2)
    exclusion = torch.where(
        too_many,
        int(Exclusion.TOO_MANY_MISSING),
        torch.where(non_finite, int(Exclusion.NON_FINITE), torch.where(constant, int(Exclusion.CONSTANT), 0)),
    ).to(torch.int8)
    valid = exclusion == 0
    if method is None:
        kept = torch.where(finite, original, x * magnitude) if n_missing.numel() else original
        d = torch.where(valid.unsqueeze(-1), kept, torch.zeros_like(kept))
    else:
        # One multiply both scales kept layers to unit variance and zeroes excluded ones.
        scale = torch.where(valid, 1.0 / torch.where(valid, std, torch.ones_like(std)), torch.zeros_like(std))
        d = centred * scale.unsqueeze(-1) if grad else centred.mul_(scale.unsqueeze(-1))
    return Detrended(d, valid, n_missing, exclusion)


def _bridge_missing(x: Tensor, finite: Tensor) -> Tensor:
    """Fill the missing points of ``x: [..., T]`` by linear interpolation between the nearest finite points
    on either side, or the nearest finite point at the ends (all-missing rows stay zero)."""
    n = x.shape[-1]
    if n == 0:
        return x
    t = torch.arange(n, device=x.device)
    previous = torch.where(finite, t, -1).cummax(dim=-1).values
    following = torch.where(finite, t, n).flip(-1).cummin(dim=-1).values.flip(-1)
    has_previous, has_following = previous >= 0, following < n
    before = x.gather(-1, previous.clamp(min=0))
    after = x.gather(-1, following.clamp(max=n - 1))
    span = (following - previous).clamp(min=1).to(x.dtype)
    inside = torch.lerp(before, after, (t - previous).to(x.dtype) / span)
    bridged = torch.where(has_previous & has_following, inside, torch.where(has_previous, before, after))
    bridged = torch.where(has_previous | has_following, bridged, torch.zeros_like(bridged))
    return torch.where(finite, x, bridged)


def _remove_line(x: Tensor) -> Tensor:
    """Residual of the least-squares line through the points of ``x: [..., T]``."""
    n = x.shape[-1]
    t = torch.arange(n, dtype=x.dtype, device=x.device)
    t_centred = t - t.mean() if n else t
    x_mean = x.mean(dim=-1, keepdim=True) if n else x.sum(dim=-1, keepdim=True)
    denominator = t_centred.square().sum()
    slope = ((x - x_mean) @ t_centred).unsqueeze(-1) / torch.where(denominator > 0, denominator, 1.0)
    return x - x_mean - slope * t_centred
