import math
import warnings

import numpy as np
import pytest
import torch

from lightning_dynamics.functional import (
    InsufficientDataWarning,
    combine_stability,
    integration,
    metastability,
    rolling_volatility,
    stability_index,
)


def test_stability_index_equals_window_by_window_loop() -> None:
    x = torch.randn(2, 5, 30, dtype=torch.float64).cumsum(-1)
    s = stability_index(x, window=16)
    assert s.shape == (2, 30)
    assert s[..., :15].isnan().all()
    for t in range(15, 30):
        window = x[..., t - 15 : t + 1]
        expected = 0.5 * integration(window) + 0.5 * torch.clamp(metastability(window) / 0.5, max=1.0)
        torch.testing.assert_close(s[..., t], expected)


def test_expanding_window() -> None:
    x = torch.randn(4, 24, dtype=torch.float64).cumsum(-1)
    s = stability_index(x, window=16, expanding=True)
    segment = x[..., :20]
    expected = combine_stability(integration(segment), metastability(segment))
    torch.testing.assert_close(s[19], expected)


def test_weights_and_bounds() -> None:
    x = torch.randn(6, 60).cumsum(-1)
    s_i = stability_index(x, weights=(1.0, 0.0))
    s_m = stability_index(x, weights=(0.0, 1.0))
    s = stability_index(x)
    torch.testing.assert_close(s, 0.5 * s_i + 0.5 * s_m, equal_nan=True)
    finite = s[15:]
    assert ((finite >= 0) & (finite <= 1)).all()
    with pytest.raises(ValueError, match="`weights`"):
        stability_index(x, weights=(-1.0, 1.0))
    with pytest.raises(ValueError, match="`window`"):
        stability_index(x, window=1)


def test_too_short_is_all_nan_with_a_reason() -> None:
    with pytest.warns(InsufficientDataWarning, match="window=16"):
        assert stability_index(torch.randn(3, 10)).isnan().all()


def test_rolling_volatility_equals_numpy() -> None:
    s = np.random.default_rng(0).random(40)
    s[:7] = np.nan
    ours = rolling_volatility(torch.tensor(s), window=5).numpy()
    expected = np.full(40, np.nan)
    for t in range(4, 40):
        expected[t] = np.std(s[t - 4 : t + 1])
    np.testing.assert_allclose(ours, expected, equal_nan=True)


def test_rolling_volatility_closed_form_and_errors() -> None:
    out = rolling_volatility(torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 1.0]), window=3)
    assert math.isnan(float(out[1]))
    assert float(out[2]) == pytest.approx(math.sqrt(2 / 9))
    assert float(out[5]) == 0.0
    with pytest.raises(ValueError, match="`window`"):
        rolling_volatility(torch.randn(10), window=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rolling_volatility(torch.randn(3), window=5).isnan().all()
