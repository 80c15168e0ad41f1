"""Property tests: shapes, bounds and dtype/device consistency over random inputs."""

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_dynamics.functional import (
    InsufficientDataWarning,
    dfa,
    dynamics_measures,
    kuramoto_order_parameter,
    rolling_volatility,
    stability_index,
)

from ..conftest import DEVICES

shapes = st.tuples(st.integers(0, 3), st.integers(1, 9), st.integers(1, 80))
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _history(batch: int, layers: int, length: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, layers, length) if batch else (layers, length)
    return torch.randn(shape, generator=g, dtype=dtype).cumsum(-1)


@FAST
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_measures_shapes_and_bounds(shape: tuple[int, int, int], seed: int) -> None:
    x = _history(*shape, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        out = dynamics_measures(x)
        s = stability_index(x, window=16)
    batch = x.shape[:-2]
    for name in ("integration", "integration_alpha", "metastability", "synchrony", "phase_integration"):
        assert getattr(out, name).shape == batch, name
    for name, lo, hi in [
        ("integration", 0, 1),
        ("synchrony", 0, 1),
        ("metastability", 0, 0.5),
        ("phase_integration", 0, 1),
    ]:
        v = getattr(out, name)
        finite = v[v.isfinite()]
        assert ((finite >= lo - 1e-9) & (finite <= hi + 1e-9)).all(), (name, v)
        assert (v.isfinite() | (out.n_excluded == shape[1]) | (out.reason is not None)).all(), name
    assert s.shape == (*batch, x.shape[-1])
    finite = s[s.isfinite()]
    assert ((finite >= 0) & (finite <= 1)).all()


@FAST
@given(phases=st.lists(st.floats(-10, 10), min_size=2, max_size=40))
def test_order_parameter_in_unit_interval(phases: list[float]) -> None:
    r = kuramoto_order_parameter(torch.tensor(phases, dtype=torch.float64).view(-1, 1))
    assert 0.0 <= float(r) <= 1.0


@FAST
@given(length=st.integers(12, 300), seed=st.integers(0, 2**16))
def test_float32_agrees_with_float64(length: int, seed: int) -> None:
    x = _history(2, 4, length, seed)
    a, b = dynamics_measures(x), dynamics_measures(x.float())
    for name in ("metastability", "synchrony", "integration_alpha"):
        torch.testing.assert_close(getattr(b, name).double(), getattr(a, name), atol=2e-3, rtol=0, equal_nan=True)


@FAST
@given(length=st.integers(2, 50), window=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_rolling_volatility_shape_and_sign(length: int, window: int, seed: int) -> None:
    s = torch.rand(3, length, generator=torch.Generator().manual_seed(seed))
    v = rolling_volatility(s, window=window)
    assert v.shape == s.shape
    assert v[..., : window - 1].isnan().all()
    assert (v[..., window - 1 :] >= 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_device_and_low_precision_inputs(device: str, dtype: torch.dtype) -> None:
    x = _history(2, 6, 64, 0, dtype=torch.float32)
    reference = dynamics_measures(x)
    out = dynamics_measures(x.to(device=device, dtype=dtype))
    assert out.metastability.dtype == torch.float32 and out.metastability.device.type == device
    tol = 1e-5 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(out.metastability.cpu(), reference.metastability, atol=tol, rtol=0)
    torch.testing.assert_close(dfa(x.to(device)).cpu(), dfa(x), atol=1e-4, rtol=0)
