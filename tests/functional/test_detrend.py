import numpy as np
import pytest
import torch

from lightning_dynamics.functional import detrend


def test_diff_then_zscore() -> None:
    x = np.random.default_rng(0).standard_normal((4, 30)).cumsum(-1)
    d = np.diff(x, axis=-1)
    expected = (d - d.mean(-1, keepdims=True)) / d.std(-1, keepdims=True)
    out = detrend(torch.tensor(x))
    np.testing.assert_allclose(out.series.numpy(), expected, atol=1e-12)
    assert out.valid.all()


def test_linear_removes_a_line_exactly() -> None:
    t = torch.arange(50, dtype=torch.float64)
    noise = torch.randn(50, dtype=torch.float64)
    out = detrend(3.0 * t - 2.0 + noise, method="linear")
    line = torch.tensor(np.polyval(np.polyfit(t.numpy(), noise.numpy(), 1), t.numpy()))
    residual = noise - line
    torch.testing.assert_close(out.series, (residual - residual.mean()) / residual.std(correction=0))


def test_mean_and_none() -> None:
    x = torch.randn(3, 20, dtype=torch.float64) * 4 + 7
    torch.testing.assert_close(
        detrend(x, method="mean").series,
        (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True, correction=0),
    )
    torch.testing.assert_close(detrend(x, method=None).series, x)


@pytest.mark.parametrize("method", ["diff", "linear", "mean", None])
def test_constant_and_mostly_nonfinite_layers_are_excluded_and_zeroed(method: str | None) -> None:
    x = torch.randn(4, 25).cumsum(-1)
    x[1] = 2.5
    x[2, 3:10] = float("nan")  # 7 of 25 points missing: more than max_missing = 10%
    x[3] = float("inf")
    out = detrend(x, method=method)
    assert out.valid.tolist() == [True, False, False, False]
    assert (out.series[1:] == 0).all() and out.series.isfinite().all()


@pytest.mark.parametrize("method", ["diff", "linear", "mean", None])
def test_a_few_missing_points_are_bridged_not_poisoning(method: str | None) -> None:
    x = torch.randn(2, 40, dtype=torch.float64).cumsum(-1)
    clean = x.clone()
    x[1, 20] = float("nan")
    out = detrend(x, method=method)
    assert out.valid.all() and out.series.isfinite().all()
    assert out.n_missing.tolist() == [0, 1] and out.exclusion.tolist() == [0, 0]
    bridged = clean.clone()
    bridged[1, 20] = (clean[1, 19] + clean[1, 21]) / 2  # linear interpolation across the gap
    torch.testing.assert_close(out.series, detrend(bridged, method=method).series)


def test_missing_points_at_the_ends_take_the_nearest_value() -> None:
    x = torch.randn(1, 30, dtype=torch.float64).cumsum(-1)
    gappy = x.clone()
    gappy[0, 0] = gappy[0, -1] = float("nan")
    expected = x.clone()
    expected[0, 0], expected[0, -1] = x[0, 1], x[0, -2]
    torch.testing.assert_close(detrend(gappy, method=None).series, expected)


def test_max_missing_argument() -> None:
    x = torch.randn(1, 20).cumsum(-1)
    x[0, 5] = float("nan")
    assert not detrend(x, max_missing=0.0).valid.any()
    with pytest.raises(ValueError, match="`max_missing`"):
        detrend(x, max_missing=1.0)


def test_rounding_level_variation_counts_as_constant() -> None:
    x = torch.full((1, 40), 1000.0) + torch.randn(1, 40) * 1e-9  # below float32 resolution at 1000
    assert not detrend(x).valid.any()


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="`detrend`"):
        detrend(torch.randn(10), method="quadratic")
