"""Largest Lyapunov exponent of a scalar series (Rosenstein's method), batched over series.

Reference: Rosenstein, M. T., Collins, J. J. & De Luca, C. J. (1993), "A practical method for calculating
largest Lyapunov exponents from small data sets", Physica D 65:117-134 (docs/method.md section 9). With
the same parameters the result equals ``nolds.lyap_r(..., fit="poly")``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, warn_insufficient
from lightning_dynamics.functional._least_squares import masked_slope

# nolds caps the automatic Theiler window at a quarter of the series.
_MAX_TSEP_FACTOR = 0.25
# Upper bound on the pairwise-distance tensor of one block of series.
_BLOCK_BYTES = 64 * 2**20


def mean_period(x: Tensor) -> Tensor:
    r"""Mean period ``ceil(1 / f_mean)`` of each series, the default Theiler window of :func:`lyapunov_rosenstein`.

    .. math:: f_{mean} = \frac{\sum_{f > 0} f\, |X(f)|^2}{\sum_{f > 0} |X(f)|^2}

    with :math:`X` the FFT of ``x`` zero-padded to ``2T - 1`` points (as ``nolds.lyap_r`` does), capped at
    ``T / 4``.

    Args:
        x: ``[..., T]``.

    Returns:
        ``[...]`` integer (int64) periods.

    Example:
        >>> import math, torch
        >>> t = torch.arange(400, dtype=torch.float64)
        >>> int(mean_period(torch.sin(2 * math.pi * t / 25)))  # period 25, rounded up from the leaked spectrum
        26
    """
    x = as_float_series(x)
    n = x.shape[-1]
    size = 2 * n - 1
    power = torch.fft.rfft(x, size).abs().square()[..., 1:]
    freqs = torch.fft.rfftfreq(size, dtype=x.dtype, device=x.device)[1:]
    mean_freq = (freqs * power).sum(dim=-1) / power.sum(dim=-1)
    period = torch.ceil(1.0 / mean_freq)
    period = torch.nan_to_num(period, nan=float(n), posinf=float(n))
    return torch.clamp(period, max=int(_MAX_TSEP_FACTOR * n)).to(torch.int64)


def min_rosenstein_length(emb_dim: int = 2, lag: int = 1, trajectory_len: int = 4, min_tsep: int | None = None) -> int:
    """The shortest series :func:`lyapunov_rosenstein` accepts with these parameters, for every series.

    With an explicit ``min_tsep`` this is ``nolds.lyap_r_len``: ``(emb_dim - 1) lag + trajectory_len +
    2 min_tsep + 1``. With ``min_tsep=None`` (the default: each series' :func:`mean_period`, at most
    ``floor(T / 4)``) it is the shortest ``T`` from which on the longest automatic window fits, so that no
    series of that length or longer is refused. This is the length at which the estimator is *defined*; the
    length at which it is *reliable* is ``RELIABLE_FROM["lyapunov_rosenstein"]``
    (:mod:`~lightning_dynamics.functional.reliability`).

    Example:
        >>> min_rosenstein_length(emb_dim=10, lag=1, trajectory_len=20, min_tsep=5)
        40
        >>> min_rosenstein_length()  # the defaults, automatic Theiler window
        10
    """
    base = (emb_dim - 1) * lag + trajectory_len + 1
    if min_tsep is not None:
        return base + 2 * min_tsep
    # Accepted iff T >= base + 2 * floor(T / 4); T - 2 floor(T / 4) is not monotone, but >= T / 2, so every
    # T >= 2 * base is accepted: the answer is one past the last refused length below that.
    refused = [t for t in range(1, 2 * base + 1) if t < base + 2 * int(_MAX_TSEP_FACTOR * t)]
    return (max(refused) + 1) if refused else 1


def lyapunov_rosenstein(
    x: Tensor,
    emb_dim: int = 2,
    lag: int = 1,
    min_tsep: int | None = None,
    trajectory_len: int = 4,
    fit_offset: int = 0,
    tau: float = 1.0,
) -> Tensor:
    r"""Largest Lyapunov exponent of each series by Rosenstein's method, batched over leading dimensions.

    The series is delay-embedded (``emb_dim`` coordinates ``lag`` apart); each orbit vector's nearest
    neighbour at least ``min_tsep`` steps away in time is followed for ``trajectory_len`` steps, and

    .. math:: d(k) = \big\langle \ln \| v_{i+k} - v_{j(i)+k} \| \big\rangle_i,\qquad
              \lambda = \frac{1}{\tau}\,\text{least-squares slope of } d(k) \text{ over } k \ge \text{fit\_offset}

    (Rosenstein et al. 1993, Physica D 65:117). Zero distances are left out of the mean, as in
    ``nolds.lyap_r``; with the same ``emb_dim``, ``lag``, ``min_tsep``, ``trajectory_len`` and
    ``fit="poly"`` the result equals nolds'. The logistic map at ``r = 4`` gives :math:`\ln 2` per step.
    Unlike nolds, ``lag`` is not estimated from the autocorrelation: one lag serves the whole batch.

    Defaults (``emb_dim=2, lag=1, trajectory_len=4, fit_offset=0``, automatic Theiler window) are chosen for
    short series (docs/method.md section 8b): neighbours in a series of T points start about ``1/T`` of the
    attractor apart, so the divergence saturates after a few steps, and a fit over 20 steps (nolds' default,
    and ours before) measures the plateau: 0.03-0.11 instead of ln 2 on the logistic map. With these defaults
    the logistic map gives ln 2 within ``|bias| + 2 sd <= ln(2) / 2`` from
    ``RELIABLE_FROM["lyapunov_rosenstein"]`` = 32 points on
    (:mod:`~lightning_dynamics.functional.reliability`): 0.61 +- 0.10 at T = 32, 0.67 +- 0.05 at 48,
    0.69 +- 0.02 at 128, while a sine gives 0.01 +- 0.02 at 32. Shorter series are accepted from
    :func:`min_rosenstein_length` on but biased low (0.39 +- 0.19 at T = 16). The defaults suit maps and
    coarsely sampled flows, whose divergence saturates within a few samples; a finely sampled flow needs a
    trajectory and fit range that cover its linear region: the Lorenz system sampled every 0.1 time units,
    with ``emb_dim=3, trajectory_len=20, fit_offset=5``, gives 0.901 +- 0.066 per unit time at T = 1000 and
    0.87 +- 0.09 at T = 400 (truth 0.906; ``benchmarks/noise_floors.md``).
    Cost: ``O(T^2 emb_dim)`` per series (all pairwise distances), batched in row blocks on CPU.

    Args:
        x: ``[..., T]`` real series.
        emb_dim: embedding dimension.
        lag: delay between embedding coordinates, in samples.
        min_tsep: Theiler window: neighbours closer than this in time are ignored; ``None`` gives each series
            its :func:`mean_period` (nolds' default).
        trajectory_len: steps each neighbour pair is followed.
        fit_offset: leading steps left out of the line fit.
        tau: sampling step, so that the exponent is per unit of time.

    Returns:
        ``[...]``, dtype of ``x`` (float32 for half inputs); NaN (with an :class:`InsufficientDataWarning`)
        for a series too short for these parameters.

    Example:
        >>> import torch
        >>> x = torch.empty(600, dtype=torch.float64)
        >>> x[0] = 0.1
        >>> for t in range(599):
        ...     x[t + 1] = 4 * x[t] * (1 - x[t])
        >>> round(float(lyapunov_rosenstein(x, emb_dim=3, min_tsep=10, trajectory_len=6)), 2)  # ln 2 = 0.693
        0.69
    """
    for name, value, low in (("emb_dim", emb_dim, 1), ("lag", lag, 1), ("trajectory_len", trajectory_len, 2)):
        if int(value) != value or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    if int(fit_offset) != fit_offset or not 0 <= fit_offset <= trajectory_len - 2:
        raise ValueError(
            f"`fit_offset` must be an integer in [0, trajectory_len - 2 = {trajectory_len - 2}], got {fit_offset!r}."
        )
    if min_tsep is not None and (int(min_tsep) != min_tsep or min_tsep < 0):
        raise ValueError(f"`min_tsep` must be a non-negative integer or None, got {min_tsep!r}.")
    if not tau > 0:
        raise ValueError(f"`tau` must be positive, got {tau!r}.")
    x = as_float_series(x)
    batch_shape, n = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, n)
    tsep = (
        mean_period(rows) if min_tsep is None else torch.full((rows.shape[0],), int(min_tsep), dtype=torch.int64)
    ).to(x.device)
    n_vectors = n - (emb_dim - 1) * lag
    n_trajectories = n_vectors - trajectory_len + 1
    longest = int(tsep.max()) if tsep.numel() else 0
    if n_vectors < 1 or n_trajectories < 2 * longest + 2:
        needed = min_rosenstein_length(emb_dim, lag, trajectory_len, longest)
        warn_insufficient(
            f"lyapunov_rosenstein with emb_dim={emb_dim}, lag={lag}, trajectory_len={trajectory_len} and "
            f"min_tsep={longest} needs T >= {needed}, got T={n}. Returning NaN."
        )
        return torch.full(batch_shape, float("nan"), dtype=x.dtype, device=x.device)
    out = torch.empty(rows.shape[0], dtype=x.dtype, device=x.device)
    steps = torch.arange(trajectory_len, dtype=x.dtype, device=x.device)
    start = 0
    # A block holds [B, m, m] pairwise distances: size the blocks by that, not by T.
    per_row = max(1, n_vectors * n_vectors * x.element_size())
    for block in rows.split(max(1, _BLOCK_BYTES // per_row)):
        size = block.shape[0]
        divergence = _divergence(block, tsep[start : start + size], emb_dim, lag, trajectory_len)
        out[start : start + size] = masked_slope(steps[fit_offset:], divergence[:, fit_offset:]) / tau
        start += size
    return out.reshape(batch_shape)


def _divergence(rows: Tensor, tsep: Tensor, emb_dim: int, lag: int, trajectory_len: int) -> Tensor:
    """Mean log distance ``[B, trajectory_len]`` of nearest-neighbour pairs followed ``k`` steps (-inf if all 0)."""
    n = rows.shape[-1]
    n_vectors = n - (emb_dim - 1) * lag
    n_trajectories = n_vectors - trajectory_len + 1
    index = torch.arange(n_vectors, device=rows.device)
    orbit = rows[:, index[:, None] + lag * torch.arange(emb_dim, device=rows.device)]  # [B, m, emb_dim]
    # Exact differences, not the |a|^2 + |b|^2 - 2ab expansion: neighbours are close, and nolds is exact too.
    dists = torch.cdist(orbit, orbit, compute_mode="donot_use_mm_for_euclid_dist")
    near_in_time = (index[:, None] - index[None, :]).abs()[None] <= tsep[:, None, None]
    candidates = dists[:, :n_trajectories, :n_trajectories].masked_fill(
        near_in_time[:, :n_trajectories, :n_trajectories], float("inf")
    )
    neighbour = candidates.argmin(dim=-1)  # [B, n_traj]
    start = torch.arange(n_trajectories, device=rows.device)
    k = torch.arange(trajectory_len, device=rows.device)
    flat = (start[:, None] + k) * n_vectors + neighbour[:, :, None] + k  # [B, n_traj, K] into [m * m]
    paired = dists.reshape(rows.shape[0], -1).gather(1, flat.reshape(rows.shape[0], -1))
    paired = paired.reshape(rows.shape[0], n_trajectories, trajectory_len)
    nonzero = paired > 0
    log_d = torch.where(nonzero, torch.log(torch.where(nonzero, paired, torch.ones_like(paired))), 0.0)
    count = nonzero.sum(dim=1)
    mean = log_d.sum(dim=1) / count.clamp(min=1)
    return torch.where(count > 0, mean, torch.full_like(mean, float("-inf")))
