"""Fractal dimension of a series (Higuchi, Katz), batched over series (docs/method.md section 9).

References: Higuchi, T. (1988), "Approach to an irregular time series on the basis of the fractal theory",
Physica D 31:277-283; Katz, M. J. (1988), "Fractals and the analysis of waveforms", Comput. Biol. Med.
18:145-156; used for network dynamics by Moharil et al., arXiv:2407.09585. Both equal
``antropy.higuchi_fd`` and ``antropy.katz_fd`` on float64 input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient
from lightning_dynamics.functional._least_squares import masked_slope


def min_higuchi_length(kmax: int = 10) -> int:
    """The shortest series :func:`higuchi_fd` accepts: every offset ``m < kmax`` needs one increment at lag ``kmax``.

    Example:
        >>> min_higuchi_length(10)
        20
    """
    return 2 * kmax


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
        >>> round(float(higuchi_fd(torch.linspace(0, 1, 100, dtype=torch.float64))), 6)
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
    slope = masked_slope(log_inv_k, log_length)
    # antropy fits through log(0) = -inf when a lag has zero length; any such series gets NaN here instead.
    return torch.where(torch.isfinite(log_length).all(dim=-1), slope, torch.full_like(slope, float("nan")))


def katz_fd(x: Tensor) -> Tensor:
    r"""Katz fractal dimension of each series, batched over leading dimensions.

    .. math:: D = \frac{\log_{10}(L / a)}{\log_{10}(d / a)},\quad L = \sum_t |x_{t+1} - x_t|,\
              a = L / (N - 1),\ d = \max_t |x_t - x_0|

    A straight line gives 1; wigglier series give more. Equal to ``antropy.katz_fd(x)`` (Katz 1988,
    Comput. Biol. Med. 18:145). A constant series, or one of fewer than 3 points, gives NaN.

    Since :math:`L / a = n = N - 1` steps, this *is* the step-normalised form of Katz's paper,
    :math:`D = \log_{10} n / (\log_{10} n + \log_{10}(d / L))`: normalising by the number of steps does not
    remove the dependence on length. For a path (a random walk) :math:`d / L \sim n^{-1/2}` and :math:`D`
    creeps towards 2; for noise (e.g. a differenced history, as :func:`history_complexity` passes it)
    :math:`d` grows only like :math:`\sqrt{\log n}` while :math:`L \propto n`, so :math:`D` keeps growing with
    :math:`T` (white noise: 3.9 +- 1.5 at T = 24, 4.8 +- 0.8 at T = 200, 5.5 +- 0.7 at T = 1000) and its spread
    is large: no length up to 1000 tells fGn, walks and fBm paths apart reliably (docs/method.md section 8b).
    Values compare only between series of the same length: read them beside the null of that length
    (``benchmarks/noise_floors.md``; docs/method.md section 8b). This variant (antropy's) is the one logged.

    Args:
        x: ``[..., T]`` real series.

    Returns:
        ``[...]``, dtype of ``x`` (float32 for half inputs).

    Example:
        >>> import torch
        >>> katz_fd(torch.tensor([0.0, 1.0, 2.0, 3.0]))
        tensor(1.)
        >>> round(float(katz_fd(torch.tensor([0.0, 2.0, 1.0, 3.0]))), 4)  # log10(3) / log10(3 / (5 / 3))
        1.8691
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


def complexity_defined_from(detrend: str | None = "diff", kmax: int = 10) -> dict[str, int]:
    """Sample points each key of :func:`history_complexity` needs before it is defined (not NaN).

    Example:
        >>> complexity_defined_from()
        {'higuchi_fd': 21, 'katz_fd': 4, 'mfdfa_width': 25}
    """
    from lightning_dynamics.functional.mfdfa import min_mfdfa_length

    extra = 1 if detrend == "diff" else 0
    return {
        "higuchi_fd": min_higuchi_length(kmax) + extra,
        "katz_fd": 3 + extra,
        "mfdfa_width": min_mfdfa_length() + extra,
    }


def history_complexity(
    x: Tensor, detrend: str | None = "diff", kmax: int = 10, q: Sequence[float] | Tensor | None = None
) -> dict[str, Tensor]:
    r"""Per-layer fractal and multifractal descriptors of a history ``x: [..., L, T]``, for the monitor.

    Each layer's series is first preprocessed as for the phase and DFA measures
    (:func:`~lightning_dynamics.functional.detrend`, docs/method.md section 1), then:

    - ``higuchi_fd``: :func:`higuchi_fd` (1 for a smooth curve, 2 for white noise);
    - ``katz_fd``: :func:`katz_fd`;
    - ``mfdfa_width``: width :math:`\max\alpha - \min\alpha` of the MF-DFA singularity spectrum
      (:func:`~lightning_dynamics.functional.mfdfa`; about 0.1 or less for a monofractal).

    A key whose measure is not defined for this ``T`` (:func:`complexity_defined_from`) is all NaN, with an
    :class:`InsufficientDataWarning` that gives the reason; an excluded layer (constant or too many missing
    points, as :func:`~lightning_dynamics.functional.detrend` decides) is NaN in every key. Moharil et al.,
    arXiv:2407.09585, describe network dynamics by such fractal dimensions.

    Args:
        x: ``[..., L, T]`` layer history.
        detrend: ``"diff"`` (default), ``"linear"``, ``"mean"`` or ``None``.
        kmax: largest Higuchi lag.
        q: MF-DFA moments (default ``functional.mfdfa.DEFAULT_Q``).

    Returns:
        ``{"higuchi_fd", "katz_fd", "mfdfa_width"}``, each ``[..., L]``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> walks = torch.randn(3, 400, generator=g).cumsum(-1)  # 3 layers; "diff" turns them into white noise
        >>> out = history_complexity(walks)
        >>> sorted(out), out["higuchi_fd"].shape
        (['higuchi_fd', 'katz_fd', 'mfdfa_width'], torch.Size([3]))
        >>> bool(((out["higuchi_fd"] - 2).abs() < 0.1).all())
        True
    """
    from lightning_dynamics.functional.detrend import detrend as detrend_series
    from lightning_dynamics.functional.mfdfa import DEFAULT_Q, mfdfa

    x = as_float_series(x, min_dim=2)
    detrended = detrend_series(x, detrend)
    series, valid = detrended.series, detrended.valid
    nan = torch.full(series.shape[:-1], float("nan"), dtype=series.dtype, device=series.device)
    out = {
        "higuchi_fd": higuchi_fd(series, kmax),
        "katz_fd": katz_fd(series),
        "mfdfa_width": mfdfa(series, q=DEFAULT_Q if q is None else q).width,
    }
    return {key: torch.where(valid, value, nan) for key, value in out.items()}
