"""The measures of lightning_dynamics as plain torch functions (no Lightning import).

Every function takes tensors shaped ``[..., L, T]`` (layers by sample points) or ``[..., T]``, works on any
device, in float32 or float64 (half and bfloat16 are cast up), and is batched over leading dimensions.
Formulas: ``docs/method.md``; sources are cited in each docstring.

Undefined inputs, one rule everywhere:

- Too few sample points for a measure that reduces over time (``T = 0`` included): NaN with an
  :class:`InsufficientDataWarning` (``dynamics_measures``: NaN and the cause in ``.reason``).
- Too few valid layers: the cross-layer measures (Kuramoto ``R``, metastability, synchrony, phase
  integration) need two, integration one. ``L = 0``, ``L = 1`` or all but one layer excluded give NaN with
  the warning (``.reason``), never 0 or 1. :func:`detrend` says why each layer is excluded (:class:`Exclusion`).
- Series-to-series transforms (:func:`analytic_signal`, :func:`hilbert_transform`, :func:`instantaneous_phase`,
  :func:`unit_phasors`, :func:`detrend`) raise ``ValueError`` on an empty time axis (there is nothing to
  transform) and return empty outputs for an empty batch (``L = 0``).
- Too few dimensions, a complex input or an invalid argument: ``ValueError`` naming it.
- Autograd: metastability, synchrony, integration and stability_index are differentiable; phase integration
  (graph components) refuses inputs that require gradients with a ``ValueError``.
"""

from lightning_dynamics.functional._checks import InsufficientDataWarning
from lightning_dynamics.functional.change import median_relative_change, relative_change, relative_change_test
from lightning_dynamics.functional.detrend import Detrended, Exclusion, detrend
from lightning_dynamics.functional.dfa import dfa, dfa_scales, fluctuation_function, min_dfa_length
from lightning_dynamics.functional.fractal import (
    complexity_defined_from,
    higuchi_curve_length,
    higuchi_fd,
    history_complexity,
    katz_fd,
    min_higuchi_length,
)
from lightning_dynamics.functional.hilbert import (
    analytic_signal,
    fast_fft_length,
    hilbert_transform,
    instantaneous_phase,
    unit_phasors,
)
from lightning_dynamics.functional.integration import integration, integration_alpha, integration_from_alpha
from lightning_dynamics.functional.kuramoto import kuramoto_order_parameter, metastability, synchrony
from lightning_dynamics.functional.lyapunov import lyapunov_rosenstein, mean_period, min_rosenstein_length
from lightning_dynamics.functional.measures import DynamicsMeasures, defined_from, dynamics_measures
from lightning_dynamics.functional.mfdfa import (
    MFDFAResult,
    generalized_fluctuation,
    mfdfa,
    mfdfa_scales,
    min_mfdfa_length,
)
from lightning_dynamics.functional.phase_locking import phase_integration, phase_locking_value
from lightning_dynamics.functional.reliability import RELIABLE_FROM, is_reliable, recommend_points_per_epoch
from lightning_dynamics.functional.stability import combine_stability, rolling_volatility, stability_index
from lightning_dynamics.functional.surrogates import (
    SurrogateTestResult,
    circular_shift_surrogates,
    phase_randomized_surrogates,
    surrogate_histories,
    surrogate_test,
    time_shuffle_surrogates,
)

__all__ = [
    "RELIABLE_FROM",
    "Detrended",
    "DynamicsMeasures",
    "Exclusion",
    "InsufficientDataWarning",
    "MFDFAResult",
    "SurrogateTestResult",
    "analytic_signal",
    "circular_shift_surrogates",
    "combine_stability",
    "complexity_defined_from",
    "defined_from",
    "detrend",
    "dfa",
    "dfa_scales",
    "dynamics_measures",
    "fast_fft_length",
    "fluctuation_function",
    "generalized_fluctuation",
    "higuchi_curve_length",
    "higuchi_fd",
    "hilbert_transform",
    "history_complexity",
    "instantaneous_phase",
    "integration",
    "integration_alpha",
    "integration_from_alpha",
    "is_reliable",
    "katz_fd",
    "kuramoto_order_parameter",
    "lyapunov_rosenstein",
    "mean_period",
    "median_relative_change",
    "metastability",
    "mfdfa",
    "mfdfa_scales",
    "min_dfa_length",
    "min_higuchi_length",
    "min_mfdfa_length",
    "min_rosenstein_length",
    "phase_integration",
    "phase_locking_value",
    "phase_randomized_surrogates",
    "recommend_points_per_epoch",
    "relative_change",
    "relative_change_test",
    "rolling_volatility",
    "stability_index",
    "surrogate_histories",
    "surrogate_test",
    "synchrony",
    "time_shuffle_surrogates",
    "unit_phasors",
]
