import math

import numpy as np
import pytest
import scipy.signal
import torch

from lightning_dynamics.functional import (
    InsufficientDataWarning,
    kuramoto_order_parameter,
    metastability,
    synchrony,
)


def _locked_sinusoids(n_layers: int = 6, n: int = 512) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64)
    amplitudes = torch.linspace(0.5, 3.0, n_layers, dtype=torch.float64).unsqueeze(-1)
    return amplitudes * torch.sin(2 * math.pi * t / 32) + 5.0  # same phase, different gains and offset


@pytest.mark.parametrize("pad", ["reflect", None])
def test_phase_locked_sinusoids_give_r_one_and_m_zero(pad: str | None) -> None:
    x = _locked_sinusoids()
    assert float(synchrony(x, detrend="mean", pad=pad)) == pytest.approx(1.0, abs=1e-9)
    assert float(metastability(x, detrend="mean", pad=pad)) == pytest.approx(0.0, abs=1e-9)


def test_equally_spaced_phases_give_r_zero() -> None:
    for n_layers in (2, 3, 5, 12):
        offsets = 2 * math.pi * torch.arange(n_layers, dtype=torch.float64) / n_layers
        t = torch.linspace(0, 10, 50, dtype=torch.float64)
        phases = offsets.unsqueeze(-1) + t
        assert kuramoto_order_parameter(phases).abs().max() < 1e-12


def test_order_parameter_equals_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 100)).cumsum(-1)
    d = np.diff(x, axis=-1)
    d = (d - d.mean(-1, keepdims=True)) / d.std(-1, keepdims=True)
    phases = np.angle(scipy.signal.hilbert(d))
    r = np.abs(np.exp(1j * phases).mean(0))
    assert float(metastability(torch.tensor(x), pad=None)) == pytest.approx(r.std(), abs=1e-10)
    assert float(synchrony(torch.tensor(x), pad=None)) == pytest.approx(r.mean(), abs=1e-10)


def test_white_noise_finite_size_floor() -> None:
    # L independent unit phasors: E[R] = sqrt(pi) / (2 sqrt(L)) (Rayleigh), about 0.256 for L = 12.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, 1000, generator=g, dtype=torch.float64)
    r = synchrony(x, detrend=None).mean()
    assert float(r) == pytest.approx(math.sqrt(math.pi) / (2 * math.sqrt(12)), rel=0.05)
    assert 0.10 < float(metastability(x, detrend=None).mean()) < 0.18


def test_excluded_layers_do_not_enter() -> None:
    x = _locked_sinusoids(4)
    with_constant = torch.cat([x, torch.full((2, x.shape[-1]), 3.0, dtype=x.dtype)])
    with_nan = x.clone()
    with_nan = torch.cat([with_nan, torch.full((1, x.shape[-1]), float("nan"), dtype=x.dtype)])
    for y in (with_constant, with_nan):
        assert float(synchrony(y, detrend="mean")) == pytest.approx(1.0, abs=1e-9)


def test_all_layers_excluded_gives_nan() -> None:
    assert metastability(torch.ones(3, 50)).isnan()


def test_too_short_is_nan_with_a_reason() -> None:
    with pytest.warns(InsufficientDataWarning, match="T >= 5"):
        assert metastability(torch.randn(2, 3, 4)).isnan().all()


def test_masked_order_parameter_equals_subset() -> None:
    phases = torch.rand(3, 5, 20, dtype=torch.float64) * 6
    valid = torch.tensor([True, False, True, True, False]).expand(3, 5)
    torch.testing.assert_close(kuramoto_order_parameter(phases, valid), kuramoto_order_parameter(phases[:, [0, 2, 3]]))
