"""Analytic signal and instantaneous phase through the FFT Hilbert transform.

Reference: Marple, S. L. (1999), "Computing the discrete-time analytic signal via FFT", IEEE Trans. Signal
Process. 47(9):2600-2603; the same construction as :func:`scipy.signal.hilbert`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_dynamics.functional._checks import as_float_series, check_choice, shape_cache

PAD_CHOICES = ("reflect", None)


def hilbert_transform(x: Tensor, dim: int = -1) -> Tensor:
    r"""Discrete Hilbert transform :math:`\mathcal{H}[x]`, the imaginary part of :func:`analytic_signal`.

    .. math:: \mathcal{H}[x] = \mathrm{IRFFT}\big(-i\,\mathrm{sgn}(k)\,\mathrm{RFFT}(x)_k\big)

    Equal to ``scipy.signal.hilbert(x).imag``: a real input's spectrum is Hermitian, so the one-sided
    transforms hold every bin, at about half the cost of full complex FFTs (Marple 1999). Lengths with a
    prime factor above 7 (slow FFT sizes) are computed as the equivalent convolution with the length-N
    Hilbert kernel on a fast FFT size (see :func:`fast_fft_length`); the result is the same to rounding.

    Example:
        >>> import torch
        >>> t = torch.arange(8, dtype=torch.float64)
        >>> torch.allclose(hilbert_transform(torch.cos(2 * torch.pi * t / 8)), torch.sin(2 * torch.pi * t / 8))
        True
    """
    x = as_float_series(x).movedim(dim, -1)
    n = x.shape[-1]
    if n == 0:
        raise ValueError(f"`x` must have a non-empty time axis (dim={dim}), got shape {tuple(x.shape)}.")
    if x.numel() == 0:  # an empty batch (e.g. zero layers): nothing to transform; FFT backends reject it
        return torch.zeros_like(x).movedim(-1, dim)
    return _hilbert_window(x, 0, n).movedim(-1, dim)


def fast_fft_length(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are 2, 3 and 5 only (fast on every FFT backend).

    Example:
        >>> fast_fft_length(19997), fast_fft_length(1024)
        (20000, 1024)
    """
    m = max(1, n)
    while _largest_prime_factor(m) > 5:
        m += 1
    return m


def _largest_prime_factor(n: int) -> int:
    largest, factor = 1, 2
    while factor * factor <= n:
        while n % factor == 0:
            largest, n = factor, n // factor
        factor += 1
    return max(largest, n)


def _hilbert_window(x: Tensor, start: int, length: int) -> Tensor:
    """``hilbert_transform(x)[..., start : start + length]`` for ``x: [..., N]`` (time last)."""
    n = x.shape[-1]
    if _largest_prime_factor(n) <= 7:
        spectrum = torch.fft.rfft(x, dim=-1) * _hilbert_multiplier(n, x.dtype, x.device)
        return torch.fft.irfft(spectrum, n=n, dim=-1)[..., start : start + length]
    # The circular transform is a circular convolution with the kernel k = H[delta]:
    #   H[x](start + t) = sum_m x[m] k[(start + t - m) mod N],  t < length,
    # the "valid" part of a linear convolution of x with g[i] = k[(start + i - N + 1) mod N], i < N + length - 1,
    # which a circular convolution of any size m >= N + length - 1 gives exactly: pick a fast one.
    size = fast_fft_length(n + length - 1)
    kernel = _hilbert_kernel_spectrum(n, start, length, size, x.dtype, x.device)
    out = torch.fft.irfft(torch.fft.rfft(x, n=size, dim=-1) * kernel, n=size, dim=-1)
    return out[..., n - 1 : n - 1 + length]


@shape_cache(maxsize=16)
def _hilbert_multiplier(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``-i sgn(k)`` over the one-sided spectrum of length ``n``: 0 at DC and (``n`` even) Nyquist."""
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    multiplier = torch.full((n // 2 + 1,), -1j, dtype=complex_dtype, device=device)
    multiplier[0] = 0.0
    if n % 2 == 0:
        multiplier[-1] = 0.0
    return multiplier


@shape_cache(maxsize=16)
def _hilbert_kernel_spectrum(
    n: int, start: int, length: int, size: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """RFFT (size ``size``) of the window of the length-``n`` Hilbert kernel used by :func:`_hilbert_window`."""
    kernel = torch.fft.irfft(_hilbert_multiplier(n, torch.float64, torch.device("cpu")), n=n)  # H[delta]
    index = (torch.arange(n + length - 1) + (start - n + 1)) % n
    spectrum = torch.fft.rfft(kernel[index], n=size)
    return spectrum.to(device=device, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64)


def analytic_signal(x: Tensor, dim: int = -1) -> Tensor:
    r"""Analytic signal :math:`x + i\,\mathcal{H}[x]` of a real series, computed with ``torch.fft``.

    .. math:: X = \mathrm{FFT}(x),\quad z = \mathrm{IFFT}(h \cdot X),\quad
              h_0 = 1,\ h_k = 2\ (1 \le k < \lceil N/2 \rceil),\ h_{N/2} = 1\ (N \text{ even}),\ 0 \text{ else}

    Equal to :func:`scipy.signal.hilbert` (Marple 1999); the real part is ``x`` itself and the imaginary
    part :func:`hilbert_transform`. Batched over every dimension but ``dim``; runs on the input's device.
    float32 gives complex64, float64 gives complex128; half, bfloat16, integer and boolean inputs are cast
    to float32 first.

    Args:
        x: real tensor, any shape, with the time axis at ``dim``.
        dim: the time axis.

    Returns:
        complex tensor of the shape of ``x``.

    Example:
        >>> import torch
        >>> t = torch.arange(8, dtype=torch.float64)
        >>> z = analytic_signal(torch.cos(2 * torch.pi * t / 8))
        >>> torch.allclose(z.imag, torch.sin(2 * torch.pi * t / 8))
        True
    """
    x = as_float_series(x)
    return torch.complex(x, hilbert_transform(x, dim=dim))


def reflect_pad_width(n: int) -> int:
    """Reflect-padding width used for phases: ``min(n - 1, n // 2)`` (docs/method.md section 2)."""
    return max(0, min(n - 1, n // 2))


def _reflect_pad_last(x: Tensor, width: int) -> Tensor:
    """Reflect-pad the last axis by ``width`` on both sides (numpy's ``mode="reflect"``, edge not repeated)."""
    if width == 0:
        return x
    n = x.shape[-1]
    index = torch.cat(
        [
            torch.arange(width, 0, -1, device=x.device),
            torch.arange(n, device=x.device),
            torch.arange(n - 2, n - 2 - width, -1, device=x.device),
        ]
    )
    return x.index_select(-1, index)


def instantaneous_phase(x: Tensor, dim: int = -1, pad: str | None = "reflect") -> Tensor:
    r"""Instantaneous phase :math:`\varphi(t) = \arg(x(t) + i\,\mathcal{H}[x](t))` in :math:`(-\pi, \pi]`.

    With ``pad="reflect"`` (default) each series is reflect-padded by ``min(T-1, T//2)`` points on both
    sides before the transform and trimmed after, which reduces the FFT's wrap-around edge artefacts;
    ``pad=None`` gives exactly ``numpy.angle(scipy.signal.hilbert(x))`` (docs/method.md section 2).

    Args:
        x: real tensor ``[..., T]`` (time at ``dim``); detrend it first (see :func:`detrend`), the phase of a
            trend is meaningless.
        dim: the time axis.
        pad: ``"reflect"`` or ``None``.

    Returns:
        real tensor of the shape of ``x``, same floating dtype (float32 for half inputs).

    Example:
        >>> import torch
        >>> t = torch.arange(64, dtype=torch.float64)
        >>> phase = instantaneous_phase(torch.cos(2 * torch.pi * t / 16), pad=None)
        >>> round(float(phase[4]), 4)  # a quarter period in: pi / 2
        1.5708
    """
    real, imag = _padded_analytic_parts(x, dim, pad)
    return torch.atan2(imag, real).movedim(-1, dim)


def unit_phasors(x: Tensor, dim: int = -1, pad: str | None = "reflect") -> tuple[Tensor, Tensor]:
    r""":math:`(\cos\varphi, \sin\varphi)` of the instantaneous phase, without computing the angle.

    .. math:: (\cos\varphi, \sin\varphi) = (x, \mathcal{H}[x]) / |x + i\,\mathcal{H}[x]|

    what the Kuramoto order parameter and the phase-locking value need (same ``pad`` as
    :func:`instantaneous_phase`); a point where the analytic signal is zero has phase 0, as ``angle(0)``.

    Returns:
        ``(cos, sin)``, real tensors of the shape of ``x``.

    Example:
        >>> import torch
        >>> t = torch.arange(64, dtype=torch.float64)
        >>> cos, sin = unit_phasors(torch.cos(2 * torch.pi * t / 16), pad=None)
        >>> round(float(cos[4]), 6), round(float(sin[4]), 6)  # a quarter period in: phase pi / 2
        (0.0, 1.0)
    """
    real, imag = _padded_analytic_parts(x, dim, pad)
    modulus = torch.hypot(real, imag)
    zero = modulus == 0
    inverse = torch.where(zero, torch.zeros_like(modulus), modulus.reciprocal())
    cos = torch.where(zero, torch.ones_like(modulus), real * inverse)
    return cos.movedim(-1, dim), (imag * inverse).movedim(-1, dim)


def _padded_analytic_parts(x: Tensor, dim: int, pad: str | None) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of the analytic signal of the (reflect-padded, then trimmed) series, time last."""
    check_choice("pad", pad, PAD_CHOICES)
    x = as_float_series(x).movedim(dim, -1)
    n = x.shape[-1]
    if n == 0:
        raise ValueError(f"`x` must have a non-empty time axis (dim={dim}), got shape {tuple(x.shape)}.")
    if x.numel() == 0:  # an empty batch (e.g. zero layers)
        return x, torch.zeros_like(x)
    width = reflect_pad_width(n) if pad == "reflect" else 0
    return x, _hilbert_window(_reflect_pad_last(x, width), width, n)
