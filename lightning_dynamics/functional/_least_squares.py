"""The one masked least-squares slope behind every log-log fit of the package (DFA, MF-DFA, Higuchi, Rosenstein)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def masked_slope(x: Tensor, y: Tensor) -> Tensor:
    """Least-squares slope of ``y: [..., K]`` against ``x: [K]`` (or broadcastable), over the finite entries of ``y``.

    NaN where fewer than 2 entries are finite. Batched, on the device of ``y``, no host synchronisation.

    Example:
        >>> nan = float("nan")
        >>> masked_slope(torch.arange(4.0), torch.tensor([[0.0, 2.0, nan, 6.0], [1.0, float("inf"), nan, nan]]))
        tensor([2., nan])
    """
    usable = torch.isfinite(y)
    weight = usable.to(y.dtype)
    y = torch.where(usable, y, torch.zeros_like(y))
    count = weight.sum(dim=-1, keepdim=True)
    mean_x = (weight * x).sum(dim=-1, keepdim=True) / count
    mean_y = (weight * y).sum(dim=-1, keepdim=True) / count
    dx = weight * (x - mean_x)
    slope = (dx * (y - mean_y)).sum(dim=-1) / dx.square().sum(dim=-1)
    return torch.where(count.squeeze(-1) >= 2, slope, torch.full_like(slope, float("nan")))


def log_log_slope(scales: Sequence[int], fluctuation: Tensor) -> Tensor:
    """Slope of ``log F`` against ``log s`` (``fluctuation: [..., K]``, ``K`` scales), skipping non-positive ``F``.

    Example:
        >>> log_log_slope([4, 8, 16], torch.tensor([2.0, 2.0 * 2**0.5, 4.0]))
        tensor(0.5000)
    """
    log_s = torch.log(torch.tensor(list(scales), dtype=fluctuation.dtype, device=fluctuation.device))
    positive = fluctuation > 0
    safe = torch.where(positive, fluctuation, torch.ones_like(fluctuation))
    return masked_slope(log_s, torch.where(positive, torch.log(safe), torch.full_like(safe, float("nan"))))
