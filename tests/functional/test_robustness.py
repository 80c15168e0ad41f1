"""Hostile inputs to the functional measures: too few layers, missing points, extreme
magnitudes, undefined values under surrogates, empty inputs, autograd."""

import warnings

import pytest
import torch

from lightning_dynamics.functional import (
    Exclusion,
    InsufficientDataWarning,
    detrend,
    dynamics_measures,
    integration,
    integration_alpha,
    kuramoto_order_parameter,
    metastability,
    phase_integration,
    rolling_volatility,
    stability_index,
    surrogate_test,
    synchrony,
)

CROSS_LAYER = (metastability, synchrony, phase_integration)


def _walks(n_layers: int, n_points: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_layers, n_points, generator=g, dtype=dtype).cumsum(-1)


@pytest.mark.parametrize("case", ["one layer", "all but one excluded", "zero layers"])
def test_cross_layer_measures_need_two_valid_layers(case: str) -> None:
    x = _walks(4, 40)
    if case == "one layer":
        x = x[:1]
    elif case == "all but one excluded":
        x[1:] = 3.0  # constant layers
    else:
        x = x[:0]
    for measure in CROSS_LAYER:
        with pytest.warns(InsufficientDataWarning, match="at least 2 valid layers"):
            assert measure(x).isnan(), measure.__name__
    out = dynamics_measures(x)
    for key in ("metastability", "synchrony", "phase_integration"):
        assert getattr(out, key).isnan(), key
    assert out.reason is not None and "at least 2 valid layers" in out.reason
    if case == "zero layers":
        assert out.integration.isnan() and "integration needs at least one valid layer" in out.reason
    else:  # a mean of per-layer DFA exponents: one layer is enough
        assert out.integration.isfinite()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(integration(x), out.integration)


def test_kuramoto_on_too_few_layers_is_nan_with_a_warning() -> None:
    with pytest.warns(InsufficientDataWarning):
        assert kuramoto_order_parameter(torch.zeros(1, 5)).isnan().all()
    with pytest.warns(InsufficientDataWarning):
        assert kuramoto_order_parameter(torch.zeros(0, 5)).isnan().all()
    with pytest.warns(InsufficientDataWarning):
        r = kuramoto_order_parameter(
            torch.zeros(2, 3, 5), valid=torch.tensor([[True, True, False], [True] + [False] * 2])
        )
    assert r[0].eq(1).all() and r[1].isnan().all()


def test_one_missing_point_does_not_blank_the_stability_index() -> None:
    x = _walks(6, 40, seed=3, dtype=torch.float32)
    x[2, 22] = float("nan")  # one bad batch in one layer
    s = stability_index(x, window=16)
    assert s[15:].isfinite().all(), s
    assert rolling_volatility(s, window=5)[19:].isfinite().all()
    d = detrend(x[:, 10:26])
    assert d.valid.all() and d.n_missing.tolist() == [0, 0, 1, 0, 0, 0]


def test_too_many_missing_points_exclude_a_layer_with_that_reason() -> None:
    x = _walks(5, 40)
    x[0, 5:10] = float("nan")  # 5 of 40: above 10 %
    x[1] = float("inf")
    x[2] = 7.0
    out = dynamics_measures(x)
    assert out.exclusion.tolist() == [Exclusion.TOO_MANY_MISSING, Exclusion.TOO_MANY_MISSING, Exclusion.CONSTANT, 0, 0]
    assert out.n_missing.tolist() == [5, 40, 0, 0, 0]
    assert out.exclusion_summary == "1 constant, 2 too many missing points"
    assert out.metastability.isfinite() and out.reason is None


@pytest.mark.parametrize("scale", [1e-23, 1e-30, 1e19, 1e30])
def test_extreme_magnitudes_give_the_same_measures(scale: float) -> None:
    x = _walks(6, 48, seed=5, dtype=torch.float32)
    reference = dynamics_measures(x)
    out = dynamics_measures(x * scale)
    assert out.valid.all() and out.exclusion.eq(0).all() and out.exclusion_summary is None
    for key in ("integration_alpha", "metastability", "synchrony", "phase_integration"):
        torch.testing.assert_close(getattr(out, key), getattr(reference, key), rtol=1e-4, atol=1e-4)


def test_surrogate_test_of_an_undefined_value_has_no_p_value() -> None:
    x = _walks(1, 64)  # one layer: metastability is undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        result = surrogate_test(metastability, x, n=5, generator=torch.Generator().manual_seed(0))
    assert result.value.isnan() and result.p.isnan() and result.z.isnan()


@pytest.mark.parametrize("shape", [(0, 40), (3, 0), (2, 0, 40)])
def test_empty_inputs_give_nan_with_a_reason_not_a_raw_error(shape: tuple[int, ...]) -> None:
    x = torch.zeros(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        for measure in (*CROSS_LAYER, integration, integration_alpha):
            assert measure(x).isnan().all(), measure.__name__
        out = dynamics_measures(x)
        result = surrogate_test(metastability, x, n=3)
    assert out.metastability.isnan().all() and out.integration.isnan().all() and out.reason
    assert result.p.isnan().all()
    if shape[-1] == 0:
        with pytest.raises(ValueError, match="non-empty time axis"):
            detrend(x)
    else:
        assert detrend(x).series.shape == (*shape[:-1], shape[-1] - 1)


@pytest.mark.parametrize("name", ["metastability", "synchrony", "integration", "stability_index"])
def test_gradients_flow_through_the_measures(name: str) -> None:
    measures = {
        "metastability": metastability,
        "synchrony": synchrony,
        "integration": integration,
        "stability_index": lambda x: stability_index(x, window=16)[..., -1],
    }
    x = _walks(3, 17, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(measures[name], (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_phase_integration_refuses_gradients_clearly() -> None:
    with pytest.raises(ValueError, match=r"phase_integration.*not differentiable"):
        phase_integration(_walks(3, 20).requires_grad_())
