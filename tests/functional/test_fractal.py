"""Higuchi and Katz fractal dimension: antropy oracle, theory, batching, dtypes, short series; history_complexity."""

import warnings

import antropy
import numpy as np
import pytest
import torch

from lightning_dynamics.functional import (
    InsufficientDataWarning,
    complexity_defined_from,
    higuchi_fd,
    history_complexity,
    katz_fd,
)


def _series(seed: int, n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.standard_normal(n), rng.standard_normal(n).cumsum(), np.sin(np.arange(n) / 7.0)])


@pytest.mark.parametrize("kmax", [2, 5, 10, 25])
def test_higuchi_equals_antropy(kmax: int) -> None:
    x = _series(kmax)
    ref = np.array([antropy.higuchi_fd(row, kmax=kmax) for row in x])
    np.testing.assert_allclose(higuchi_fd(torch.tensor(x), kmax).numpy(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [20, 21, 33, 1000])
def test_higuchi_equals_antropy_at_any_length(n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n)
    assert abs(float(higuchi_fd(torch.tensor(x), 10)) - antropy.higuchi_fd(x, kmax=10)) <= 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_katz_equals_antropy(seed: int) -> None:
    x = _series(seed, 300)
    ref = np.array([antropy.katz_fd(row) for row in x])
    np.testing.assert_allclose(katz_fd(torch.tensor(x)).numpy(), ref, rtol=0, atol=1e-6)


def test_theory_noise_line_and_walk() -> None:
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(8, 4000, generator=g, dtype=torch.float64)
    assert ((higuchi_fd(noise) - 2.0).abs() < 0.05).all()
    line = torch.linspace(-3, 5, 500, dtype=torch.float64)
    assert abs(float(higuchi_fd(line)) - 1.0) < 1e-9
    assert abs(float(katz_fd(line)) - 1.0) < 1e-9
    # Brownian motion: Higuchi D = 2 - H = 1.5.
    assert ((higuchi_fd(noise.cumsum(-1)) - 1.5).abs() < 0.1).all()
    # Katz grows with roughness: noise above a random walk above a line.
    assert (katz_fd(noise) > katz_fd(noise.cumsum(-1))).all()


def test_batched_like_a_loop_and_float32() -> None:
    x = torch.randn(2, 3, 200, dtype=torch.float64)
    for fn in (higuchi_fd, katz_fd):
        looped = torch.stack([torch.stack([fn(x[i, j]) for j in range(3)]) for i in range(2)])
        torch.testing.assert_close(fn(x), looped)
        single = fn(x.float())
        assert single.dtype == torch.float32
        torch.testing.assert_close(single.double(), fn(x), rtol=0, atol=1e-4)


def test_device(device: str) -> None:
    x = torch.randn(4, 300, dtype=torch.float64)
    for fn in (higuchi_fd, katz_fd):
        torch.testing.assert_close(fn(x.to(device)).cpu(), fn(x))


def test_short_constant_and_bad_arguments() -> None:
    with pytest.warns(InsufficientDataWarning, match="T >= 20"):
        assert torch.isnan(higuchi_fd(torch.randn(19))).item()
    with pytest.warns(InsufficientDataWarning, match="T >= 3"):
        assert torch.isnan(katz_fd(torch.randn(2))).item()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isnan(higuchi_fd(torch.ones(100))).item()
        assert torch.isnan(katz_fd(torch.ones(100))).item()
    with pytest.raises(ValueError, match="kmax"):
        higuchi_fd(torch.randn(100), kmax=1)


def test_history_complexity_keys_and_nan_with_reason() -> None:
    g = torch.Generator().manual_seed(0)
    history = torch.randn(4, 300, generator=g).cumsum(-1)
    history[2] = 1.0  # a constant layer: excluded, NaN in every key
    out = history_complexity(history)
    assert set(out) == {"higuchi_fd", "katz_fd", "mfdfa_width"}
    for value in out.values():
        assert value.shape == (4,)
        assert torch.isnan(value[2]) and torch.isfinite(value[[0, 1, 3]]).all()
    assert ((out["higuchi_fd"][[0, 1, 3]] - 2).abs() < 0.15).all()
    torch.testing.assert_close(out["higuchi_fd"][0], higuchi_fd(history[0].diff() - history[0].diff().mean()))
    need = complexity_defined_from()
    short = torch.randn(4, need["mfdfa_width"] - 1, generator=g)
    with pytest.warns(InsufficientDataWarning, match="mfdfa"):
        out = history_complexity(short)
    assert torch.isnan(out["mfdfa_width"]).all() and torch.isfinite(out["higuchi_fd"]).all()


def test_katz_is_the_step_normalised_form() -> None:
    # L / a = n steps, so antropy's log10(L/a) / log10(d/a) is Katz's log10(n) / (log10(n) + log10(d/L)).
    x = torch.tensor(_series(3, 200))
    steps = x.diff(dim=-1).abs()
    n, total = steps.shape[-1], steps.sum(dim=-1)
    extent = (x - x[..., :1]).abs().amax(dim=-1)
    normalised = np.log10(n) / (np.log10(n) + torch.log10(extent / total))
    torch.testing.assert_close(katz_fd(x), normalised, rtol=0, atol=1e-12)


def test_katz_of_noise_grows_with_length() -> None:
    # Documented, not normalised away: white-noise Katz FD is not comparable across T (docs/method.md 8b).
    g = torch.Generator().manual_seed(5)
    means = [float(katz_fd(torch.randn(400, n, generator=g, dtype=torch.float64)).mean()) for n in (24, 200, 2000)]
    assert means[0] + 0.5 < means[1] < means[2] - 0.5, means
