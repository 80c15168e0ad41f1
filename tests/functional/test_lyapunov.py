"""Rosenstein's largest Lyapunov exponent: logistic map (ln 2), nolds oracle, batching, short series."""

import nolds
import numpy as np
import pytest
import torch

from lightning_dynamics.functional import (
    InsufficientDataWarning,
    lyapunov_rosenstein,
    mean_period,
    min_rosenstein_length,
)
from lightning_dynamics.functional.reliability import RELIABLE_FROM


def _logistic(n: int, x0: float, r: float = 4.0) -> np.ndarray:
    x = np.empty(n)
    x[0] = x0
    for t in range(n - 1):
        x[t + 1] = r * x[t] * (1 - x[t])
    return x


LOGISTIC = np.stack([_logistic(1000, x0) for x0 in (0.1, 0.2, 0.3)])


def test_logistic_map_gives_ln2() -> None:
    ours = lyapunov_rosenstein(torch.tensor(LOGISTIC), emb_dim=2, min_tsep=10, trajectory_len=6)
    assert ((ours - np.log(2)).abs() < 0.05).all(), ours


@pytest.mark.parametrize(
    "params",
    [
        dict(emb_dim=2, lag=1, min_tsep=10, trajectory_len=6),
        dict(emb_dim=10, lag=1, min_tsep=None, trajectory_len=20),
        dict(emb_dim=4, lag=2, min_tsep=5, trajectory_len=10, fit_offset=2),
    ],
)
def test_equals_nolds_lyap_r_poly(params: dict) -> None:
    ours = lyapunov_rosenstein(torch.tensor(LOGISTIC), **params).numpy()
    ref = np.array([nolds.lyap_r(row, fit="poly", **params) for row in LOGISTIC])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_sine_is_regular() -> None:
    # A sine (period not a whole number of samples) is regular: its neighbours' divergence does not grow.
    t = torch.arange(1000, dtype=torch.float64)
    sine = torch.sin(2 * np.pi * t / 37.3)
    assert abs(float(lyapunov_rosenstein(sine, emb_dim=2, min_tsep=38, trajectory_len=20))) < 0.02


def test_mean_period_equals_nolds_min_tsep() -> None:
    x = torch.tensor(LOGISTIC[:, :300]).cumsum(-1)
    ours = mean_period(x)
    for row, value in zip(x.numpy(), ours.tolist(), strict=True):
        f = np.fft.rfft(row, 2 * len(row) - 1)
        freqs = np.fft.rfftfreq(2 * len(row) - 1)
        mf = np.sum(freqs[1:] * np.abs(f[1:]) ** 2) / np.sum(np.abs(f[1:]) ** 2)
        assert value == min(int(np.ceil(1 / mf)), int(0.25 * len(row)))


def test_batched_float32_and_device(device: str) -> None:
    x = torch.tensor(LOGISTIC[:, :400])
    batched = lyapunov_rosenstein(x.reshape(3, 1, 400).to(device), emb_dim=2, min_tsep=10, trajectory_len=6).cpu()
    looped = torch.stack([lyapunov_rosenstein(row, emb_dim=2, min_tsep=10, trajectory_len=6) for row in x])
    torch.testing.assert_close(batched[:, 0], looped)
    single = lyapunov_rosenstein(x.float(), emb_dim=2, min_tsep=10, trajectory_len=6)
    assert single.dtype == torch.float32
    assert ((single.double() - looped).abs() < 0.02).all()


def test_short_series_and_bad_arguments() -> None:
    with pytest.warns(InsufficientDataWarning, match="needs T >= "):
        assert torch.isnan(lyapunov_rosenstein(torch.randn(30), emb_dim=10, min_tsep=5, trajectory_len=20)).item()
    with pytest.raises(ValueError, match="emb_dim"):
        lyapunov_rosenstein(torch.randn(100), emb_dim=0)
    with pytest.raises(ValueError, match="fit_offset"):
        lyapunov_rosenstein(torch.randn(100), trajectory_len=5, fit_offset=4)


def _logistic_batch(n: int, draws: int, seed: int) -> torch.Tensor:
    starts = np.random.default_rng(seed).uniform(0.1, 0.9, draws)
    return torch.tensor(np.stack([_logistic(n + 100, x0)[100:] for x0 in starts]))


def test_defaults_recover_ln2_at_the_reliable_minimum() -> None:
    # The criterion of functional/reliability.py: |bias| + 2 sd <= ln(2) / 2 (half the gap to a regular series);
    # seeds other than the benchmark's. The old defaults (emb_dim 10, trajectory 20) gave 0.03-0.11 here.
    n = RELIABLE_FROM["lyapunov_rosenstein"]
    values = lyapunov_rosenstein(_logistic_batch(n, 200, seed=7))
    assert not values.isnan().any()
    bias, sd = float(values.mean()) - np.log(2), float(values.std())
    assert abs(bias) + 2 * sd <= np.log(2) / 2, (bias, sd)


def test_defaults_see_a_sine_as_regular() -> None:
    n = RELIABLE_FROM["lyapunov_rosenstein"]
    t = torch.arange(n, dtype=torch.float64)
    sines = torch.stack([torch.sin(2 * np.pi * t / p + p) for p in (7.3, 9.1, 11.7)])
    assert (lyapunov_rosenstein(sines).abs() < 0.1).all()


@pytest.mark.parametrize(
    "params", [dict(), dict(emb_dim=10, trajectory_len=20), dict(emb_dim=3, lag=2, trajectory_len=6)]
)
def test_min_rosenstein_length_is_true_for_the_automatic_window(params: dict) -> None:
    # A random walk's mean period is long, so its Theiler window is the cap floor(T / 4): the worst case.
    n = min_rosenstein_length(**params)
    walks = torch.randn(4, n + 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64).cumsum(-1)
    for length in range(n, n + 40):  # every length from the minimum on is accepted
        assert not lyapunov_rosenstein(walks[:, :length], **params).isnan().any(), length
    with pytest.warns(InsufficientDataWarning, match="needs T >= "):
        assert lyapunov_rosenstein(walks[:, : n - 1], **params).isnan().all()


def test_min_rosenstein_length_with_explicit_window_equals_nolds() -> None:
    for emb_dim, lag, trajectory_len, min_tsep in ((10, 1, 20, 5), (2, 1, 4, 0), (4, 3, 7, 2)):
        expected = nolds.lyap_r_len(emb_dim=emb_dim, lag=lag, trajectory_len=trajectory_len, min_tsep=min_tsep)
        assert min_rosenstein_length(emb_dim, lag, trajectory_len, min_tsep) == expected
