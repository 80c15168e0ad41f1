"""Rosenstein's largest Lyapunov exponent: logistic map (ln 2), nolds oracle, batching, short series."""

import nolds
import numpy as np
import pytest
import torch

from lightning_dynamics.functional import InsufficientDataWarning, lyapunov_rosenstein, mean_period


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
        assert torch.isnan(lyapunov_rosenstein(torch.randn(30), emb_dim=10, min_tsep=5)).item()
    with pytest.raises(ValueError, match="emb_dim"):
        lyapunov_rosenstein(torch.randn(100), emb_dim=0)
    with pytest.raises(ValueError, match="fit_offset"):
        lyapunov_rosenstein(torch.randn(100), trajectory_len=5, fit_offset=4)
