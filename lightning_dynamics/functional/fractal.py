"""Fractal dimension of a series (Higuchi, Katz), batched over series (docs/method.md section 9).

References: Higuchi, T. (1988), "Approach to an irregular time series on the basis of the fractal theory",
Physica D 31:277-283; Katz, M. J. (1988), "Fractals and the analysis of waveforms", Comput. Biol. Med.
18:145-156; used for network dynamics by Moharil et al., arXiv:2407.09585. Both equal
``antropy.higuchi_fd`` and ``antropy.katz_fd`` on float64 input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient


def min_higuchi_length(kmax: int = 10) -> int:
    """The shortest series :func:`higuchi_fd` accepts: every offset ``m < kmax`` needs one increment at lag ``kmax``.

    Example:
        >>> min_higuchi_length(10)
        20
    """
    return 2 * kmax


def _masked_slope(x: Tensor, y: Tensor) -> Tensor:
    """Least-squares slope of ``y: [..., K]`` against ``x: [K]``, over the finite entries of ``y`` (NaN if < 2)."""
    usable = torch.isfinite(y)
    weight = usable.to(y.dtype)
    y = torch.where(usable, y, torch.zeros_like(y))
    count = weight.sum(dim=-1, keepdim=True)
    mean_x = (weight * x).sum(dim=-1, keepdim=True) / count
    mean_y = (weight * y).sum(dim=-1, keepdim=True) / count
    dx = weight * (x - mean_x)
    slope = (dx * (y - mean_y)).sum(dim=-1) / dx.square().sum(dim=-1)
    return torch.where(count.squeeze(-1) >= 2, slope, torch.full_like(slope, float("nan")))


def higuchi_curve_length(x: Tensor, kmax: int = 10) -> Tensor:
    r"""Higuchi's mean normalised curve length :math:`L(k)` for ``k = 1..kmax``, batched.

    .. math:: L_m(k) = \frac{N - 1}{k^2\, n_m} \sum_{j=1}^{n_m} |x_{m + jk} - x_{m + (j-1)k}|,\quad
              n_m = \lfloor (N - m - 1) / k \rfloor,\quad L(k) = \tfrac1k \sum_{m=0}^{k-1} L_m(k)

    Args:
        x: ``[..., T]`` with ``T >= 2 * kmax``.
        kmax: largest lag.

    Returns:
        ``[..., kmax]``.

    Example:
        >>> import torch
        >>> higuchi_curve_length(torch.arange(8.0), kmax=2)  # a line: L(k) = (N - 1) / k
        tensor([7.0000, 3.5000])
    """
    x = as_float_series(x)
    n = x.shape[-1]
    _check_kmax(kmax, n)
    lengths = []
    for k in range(1, kmax + 1):
        # Increment i = m + (j - 1) k belongs to offset m = i mod k: pad to whole rows of k and sum columns.
        steps = (x[..., k:] - x[..., :-k]).abs()
        rows = -(-steps.shape[-1] // k)
        padded = torch.nn.functional.pad(steps, (0, rows * k - steps.shape[-1]))
        sums = padded.reshape(*steps.shape[:-1], rows, k).sum(dim=-2)
        counts = torch.tensor([(n - m - 1) // k for m in range(k)], dtype=x.dtype, device=x.device)
        lengths.append((sums * ((n - 1) / (k * k)) / counts).mean(dim=-1))
    return torch.stack(lengths, dim=-1)


def _check_kmax(kmax: int, n: int) -> None:
    if int(kmax) != kmax or kmax < 2:
        raise ValueError(f"`kmax` must be an integer >= 2, got {kmax!r}.")
    if n < 2 * kmax:
        raise ValueError(f"higuchi_fd with kmax={kmax} needs T >= {2 * kmax} points, got T={n}.")


def higuchi_fd(x: Tensor, kmax: int = 10) -> Tensor:
    r"""Higuchi fractal dimension of each series, batched over leading dimensions.

    .. math:: D = \text{least-squares slope of } \log L(k) \text{ against } \log(1/k),\ k = 1..k_{max}

    with :math:`L(k)` from :func:`higuchi_curve_length`. A smooth curve gives 1, white noise 2; equal to
    ``antropy.higuchi_fd(x, kmax)`` (Higuchi 1988, Physica D 31:277). A series shorter than
    :func:`min_higuchi_length` gives NaN with an :class:`InsufficientDataWarning`; a constant one gives NaN.

    Args:
        x: ``[..., T]`` real series.
        kmax: largest lag (``>= 2``).

    Returns:
        ``[...]``, dtype of ``x`` (float32 for half inputs).

    Example:
        >>> import torch
        >>> float(higuchi_fd(torch.linspace(0, 1, 100, dtype=torch.float64)))
        1.0
        >>> g = torch.Generator().manual_seed(0)
        >>> 1.9 < float(higuchi_fd(torch.randn(2000, generator=g))) < 2.1
        True
    """
    x = as_float_series(x)
    n = x.shape[-1]
    if int(kmax) == kmax and kmax >= 2 and n < min_higuchi_length(kmax):
        warn_insufficient(
            f"higuchi_fd with kmax={kmax} needs T >= {min_higuchi_length(kmax)}, got T={n}. Returning NaN."
        )
        return torch.full(x.shape[:-1], float("nan"), dtype=x.dtype, device=x.device)
    lengths = higuchi_curve_length(x, kmax)
    log_inv_k = -torch.log(torch.arange(1, kmax + 1, dtype=x.dtype, device=x.device))
    log_length = torch.where(lengths > 0, torch.log(lengths), torch.full_like(lengths, float("nan")))
    slope = _masked_slope(log_inv_k, log_length)
    # antropy fits through log(0) = -inf when a lag has zero length; any such series gets NaN here instead.
    return torch.where(torch.isfinite(log_length).all(dim=-1), slope, torch.full_like(slope, float("nan")))


def katz_fd(x: Tensor) -> Tensor:
    r"""Katz fractal dimension of each series, batched over leading dimensions.

    .. math:: D = \frac{\log_{10}(L / a)}{\log_{10}(d / a)},\quad L = \sum_t |x_{t+1} - x_t|,\
              a = L / (N - 1),\ d = \max_t |x_t - x_0|

    A straight line gives 1; wigglier series give more. Equal to ``antropy.katz_fd(x)`` (Katz 1988,
    Comput. Biol. Med. 18:145). A constant series, or one of fewer than 3 points, gives NaN.

    Args:
        x: ``[..., T]`` real series.

    Returns:
        ``[...]``, dtype of ``x`` (float32 for half inputs).

    Example:
        >>> import torch
        >>> katz_fd(torch.tensor([0.0, 1.0, 2.0, 3.0]))
        tensor(1.)
        >>> round(float(katz_fd(torch.tensor([0.0, 2.0, 1.0, 3.0]))), 4)  # log10(3) / log10(3 / 2)
        2.7095
    """
    x = as_float_series(x)
    if x.shape[-1] < 3:
        warn_insufficient(f"katz_fd needs T >= 3 points, got T={x.shape[-1]}. Returning NaN.")
        return torch.full(x.shape[:-1], float("nan"), dtype=x.dtype, device=x.device)
    steps = (x[..., 1:] - x[..., :-1]).abs()
    total = steps.sum(dim=-1)
    mean_step = steps.mean(dim=-1)
    extent = (x - x[..., :1]).abs().amax(dim=-1)
    ratio = total / mean_step
    return torch.log10(ratio) / torch.log10(extent / mean_step)
