"""MF-DFA: monofractal noise, the binomial cascade's analytic h(q), h(2) = dfa, the MFDFA package, batching."""

import numpy as np
import pytest
import torch

from lightning_dynamics.functional import (
    InsufficientDataWarning,
    dfa,
    fluctuation_function,
    generalized_fluctuation,
    mfdfa,
    mfdfa_scales,
)


def _cascade(n_max: int, a: float) -> np.ndarray:
    """Binomial multiplicative cascade (Kantelhardt et al. 2002, section 4): x_k = a^{n(k)} (1-a)^{n_max - n(k)}."""
    ones = np.array([bin(k).count("1") for k in range(2**n_max)])
    return a**ones * (1 - a) ** (n_max - ones)


def _cascade_h(q: torch.Tensor, a: float) -> torch.Tensor:
    return 1 / q - torch.log(a**q + (1 - a) ** q) / (q * np.log(2))


def test_white_noise_is_monofractal() -> None:
    g = torch.Generator().manual_seed(11)
    result = mfdfa(torch.randn(6, 4096, generator=g, dtype=torch.float64))
    assert (result.width < 0.15).all(), result.width
    assert (result.delta_h.abs() < 0.1).all()
    assert ((result.h - 0.5).abs() < 0.1).all()


@pytest.mark.parametrize("a", [0.65, 0.75])
def test_binomial_cascade_matches_analytic_h(a: float) -> None:
    q = torch.tensor([-4.0, -3, -2, -1, 1, 2, 3, 4], dtype=torch.float64)
    scales = [2**k for k in range(6, 12)]
    result = mfdfa(torch.tensor(_cascade(14, a)), q=q, scales=scales)
    analytic = _cascade_h(q, a)
    # The shape of h(q) (its multifractal part) is the analytic one to 0.01; the level to 0.05 (finite size).
    torch.testing.assert_close(result.h - result.h[5], analytic - analytic[5], rtol=0, atol=0.01)
    assert ((result.h - analytic).abs() < 0.05).all()
    assert result.width > 1.0 if a == 0.75 else result.width > 0.5


@pytest.mark.parametrize("order", [1, 2])
def test_h2_equals_dfa_on_the_same_scales(order: int) -> None:
    x = torch.randn(3, 1000, dtype=torch.float64).cumsum(-1) * 0.05 + torch.randn(3, 1000, dtype=torch.float64)
    scales = [6, 10, 17, 30, 50, 90, 160]
    result = mfdfa(x, q=[-2.0, 0.0, 2.0, 4.0], scales=scales, order=order)
    torch.testing.assert_close(result.h[..., 2], dfa(x, scales=scales, order=order), rtol=0, atol=1e-10)
    f = generalized_fluctuation(x, scales, q=[1.0, 2.0], order=order)
    torch.testing.assert_close(f[..., 1], fluctuation_function(x, scales, order=order))


def test_equals_mfdfa_package_with_both_ends() -> None:
    import MFDFA as mfdfa_package  # the dev extra installs it

    x = np.random.default_rng(5).standard_normal(2000).cumsum() * 0.1 + np.random.default_rng(6).standard_normal(2000)
    lags = np.array([8, 13, 21, 34, 55, 89])
    q = np.array([-3.0, -1.0, 1.0, 2.0, 4.0])
    _, ref = mfdfa_package.MFDFA(x, lag=lags, q=q, order=1)
    ours = generalized_fluctuation(torch.tensor(x), list(lags), q=q, both_ends=True).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


def test_q_zero_is_the_geometric_limit() -> None:
    x = torch.randn(2000, dtype=torch.float64)
    f = generalized_fluctuation(x, [10, 20, 40], q=[-1e-4, 0.0, 1e-4])
    torch.testing.assert_close(f[:, 1], f[:, 0], rtol=1e-4, atol=0)
    torch.testing.assert_close(f[:, 1], f[:, 2], rtol=1e-4, atol=0)


def test_batched_float32_device(device: str) -> None:
    x = torch.randn(2, 3, 500, dtype=torch.float64)
    full = mfdfa(x)
    looped = torch.stack([torch.stack([mfdfa(x[i, j]).h for j in range(3)]) for i in range(2)])
    torch.testing.assert_close(full.h, looped)
    torch.testing.assert_close(mfdfa(x.to(device)).h.cpu(), full.h)
    single = mfdfa(x.float())
    assert single.h.dtype == torch.float32
    torch.testing.assert_close(single.h.double(), full.h, rtol=0, atol=1e-3)


def test_short_series_and_bad_arguments() -> None:
    assert mfdfa_scales(23) == [10, 11]
    with pytest.warns(InsufficientDataWarning, match="mfdfa needs at least 3 scales"):
        result = mfdfa(torch.randn(23))
    assert torch.isnan(result.h).all() and torch.isnan(result.width)
    with pytest.raises(ValueError, match="strictly increasing"):
        mfdfa(torch.randn(100), q=[2.0, 1.0])
    with pytest.raises(ValueError, match="scales"):
        mfdfa(torch.randn(100), scales=[2, 200])


def _random_cascade(draws: int, levels: int, a: float, g: torch.Generator) -> torch.Tensor:
    mass = torch.ones(draws, 1, dtype=torch.float64)
    for _ in range(levels):
        left = torch.where(torch.rand(mass.shape, generator=g) < 0.5, a, 1 - a).to(torch.float64)
        mass = torch.stack([mass * left, mass * (1 - left)], dim=-1).reshape(draws, -1)
    return mass


def test_width_separates_noise_from_a_cascade_only_from_the_reliable_minimum() -> None:
    # RELIABLE_FROM counts history points; the monitor's "diff" leaves T - 1. Seeds other than the
    # benchmark's. At the minimum, |bias| + 2 sd <= half the gap (the criterion); well below it, white noise
    # alone spreads over half the cascade's width: the width is noise there.
    from lightning_dynamics.functional.reliability import RELIABLE_FROM

    g = torch.Generator().manual_seed(99)
    n = RELIABLE_FROM["mfdfa_width"] - 1
    truth = float(mfdfa(torch.tensor(_cascade(14, 0.75))).width)  # near the closed form's width
    levels = int(np.ceil(np.log2(n)))
    cascade = _random_cascade(300, levels, 0.75, g)[:, :n]
    for series, expected in ((torch.randn(300, n, generator=g, dtype=torch.float64), 0.0), (cascade, truth)):
        width = mfdfa(series).width
        assert abs(float(width.mean()) - expected) + 2 * float(width.std()) <= truth / 2 * 1.15, (expected, width)
    short = mfdfa(torch.randn(300, 47, generator=g, dtype=torch.float64)).width
    assert float(short.mean()) + 2 * float(short.std()) > truth / 2
