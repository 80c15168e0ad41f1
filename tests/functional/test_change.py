"""relative_change and its permutation test: closed forms, an explicit-loop oracle, edge cases."""

import math

import numpy as np
import pytest
import torch

from lightning_dynamics.functional import InsufficientDataWarning
from lightning_dynamics.functional.change import (
    median_relative_change,
    relative_change,
    relative_change_defined_from,
    relative_change_test,
)


def reference_relative_change(x: np.ndarray, window: int) -> np.ndarray:
    """The formula of the module docstring, written out with numpy."""
    changes = np.abs(np.diff(x, axis=-1))
    n = changes.shape[-1]
    return changes[..., n - window :].mean(-1) / changes[..., : n // 2].mean(-1)


def test_matches_the_formula_written_out() -> None:
    x = np.random.default_rng(0).standard_normal((3, 5, 41)).cumsum(-1)
    for window in (1, 5, 20):
        np.testing.assert_allclose(
            relative_change(torch.from_numpy(x), window).numpy(), reference_relative_change(x, window), rtol=1e-12
        )


def test_closed_forms() -> None:
    t = torch.arange(10001, dtype=torch.float64)
    # A steady drift has stationary increments: exactly 1.
    assert float(relative_change((3 * t - 2).unsqueeze(0), 10)[0]) == pytest.approx(1.0, abs=1e-12)
    # sqrt(t) (the norm of a random walk in weight space): changes ~ 1/(2 sqrt t), ratio -> 1 / (2 sqrt 2).
    assert float(relative_change(t.sqrt().unsqueeze(0), 10)[0]) == pytest.approx(1 / (2 * math.sqrt(2)), rel=0.01)
    # Geometric decay of the changes, q per step: recent / first half = q^(n-w) (1-q^w)/w / ((1-q^(n/2))/(n/2)).
    q, n, w = 0.9, 40, 5
    x = torch.tensor([sum(q**k for k in range(i)) for i in range(n + 1)], dtype=torch.float64)
    expected = q ** (n - w) * (1 - q**w) / w / ((1 - q ** (n // 2)) / (n // 2))
    assert float(relative_change(x.unsqueeze(0), w)[0]) == pytest.approx(expected, rel=1e-10)


def test_scale_free_across_layers_but_not_within() -> None:
    x = torch.randn(1, 60, generator=torch.Generator().manual_seed(1), dtype=torch.float64).cumsum(-1)
    assert torch.allclose(relative_change(1000 * x + 5, 5), relative_change(x, 5))
    shrinking = x * torch.logspace(0, -2, 60, dtype=torch.float64)  # same walk, steps shrinking 100x
    assert float(relative_change(shrinking, 5)[0]) < 0.1 < float(relative_change(x, 5)[0])


def test_stationary_increments_give_about_one() -> None:
    g = torch.Generator().manual_seed(0)
    white = torch.randn(200, 2001, generator=g, dtype=torch.float64)
    walk = torch.randn(200, 2001, generator=g, dtype=torch.float64).cumsum(-1)
    for x in (white, walk):
        ratio = relative_change(x, 200)
        assert abs(float(ratio.mean()) - 1) < 0.02 and float(ratio.min()) > 0.8


def test_undefined_cases_are_nan() -> None:
    with pytest.warns(InsufficientDataWarning, match="at least 11"):
        out = relative_change(torch.randn(2, 10), 5)
    assert out.shape == (2,) and torch.isnan(out).all()
    x = torch.randn(3, 30, dtype=torch.float64)
    x[1] = 2.0  # constant layer: no scale
    x[2, -1] = math.nan
    out = relative_change(x, 5)
    assert math.isfinite(float(out[0])) and torch.isnan(out[1:]).all()
    assert float(median_relative_change(x, 5)) == float(out[0])
    assert relative_change_defined_from(5) == 11
    assert relative_change(torch.randn(4, 0, 30), 5).shape == (4, 0)


def test_batched_and_low_precision() -> None:
    x = torch.randn(2, 3, 4, 30, dtype=torch.float64).cumsum(-1)
    out = relative_change(x, 4)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out[1, 2], relative_change(x[1, 2], 4))
    assert relative_change(x.half(), 4).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": [1.0, 2.0], "window": 2}, "`x` must be a torch.Tensor"),
        ({"x": torch.zeros(5), "window": 2}, "at least 2 dimensions"),
        ({"x": torch.zeros(2, 5, dtype=torch.complex64), "window": 2}, "must be real"),
        ({"x": torch.zeros(2, 5), "window": 0}, "`window` must be an integer >= 1, got 0"),
        ({"x": torch.zeros(2, 5), "window": True}, "`window`"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        relative_change(**kwargs)
    with pytest.raises(ValueError, match="`n_permutations`"):
        relative_change_test(torch.zeros(2, 30), 5, n_permutations=0)


def test_permutation_p_value_matches_an_explicit_loop() -> None:
    x = torch.randn(4, 33, generator=torch.Generator().manual_seed(3), dtype=torch.float64).cumsum(-1)
    x[:, 20:] *= 0.2  # the walk's steps shrink five-fold late
    window, n_perm = 4, 49
    result = relative_change_test(x, window, n_perm, torch.Generator().manual_seed(11))
    generator = torch.Generator().manual_seed(11)
    changes = (x[:, 1:] - x[:, :-1]).abs()
    steps = changes.shape[-1]
    null = []
    for _ in range(n_perm):
        permuted = changes[:, torch.randperm(steps, generator=generator)]
        ratio = permuted[:, steps - window :].mean(-1) / permuted[:, : steps // 2].mean(-1)
        null.append(float(ratio.median()))  # 4 layers: torch's median is the lower middle, as nanmedian
    observed = float(result.statistic)
    assert observed == pytest.approx(float(median_relative_change(x, window)))
    expected = (1 + sum(v <= observed for v in null)) / (1 + n_perm)
    assert float(result.p_value) == pytest.approx(expected)
    assert float(result.p_value) < 0.1  # the shrink is visible against the shuffled order


def test_p_value_is_not_small_under_the_null() -> None:
    g = torch.Generator().manual_seed(5)
    p = [float(relative_change_test(torch.randn(6, 41, generator=g).cumsum(-1), 5, 99, g).p_value) for _ in range(60)]
    assert sum(v <= 0.05 for v in p) <= 9  # about 3 of 60 expected at a valid 5% level
    assert 0.3 < float(np.mean(p)) < 0.7
