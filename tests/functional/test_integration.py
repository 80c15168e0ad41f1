import math

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components

from lightning_dynamics.functional import (
    dfa,
    integration,
    integration_alpha,
    integration_from_alpha,
    phase_integration,
    phase_locking_value,
)
from lightning_dynamics.functional.detrend import detrend
from lightning_dynamics.functional.hilbert import instantaneous_phase


def test_integration_alpha_is_mean_dfa_of_detrended_layers() -> None:
    x = torch.randn(5, 300, dtype=torch.float64).cumsum(-1)
    d = torch.diff(x, dim=-1)
    d = (d - d.mean(-1, keepdim=True)) / d.std(-1, keepdim=True, correction=0)
    torch.testing.assert_close(integration_alpha(x), dfa(d).mean())


def test_integration_map_closed_form() -> None:
    assert float(integration_from_alpha(torch.tensor(0.7))) == pytest.approx(1.0)
    assert float(integration_from_alpha(torch.tensor(0.85))) == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError, match="`sigma`"):
        integration_from_alpha(torch.tensor(0.5), sigma=0.0)


def test_integration_in_unit_interval_and_excludes_constant_layers() -> None:
    x = torch.randn(4, 200).cumsum(-1)
    with_constant = torch.cat([x, torch.zeros(1, 200)])
    torch.testing.assert_close(integration(with_constant), integration(x))
    assert 0.0 <= float(integration(x)) <= 1.0


def _coupled_blocks(coupled: bool, n: int = 512, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    layers = []
    for block in range(2):
        drive = np.cumsum(rng.standard_normal(n)) * 0.3  # wandering phase, shared within a block
        for _ in range(4):
            own = drive if coupled else np.cumsum(rng.standard_normal(n)) * 0.3
            layers.append(np.sin(2 * np.pi * t / (20 + 7 * block) + own) + 0.2 * rng.standard_normal(n))
    return torch.tensor(np.array(layers))


def test_coupled_blocks_integrate_more_than_independent_oscillators() -> None:
    coupled = phase_integration(_coupled_blocks(True), detrend="mean")
    independent = phase_integration(_coupled_blocks(False), detrend="mean")
    assert float(coupled) > float(independent) + 0.1


def test_phase_integration_bounds_and_closed_forms() -> None:
    t = torch.arange(256, dtype=torch.float64)
    locked = torch.stack([torch.sin(2 * math.pi * t / 32 + k) for k in range(5)])  # whole periods
    assert float(phase_integration(locked, detrend=None, pad=None)) == pytest.approx(1.0)
    assert float(phase_integration(locked[:, :250], detrend=None)) > 0.95  # edges and padding: nearly
    noise = torch.randn(10, 256, dtype=torch.float64)
    value = float(phase_integration(noise))
    assert 1 / 10 <= value <= 1.0


def test_phase_integration_equals_scipy_connected_components() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 120)).cumsum(-1)
    x[3:6] = x[3] + 0.3 * rng.standard_normal((3, 120))
    d = detrend(torch.tensor(x)).series
    plv = phase_locking_value(instantaneous_phase(d)).numpy()
    sizes = []
    for theta in (np.arange(100) + 0.5) / 100:
        _, labels = connected_components(plv > theta, directed=False)
        sizes.append(np.bincount(labels).max() / 9)
    assert float(phase_integration(torch.tensor(x))) == pytest.approx(np.mean(sizes), abs=1e-12)


def test_phase_integration_batched_with_exclusions() -> None:
    x = torch.randn(3, 6, 80, dtype=torch.float64).cumsum(-1)
    x[1, 2] = 1.0  # a constant layer in one batch element
    batched = phase_integration(x)
    looped = torch.stack([phase_integration(x[0]), phase_integration(x[1, [0, 1, 3, 4, 5]]), phase_integration(x[2])])
    torch.testing.assert_close(batched, looped)


def test_phase_locking_value_properties() -> None:
    phases = torch.rand(4, 7, 30) * 6
    plv = phase_locking_value(phases)
    assert plv.shape == (4, 7, 7)
    torch.testing.assert_close(plv, plv.transpose(-1, -2))
    torch.testing.assert_close(torch.diagonal(plv, dim1=-2, dim2=-1), torch.ones(4, 7))


@pytest.mark.parametrize("n_layers", [5, 300, 600])  # 300 and 600 take the blocked triangular product on CPU
def test_phase_locking_value_equals_numpy_definition(n_layers: int) -> None:
    phases = np.random.default_rng(n_layers).uniform(-np.pi, np.pi, (2, n_layers, 40))
    phasor = np.exp(1j * phases)
    expected = np.abs(np.einsum("blt,bkt->blk", phasor, phasor.conj())) / 40
    ours = phase_locking_value(torch.tensor(phases)).numpy()
    np.testing.assert_allclose(ours, np.minimum(expected, 1.0), atol=1e-12)
