import warnings

import antropy
import nolds
import numpy as np
import pytest
import torch
from antropy.fractal import _log_n

from lightning_dynamics.functional import InsufficientDataWarning, dfa, dfa_scales, fluctuation_function


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("order", [1, 2])
def test_dfa_equals_nolds_with_explicit_scales(seed: int, order: int) -> None:
    x = np.random.default_rng(seed).standard_normal(1500).cumsum() * 0.1 + np.random.default_rng(seed).standard_normal(
        1500
    )
    scales = [5, 8, 13, 21, 34, 55, 89, 144]
    ours = float(dfa(torch.tensor(x), scales=scales, order=order))
    ref = nolds.dfa(x, nvals=scales, overlap=False, order=order, fit_exp="poly")
    assert abs(ours - ref) <= 1e-6


@pytest.mark.parametrize("n", [500, 2000])
def test_dfa_equals_antropy_on_its_scales(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n)
    scales = [int(s) for s in _log_n(4, 0.1 * n, 1.2)]
    assert abs(float(dfa(torch.tensor(x), scales=scales)) - antropy.detrended_fluctuation(x)) <= 1e-6


def test_dfa_is_batched_like_a_loop() -> None:
    x = torch.randn(3, 4, 300, dtype=torch.float64)
    batched = dfa(x)
    looped = torch.stack([torch.stack([dfa(x[i, j]) for j in range(4)]) for i in range(3)])
    torch.testing.assert_close(batched, looped)


def test_theory_white_noise_and_random_walk() -> None:
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(16, 4096, generator=g, dtype=torch.float64)
    alpha_noise = dfa(noise)
    alpha_walk = dfa(noise.cumsum(-1))
    assert ((alpha_noise > 0.4) & (alpha_noise < 0.6)).all(), alpha_noise
    assert ((alpha_walk > 1.4) & (alpha_walk < 1.6)).all(), alpha_walk


def test_theory_long_range_correlated_noise_lies_between() -> None:
    # 1/f^beta noise with beta = 0.6 has alpha = (1 + beta) / 2 = 0.8.
    rng = np.random.default_rng(3)
    n = 8192
    freqs = np.fft.rfftfreq(n)
    spectrum = (rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)) / np.maximum(
        freqs, freqs[1]
    ) ** 0.3
    x = np.fft.irfft(spectrum, n)
    assert 0.7 < float(dfa(torch.tensor(x))) < 0.9


def test_default_scales_follow_method() -> None:
    n = 4096
    expected = np.unique(np.round(np.logspace(np.log10(4), np.log10(n // 2), 10)).astype(int))
    assert dfa_scales(n) == expected.tolist()
    for n in range(8, 200):
        assert all(4 <= s and n // s >= 2 for s in dfa_scales(n))


def test_too_short_series_is_nan_with_a_reason() -> None:
    with pytest.warns(InsufficientDataWarning, match="T >= 12"):
        out = dfa(torch.randn(5, 10))
    assert out.shape == (5,) and out.isnan().all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dfa(torch.randn(12)).isfinite()


def test_constant_series_gives_nan_not_a_number() -> None:
    assert dfa(torch.ones(100)).isnan()


def test_float32_close_to_float64() -> None:
    x = torch.randn(8, 2048, dtype=torch.float64).cumsum(-1)
    torch.testing.assert_close(dfa(x.float()).double(), dfa(x), atol=1e-3, rtol=0)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize("walk", [False, True])
def test_fluctuation_function_matches_direct_polyfit(order: int, walk: bool) -> None:
    x = np.random.default_rng(5).standard_normal(1003)
    x = x.cumsum() if walk else x  # a smooth profile: the residual is a tiny part of each segment
    y = np.cumsum(x - x.mean())
    expected = []
    for s in (order + 2, 10, 97, 501):
        segments = y[: (len(y) // s) * s].reshape(-1, s)
        t = np.arange(s)
        mse = [np.mean((seg - np.polyval(np.polyfit(t, seg, order), t)) ** 2) for seg in segments]
        expected.append(np.sqrt(np.mean(mse)))
    ours = fluctuation_function(torch.tensor(x), [order + 2, 10, 97, 501], order=order)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-8)
    ours32 = fluctuation_function(torch.tensor(x, dtype=torch.float32), [order + 2, 10, 97, 501], order=order)
    np.testing.assert_allclose(ours32.numpy(), expected, rtol=2e-3)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="`scales`"):
        dfa(torch.randn(100), scales=[2, 8])
    with pytest.raises(ValueError, match="`scales`"):
        dfa(torch.randn(100), scales=[8, 200])
    with pytest.raises(ValueError, match="`order`"):
        dfa(torch.randn(100), order=-1)
