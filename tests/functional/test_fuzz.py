"""Fuzzing the functional API: random shapes, dtypes, NaN/Inf, constant and tiny inputs.

No input may crash a measure; every output is within its bounds or NaN (with a reason: a warning for a
too-short series, or an excluded-layer count).
"""

import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_dynamics.functional import (
    InsufficientDataWarning,
    dfa,
    dynamics_measures,
    integration,
    metastability,
    phase_integration,
    rolling_volatility,
    stability_index,
    surrogate_test,
    synchrony,
)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def histories(draw: st.DrawFn) -> torch.Tensor:
    layers = draw(st.integers(1, 6))
    length = draw(st.integers(1, 70))
    dtype = draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]))
    kind = draw(st.sampled_from(["walk", "noise", "constant", "tiny", "huge", "integer"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(layers, length, generator=g, dtype=torch.float64)
    if kind == "walk":
        x = x.cumsum(-1)
    elif kind == "constant":
        x = torch.full_like(x, draw(st.floats(-1e3, 1e3)))
    elif kind == "tiny":
        x = x * 1e-30
    elif kind == "huge":
        x = x * 1e30
    elif kind == "integer":
        x = (x * 3).round()
    n_bad = draw(st.integers(0, 4))
    for _ in range(n_bad):
        value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        x[draw(st.integers(0, layers - 1)), draw(st.integers(0, length - 1))] = value
    return x.to(dtype)


def _check_bounds(value: torch.Tensor, low: float, high: float) -> None:
    finite = value[~value.isnan()]
    assert ((finite >= low - 1e-6) & (finite <= high + 1e-6)).all(), value


@FUZZ
@given(x=histories())
def test_no_crash_and_bounded_outputs(x: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        out = dynamics_measures(x)
        for name, low, high in [
            ("integration", 0, 1),
            ("synchrony", 0, 1),
            ("metastability", 0, 0.5),
            ("phase_integration", 0, 1),
        ]:
            _check_bounds(getattr(out, name), low, high)
        assert 0 <= int(out.n_excluded) <= x.shape[0]
        assert not out.integration_alpha.isinf()
        # NaN only with a reason: too short (reason), or no layer left (n_excluded == L).
        for name in ("metastability", "integration"):
            if getattr(out, name).isnan():
                assert out.reason is not None or int(out.n_excluded) == x.shape[0], (name, out)
        for measure in (metastability, synchrony, integration, phase_integration):
            measure(x)
        s = stability_index(x, window=16)
        _check_bounds(s, 0, 1)
        _check_bounds(rolling_volatility(s), 0, 0.5)
        alpha = dfa(x)
        assert alpha.shape == x.shape[:-1] and not alpha.isinf().any()


@FUZZ
@given(x=histories(), method=st.sampled_from(["phase", "shift"]))
def test_surrogate_test_never_crashes(x: torch.Tensor, method: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        result = surrogate_test(metastability, x, n=4, method=method, generator=torch.Generator().manual_seed(0))
    _check_bounds(result.p, 0, 1)
