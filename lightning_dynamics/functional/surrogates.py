"""Significance of a measure against surrogate data (docs/method.md section 7).

References: Theiler, J. et al. (1992), "Testing for nonlinearity in time series: the method of surrogate
data", Physica D 58:77-94 (phase randomisation); circular time shifts destroy cross-channel coupling
while keeping each channel intact (e.g. Lancaster, G. et al. (2018), "Surrogate data for hypothesis
testing of physical systems", Phys. Rep. 748:1-60).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, check_choice, warn_insufficient
from lightning_dynamics.functional.detrend import detrend as detrend_series
from lightning_dynamics.functional.detrend import detrended_length

SURROGATE_METHODS = ("phase", "shift")
ALTERNATIVES = ("greater", "less", "two-sided")


class SurrogateTestResult(NamedTuple):
    """Output of :func:`surrogate_test`; every field has the batch shape of the measure's output.

    Attributes:
        value: the measure on the data.
        surrogate_mean, surrogate_std: mean and std (ddof=1) of the measure over the surrogates.
        z: ``(value - surrogate_mean) / surrogate_std``; NaN where ``value`` is NaN.
        p: empirical p-value ``(1 + #{surrogates at least as extreme}) / (n + 1)``; NaN where ``value`` is
            NaN (an undefined measure has no significance).
    """

    value: Tensor
    surrogate_mean: Tensor
    surrogate_std: Tensor
    z: Tensor
    p: Tensor


def phase_randomized_surrogates(x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""``n`` surrogates of ``x: [..., T]``, each series' Fourier phases randomised independently.

    .. math:: \tilde x = \mathrm{IRFFT}\big(|X_k| e^{i(\arg X_k + \psi_k)}\big),\ \psi_k \sim U(0, 2\pi),
              \ \psi_0 = \psi_{N/2} = 0

    Keeps each series' power spectrum (so its DFA exponent) and destroys coupling between series.

    Returns:
        ``[n, ..., T]``.

    Example:
        >>> import torch
        >>> x = torch.randn(3, 64, dtype=torch.float64)
        >>> s = phase_randomized_surrogates(x, 5, generator=torch.Generator().manual_seed(0))
        >>> s.shape, torch.allclose(torch.fft.rfft(s).abs(), torch.fft.rfft(x).abs())
        (torch.Size([5, 3, 64]), True)
    """
    x = as_float_series(x)
    length = x.shape[-1]
    if x.numel() == 0:  # empty batch or time axis: nothing to randomise (FFT backends reject it)
        return x.expand(n, *x.shape).clone()
    spectrum = torch.fft.rfft(x, dim=-1)
    angles = torch.rand((n, *spectrum.shape), generator=generator, dtype=x.dtype, device="cpu") * (2 * torch.pi)
    angles = angles.to(x.device)
    angles[..., 0] = 0.0
    if length % 2 == 0:
        angles[..., -1] = 0.0
    return torch.fft.irfft(spectrum * torch.polar(torch.ones_like(angles), angles), n=length, dim=-1)


def circular_shift_surrogates(x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` surrogates of ``x: [..., T]``, each series rotated in time by its own random shift.

    Returns:
        ``[n, ..., T]``.

    Example:
        >>> import torch
        >>> s = circular_shift_surrogates(torch.arange(6.0), 2, generator=torch.Generator().manual_seed(0))
        >>> s.shape, bool((s.sort(-1).values == torch.arange(6.0)).all())  # rotations of the series
        (torch.Size([2, 6]), True)
    """
    x = as_float_series(x)
    length = x.shape[-1]
    shifts = torch.randint(0, length, (n, *x.shape[:-1], 1), generator=generator).to(x.device)
    index = (torch.arange(length, device=x.device) + shifts) % length
    return torch.gather(x.expand(n, *x.shape), -1, index)


def surrogate_test(
    measure: Callable[..., Tensor],
    x: Tensor,
    n: int = 20,
    method: str = "phase",
    detrend: str | None = "diff",
    alternative: str = "greater",
    generator: torch.Generator | None = None,
    **measure_kwargs: Any,
) -> SurrogateTestResult:
    r"""Compare a cross-layer measure with its values on surrogates that keep each layer, not the coupling.

    ``x`` is detrended once; the surrogates are made from the detrended layers (``method="phase"``:
    phase randomisation, ``"shift"``: circular time shifts), and ``measure(series, detrend=None,
    **measure_kwargs)`` is evaluated on the data and on all ``n`` surrogates in one batched call.

    .. math:: z = \frac{m - \bar m_{surr}}{s_{surr}},\qquad p = \frac{1 + \#\{m_{surr} \ge m\}}{n + 1}

    Args:
        measure: a batched measure ``[..., L, T] -> [...]`` accepting ``detrend=`` (e.g. :func:`metastability`,
            :func:`integration`, :func:`phase_integration`).
        x: ``[..., L, T]`` layer series.
        n: number of surrogates (>= 2).
        method: ``"phase"`` or ``"shift"``.
        detrend: preprocessing applied once before making surrogates.
        alternative: ``"greater"`` (data above surrogates), ``"less"`` or ``"two-sided"`` for ``p``.
        generator: a ``torch.Generator`` for reproducible surrogates.

    Returns:
        :class:`SurrogateTestResult`.

    Example:
        >>> import torch
        >>> from lightning_dynamics.functional import metastability
        >>> g = torch.Generator().manual_seed(0)
        >>> t = torch.arange(128.0)
        >>> common = torch.randn(128, generator=g).cumsum(0)
        >>> x = common + 0.1 * torch.randn(8, 128, generator=g)  # strongly coupled layers
        >>> result = surrogate_test(metastability, x, n=20, generator=g, alternative="two-sided")
        >>> bool(result.p <= 0.05)
        True
    """
    if int(n) != n or n < 2:
        raise ValueError(f"`n` must be an integer >= 2, got {n!r}.")
    check_choice("method", method, SURROGATE_METHODS)
    check_choice("alternative", alternative, ALTERNATIVES)
    x = as_float_series(x, min_dim=2)
    if detrended_length(x.shape[-1], detrend) < 2:
        warn_insufficient(
            f"surrogate_test needs at least 2 points after detrend={detrend!r}, got T={x.shape[-1]}. Returning NaN."
        )
        nan = torch.full(x.shape[:-2], float("nan"), dtype=x.dtype, device=x.device)
        return SurrogateTestResult(nan, nan, nan, nan, nan)
    detrended = detrend_series(x, detrend)
    series, valid = detrended.series, detrended.valid
    make = phase_randomized_surrogates if method == "phase" else circular_shift_surrogates
    surrogates = torch.where(valid.unsqueeze(-1), make(series, n, generator), torch.zeros_like(series))
    values = measure(torch.cat([series.unsqueeze(0), surrogates], dim=0), detrend=None, **measure_kwargs)
    value, surrogate_values = values[0], values[1:]
    mean = surrogate_values.mean(dim=0)
    std = surrogate_values.std(dim=0, correction=1)
    z = (value - mean) / std
    if alternative == "greater":
        extreme = surrogate_values >= value
    elif alternative == "less":
        extreme = surrogate_values <= value
    else:
        extreme = (surrogate_values - mean).abs() >= (value - mean).abs()
    p = (1.0 + extreme.sum(dim=0).to(value.dtype)) / (n + 1.0)
    # An undefined value (e.g. fewer than two valid layers) has no significance: p and z are NaN, not 1/(n+1).
    undefined = value.isnan()
    p = torch.where(undefined, torch.full_like(p, float("nan")), p)
    z = torch.where(undefined, torch.full_like(z, float("nan")), z)
    return SurrogateTestResult(value, mean, std, z, p)


def time_shuffle_surrogates(x: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` surrogates of ``x: [..., L, T]``, the time order of all ``L`` series permuted by one shared permutation.

    Keeps each series' values (so its distribution) and the correlation between the series at equal times;
    destroys every temporal correlation (a DFA exponent becomes that of white noise, about 0.5) and every
    cross-series correlation at a lag. Under the null "the vectors ``x[..., :, t]`` are exchangeable in time"
    the data and its surrogates are exchangeable, so a rank test against them holds its level whatever the
    correlation between series (as in :func:`~lightning_dynamics.functional.relative_change_test`). Permuting each
    series on its own would also remove the cross-series correlation: the spread of a cross-layer mean then
    shrinks as if the layers were independent, and layers correlated at 0.7 fell outside a nominal 5% band
    11-21% of the time (``benchmarks/null_calibration.md``). A 1-d ``x: [T]`` is one series.

    Returns:
        ``[n, ..., L, T]``.

    Example:
        >>> import torch
        >>> s = time_shuffle_surrogates(torch.arange(6.0), 3, generator=torch.Generator().manual_seed(0))
        >>> s.shape, bool((s.sort(-1).values == torch.arange(6.0)).all())
        (torch.Size([3, 6]), True)
        >>> two = torch.stack([torch.arange(6.0), 10 * torch.arange(6.0)])  # two layers, one permutation
        >>> s = time_shuffle_surrogates(two, 4, generator=torch.Generator().manual_seed(0))
        >>> bool((s[:, 1] == 10 * s[:, 0]).all())
        True
    """
    x = as_float_series(x)
    if x.dim() == 1:
        shape = (n, x.shape[-1])
    else:
        shape = (n, *x.shape[:-2], 1, x.shape[-1])
    order = torch.rand(shape, generator=generator, device="cpu").argsort(dim=-1).to(x.device)
    return torch.gather(x.expand(n, *x.shape), -1, order.expand(n, *x.shape))


NULL_METHODS = ("phase", "shuffle", "shift")


def surrogate_histories(
    x: Tensor,
    n: int,
    method: str = "phase",
    detrend: str | None = "diff",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""``n`` null histories of ``x: [..., L, T]`` that go through the same measures as ``x`` (same ``detrend``).

    The surrogates are made from each layer's detrended series :math:`d_l` (docs/method.md sections 1 and 7) and
    mapped back so that detrending them with ``detrend`` gives the surrogate series again: with ``"diff"`` the
    surrogate increments are summed (:math:`\tilde x_l(t) = \sum_{s \le t} \tilde d_l(s)`, so the differences are
    :math:`\tilde d_l` exactly); with ``"mean"``, ``"linear"`` or ``None`` the surrogate of the detrended series is
    the history itself (detrending it again changes nothing the measures see: they are scale-free). Layers that
    detrending excludes (constant, too many missing points) stay constant, so they are excluded again.

    Args:
        x: ``[..., L, T]`` layer series.
        n: number of surrogates (>= 1).
        method: ``"phase"`` (phase randomisation: keeps each layer's spectrum), ``"shuffle"`` (one time
            permutation shared by all layers: keeps each layer's values and the layers' correlation at equal times,
            destroys the temporal correlations) or ``"shift"`` (circular time shifts).
        detrend: the preprocessing the measures will apply.
        generator: for reproducible surrogates.

    Returns:
        ``[n, ..., L, T']`` with ``T' = T`` (``T`` points: a leading zero and the summed increments for ``"diff"``).

    Example:
        >>> import torch
        >>> from lightning_dynamics.functional import detrend
        >>> x = torch.randn(4, 50, dtype=torch.float64).cumsum(-1)
        >>> s = surrogate_histories(x, 3, method="shuffle", generator=torch.Generator().manual_seed(0))
        >>> d, ds = detrend(x, "diff").series, detrend(s, "diff").series
        >>> s.shape, torch.allclose(ds.sort(-1).values, d.sort(-1).values.expand(3, 4, 49))
        (torch.Size([3, 4, 50]), True)
    """
    if int(n) != n or n < 1:
        raise ValueError(f"`n` must be an integer >= 1, got {n!r}.")
    check_choice("method", method, NULL_METHODS)
    x = as_float_series(x, min_dim=2)
    detrended = detrend_series(x, detrend)
    series, valid = detrended.series, detrended.valid
    make = {
        "phase": phase_randomized_surrogates,
        "shuffle": time_shuffle_surrogates,
        "shift": circular_shift_surrogates,
    }[method]
    surrogates = torch.where(valid.unsqueeze(-1), make(series, n, generator), torch.zeros_like(series))
    if detrend != "diff":
        return surrogates
    zero = torch.zeros((*surrogates.shape[:-1], 1), dtype=surrogates.dtype, device=surrogates.device)
    return torch.cat([zero, surrogates.cumsum(dim=-1)], dim=-1)
