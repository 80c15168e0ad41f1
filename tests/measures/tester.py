"""One harness for every registered measure, in the manner of torchmetrics' ``MetricTester``.

A measure's test is a subclass that names it (``class TestSynchrony(MeasureTester): name = "synchrony"``); the
harness runs the measure the way the tracker does (:class:`MeasureContext` and
:func:`~lightning_dynamics.measures.registry.compute_measures`) and checks what every measure owes its user:

- float32 and float64 give the same value, in the input's dtype, on the CPU and (where there is one) on CUDA;
- a missing point (NaN) in one layer leaves the value finite (the point is imputed or the layer left out); a history
  with no finite value gives NaN;
- below its declared ``defined_from`` it is NaN, never a made-up value, and at ``defined_from`` it is finite; its
  estimator itself is NaN one point earlier (the declaration is neither too early nor too late), unless the measure
  shares its group's length;
- a batch of histories ``[n, L, T]`` gives what a loop over them gives (the noise floor relies on it);
- its null band (:func:`~lightning_dynamics.measures.registry.null_bands`, 39 null histories: edges at the 1st
  and 39th values, so the value of a history drawn from the null falls outside with probability 2/40 = 5%)
  holds about 95% of the values of histories drawn from the null.

The histories are random walks of independent layers: their differences are independent standard normal draws, a
history drawn from both nulls (docs/method.md sections 7 and 8c): time-shuffling its differences, or randomising
their phases, gives a history with the same distribution.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from lightning_dynamics.measures import MEASURES, DynamicsConfig, Measure, MeasureContext
from lightning_dynamics.measures.registry import NULL_SUFFIXES, compute_measures, null_bands

# Under the null, the number of the 40 values outside their band is Binomial(40, 0.05): mean 2,
# P(X >= 9) = 1.1e-4. More than 8 outside means the band is too narrow (the null is not a null for this measure).
NULL_HISTORIES = 40
NULL_SURROGATES = 39
NULL_MOST_OUTSIDE = 8


class MeasureTester:
    """The shared tests of one registered measure (subclass it and set :attr:`name`)."""

    name: ClassVar[str]
    n_layers: ClassVar[int] = 4
    # Tolerances between float32 and float64 (and CPU and CUDA) of the same history: float32 rounding of the
    # layer summaries, carried through FFT phases and log-log fits.
    rtol: ClassVar[float] = 1e-4
    atol: ClassVar[float] = 1e-4
    # True where the declared length is not the estimator's own: the complexity measures are computed together and
    # share their group's longest, and a count of excluded layers exists at any length.
    defined_before_declared: ClassVar[bool] = False

    @property
    def measure(self) -> Measure:
        return MEASURES[self.name]

    @property
    def config(self) -> DynamicsConfig:
        # phase integration is O(L^2) per history: computed only where it is the measure under test
        return DynamicsConfig(compute_phase_integration=self.name == "phase_integration")

    @property
    def n_points(self) -> int:
        """A history long enough for the measure to be defined (and for DFA to have its three scales)."""
        return max(self.measure.defined_from(self.config), 24)

    def history(
        self,
        n_points: int | None = None,
        batch: tuple[int, ...] = (),
        dtype: torch.dtype = torch.float64,
        seed: int = 0,
    ) -> Tensor:
        """Random walks of independent layers: ``[*batch, L, T]``."""
        generator = torch.Generator().manual_seed(seed)
        shape = (*batch, self.n_layers, self.n_points if n_points is None else n_points)
        return torch.randn(shape, generator=generator, dtype=torch.float64).cumsum(-1).to(dtype)

    def value(self, x: Tensor) -> Tensor:
        """The measure as the tracker computes it."""
        return compute_measures(MeasureContext(x, self.config), (self.name,))[self.name]

    # ---------------------------------------------------------------------------------------------- the tests

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_float32_and_float64_agree(self, dtype: torch.dtype) -> None:
        value = self.value(self.history(dtype=dtype))
        assert value.dtype == dtype and value.shape == ()
        assert math.isfinite(float(value))
        torch.testing.assert_close(value.double(), self.value(self.history()), rtol=self.rtol, atol=self.atol)

    def test_runs_on_the_histories_device(self, device: str) -> None:
        x = self.history(dtype=torch.float32)
        value = self.value(x.to(device))
        assert value.device.type == torch.device(device).type
        torch.testing.assert_close(value.cpu(), self.value(x), rtol=self.rtol, atol=self.atol)

    def test_a_missing_point_or_an_all_nan_history_gives_no_made_up_value(self) -> None:
        x = self.history()
        x[0, self.n_points // 2] = math.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an imputed point or an excluded layer may be announced
            value = float(self.value(x))
            nothing = self.value(torch.full_like(x, math.nan))
        assert math.isfinite(value), f"{self.name} lost to one missing point"
        torch.testing.assert_close(nothing, self.all_nan_value(), equal_nan=True)

    def all_nan_value(self) -> Tensor:
        """What the measure gives on a history with no finite value: NaN (counts override it)."""
        return torch.tensor(math.nan, dtype=torch.float64)

    def test_nan_below_defined_from_and_finite_from_it(self) -> None:
        first = self.measure.defined_from(self.config)
        for n_points in range(1, first):
            assert self.value(self.history(n_points)).isnan().all(), f"{self.name} made up a value at T={n_points}"
        assert math.isfinite(float(self.value(self.history(first)))), f"{self.name} undefined at T={first}"
        if self.measure.compute is not None and not self.defined_before_declared and first > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the estimator says it has too few points
                earlier = self.measure.compute(MeasureContext(self.history(first - 1), self.config))
            assert earlier.isnan().all(), f"{self.name} is defined before its declared {first} points"

    def test_a_batch_equals_a_loop(self) -> None:
        x = self.history(batch=(3,))
        batched = self.value(x)
        assert batched.shape == (3,)
        torch.testing.assert_close(batched, torch.stack([self.value(one) for one in x]), rtol=1e-9, atol=1e-9)

    def test_the_null_band_holds_about_95_percent_of_null_histories(self) -> None:
        if self.measure.null is None:
            assert null_bands(self.history(), self.config, (self.name,), NULL_SURROGATES) == {}
            return
        # one batched pass: the 40 histories' bands from their own 39 null histories each
        x = self.history(batch=(NULL_HISTORIES,), seed=1)
        generator = torch.Generator().manual_seed(2)
        bands = null_bands(x, self.config, (self.name,), NULL_SURROGATES, generator)
        lo, hi = (bands[self.name + suffix] for suffix in NULL_SUFFIXES)
        value = self.value(x)
        assert value.shape == lo.shape == hi.shape == (NULL_HISTORIES,)
        assert bool((lo <= hi).all())
        outside = int(((value < lo) | (value > hi)).sum())
        assert outside <= NULL_MOST_OUTSIDE, f"{self.name}: {outside} of {NULL_HISTORIES} outside their null band"
