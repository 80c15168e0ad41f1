import numpy as np
import pytest
import torch

from lightning_dynamics.functional import (
    circular_shift_surrogates,
    integration,
    metastability,
    phase_integration,
    phase_randomized_surrogates,
    surrogate_test,
    synchrony,
    time_shuffle_surrogates,
)


def test_phase_surrogates_keep_each_power_spectrum() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, dtype=torch.float64).cumsum(-1)
    s = phase_randomized_surrogates(x, 5, generator=g)
    assert s.shape == (5, 3, 64)
    torch.testing.assert_close(torch.fft.rfft(s).abs(), torch.fft.rfft(x).abs().expand(5, 3, 33))
    assert not torch.allclose(s[0], x)


def test_shift_surrogates_are_rotations() -> None:
    x = torch.arange(10.0).expand(2, 10)
    s = circular_shift_surrogates(x, 4, generator=torch.Generator().manual_seed(1))
    for k in range(4):
        for layer in range(2):
            shift = int(s[k, layer, 0])
            torch.testing.assert_close(s[k, layer], torch.roll(x[layer], -shift))


@pytest.mark.parametrize("method", ["phase", "shift"])
def test_coupled_layers_are_significant_and_independent_are_not(method: str) -> None:
    g = torch.Generator().manual_seed(3)
    common = torch.randn(256, generator=g, dtype=torch.float64)
    coupled = common + 0.3 * torch.randn(8, 256, generator=g, dtype=torch.float64)
    independent = torch.randn(8, 256, generator=g, dtype=torch.float64)
    strong = surrogate_test(synchrony, coupled, n=40, method=method, detrend="mean", generator=g)
    null = surrogate_test(synchrony, independent, n=40, method=method, detrend="mean", generator=g)
    assert float(strong.z) > 5 and float(strong.p) <= 1 / 41 + 1e-12
    assert abs(float(null.z)) < 3 and float(null.p) > 0.01


def test_result_fields_match_manual_computation() -> None:
    x = torch.randn(2, 6, 100, dtype=torch.float64).cumsum(-1)
    result = surrogate_test(metastability, x, n=10, generator=torch.Generator().manual_seed(0))
    assert result.value.shape == (2,)
    torch.testing.assert_close(result.value, metastability(x))
    torch.testing.assert_close(result.z, (result.value - result.surrogate_mean) / result.surrogate_std)
    assert ((result.p > 0) & (result.p <= 1)).all()


def test_works_with_integration_and_phase_integration() -> None:
    x = torch.randn(6, 64, dtype=torch.float64).cumsum(-1)
    for measure in (integration, phase_integration):
        out = surrogate_test(measure, x, n=5, generator=torch.Generator().manual_seed(0))
        assert np.isfinite(float(out.value)) and np.isfinite(float(out.surrogate_mean))


def test_invalid_arguments() -> None:
    x = torch.randn(3, 40)
    with pytest.raises(ValueError, match="`n`"):
        surrogate_test(metastability, x, n=1)
    with pytest.raises(ValueError, match="`method`"):
        surrogate_test(metastability, x, method="bootstrap")
    with pytest.raises(ValueError, match="`alternative`"):
        surrogate_test(metastability, x, alternative="bigger")


def test_time_shuffle_applies_one_permutation_to_every_layer() -> None:
    # One shared permutation keeps the layers' correlation at equal times; each layer keeps its own values.
    x = torch.randn(2, 5, 40, dtype=torch.float64)
    s = time_shuffle_surrogates(x, 7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (7, 2, 5, 40)
    torch.testing.assert_close(s.sort(-1).values, x.sort(-1).values.expand(7, 2, 5, 40))
    for k in range(7):
        for batch in range(2):
            permutation = (s[k, batch, 0][:, None] == x[batch, 0][None, :]).double().argmax(-1)
            torch.testing.assert_close(s[k, batch], x[batch][:, permutation])
    assert not torch.equal(s[0, 0], x[0])
    # Different surrogates and different batch entries draw their own permutations.
    assert not torch.equal(s[0, 0, 0], s[1, 0, 0])
