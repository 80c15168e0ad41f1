"""Reliable minimum series lengths and noise floors of the measures, measured (docs/method.md section 8b).

Every number here is copied from ``benchmarks/results/noise_floors.json``, written by
``nice -n 10 .venv/bin/python benchmarks/noise_floors.py`` (tables: ``benchmarks/noise_floors.md``), and
``tests/test_noise_floors.py`` re-derives them from that file. Lengths count *history points* ``T`` (sample
points of the monitor), with each measure's defaults as the monitor computes it (``detrend="diff"``: the
estimators see the ``T - 1`` differences); Rosenstein's exponent counts points of the series it is given.

**Criterion.** For each measure a panel of signals with known, distinct truths (``PANELS`` in the benchmark:
fractional Gaussian noise H = 0.3/0.5/0.8 and walks for the DFA exponent and integration, with layers
correlated at 0.9, a conservative stand-in for real layers, which move together to an unmeasured degree;
uncoupled, coupled and switching Kuramoto ensembles of 16 layers for the phase measures and the stability
index; white noise against a binomial cascade for the MF-DFA width; fGn and fBm paths for Higuchi and Katz;
the logistic map against a sine for Rosenstein). The reliable minimum is the
shortest ``T`` of the grid (16, 24, 32, 48, 64, 96, 128, 200, 400, 1000) from which on every signal of the
panel has ``|bias| + 2 sd <= gap / 2``, ``gap`` being the distance from its truth to the nearest other truth
of the panel: a single reading then lies nearer its own truth than any other in about 97.7% of runs (normal
approximation). Katz FD has no length-free truth (it grows with ``T`` on noise, see
:func:`~lightning_dynamics.functional.katz_fd`): its panel only has to be separable at that ``T``.
A measure that no grid length qualifies gets :data:`NEVER_RELIABLE`: integration (the Gaussian map of
alpha amplifies its spread about 3.6-fold near alpha = 0.5) and Katz FD. :data:`SEPARABLE_FROM` applies
the criterion with the means at each ``T`` as truths (signals told apart beside a null of the same length);
:data:`INDEPENDENT_LAYER_RELIABLE_FROM` is the optimistic bound for uncorrelated layers; :data:`NULL_FLOORS` holds
the null of independent random-walk layers per ``T``.

The stability index is measured over one window spanning the whole series, so its entry is the window
length it needs (the default window is 16).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# A measure that no length up to the largest of the grid (1000) makes reliable.
NEVER_RELIABLE = 10**9

RELIABLE_FROM: dict[str, int] = {
    "integration_alpha": 1000,
    "integration": NEVER_RELIABLE,
    "metastability": 200,
    "synchrony": 64,
    "phase_integration": 400,
    "stability_index": 400,
    "higuchi_fd": 400,
    "katz_fd": NEVER_RELIABLE,
    "mfdfa_width": 200,
    "lyapunov_rosenstein": 32,
}
"""Shortest history (sample points) from which each measure's estimator is reliable (criterion: module docstring;
:data:`NEVER_RELIABLE` where no measured length qualifies). The tracker flags a measure computed on fewer points."""

# The same criterion with the means at each T as the truths: from these lengths on, the panel's signals are told
# apart when a reading is compared with a null of the same length (a surrogate band), though not with a
# length-free value.
SEPARABLE_FROM: dict[str, int] = {
    "integration_alpha": 1000,
    "integration": NEVER_RELIABLE,
    "metastability": 200,
    "synchrony": 64,
    "phase_integration": 96,
    "stability_index": 400,
    "higuchi_fd": 400,
    "katz_fd": NEVER_RELIABLE,
    "mfdfa_width": 200,
    "lyapunov_rosenstein": 24,
}

# The optimistic bound for the layer-mean measures: 16 independent layers (the panel above has layers correlated
# at 0.9, whose mean averages little noise away).
INDEPENDENT_LAYER_RELIABLE_FROM: dict[str, int] = {"integration_alpha": 96, "integration": 400}

# Mean and sd of each history measure on the null of 16 independent random-walk layers (their differences are
# white noise), per history length T; per-layer measures (DFA alpha, Higuchi, Katz, MF-DFA width) per layer.
NULL_FLOORS: dict[str, dict[int, tuple[float, float]]] = {
    "dfa_alpha": {
        16: (0.71, 0.524),
        24: (0.615, 0.25),
        32: (0.579, 0.19),
        48: (0.553, 0.134),
        64: (0.54, 0.11),
        96: (0.532, 0.089),
        128: (0.527, 0.077),
        200: (0.519, 0.064),
        400: (0.515, 0.048),
        1000: (0.511, 0.037),
    },
    "integration_alpha": {
        16: (0.73, 0.13),
        24: (0.617, 0.059),
        32: (0.58, 0.042),
        48: (0.551, 0.033),
        64: (0.543, 0.027),
        96: (0.533, 0.022),
        128: (0.528, 0.018),
        200: (0.52, 0.015),
        400: (0.517, 0.012),
        1000: (0.512, 0.009),
    },
    "integration": {
        16: (0.748, 0.251),
        24: (0.813, 0.163),
        32: (0.716, 0.151),
        48: (0.61, 0.128),
        64: (0.577, 0.106),
        96: (0.54, 0.088),
        128: (0.52, 0.071),
        200: (0.489, 0.059),
        400: (0.475, 0.048),
        1000: (0.455, 0.035),
    },
    "metastability": {
        16: (0.106, 0.022),
        24: (0.108, 0.02),
        32: (0.111, 0.016),
        48: (0.112, 0.013),
        64: (0.113, 0.011),
        96: (0.114, 0.009),
        128: (0.114, 0.008),
        200: (0.113, 0.006),
        400: (0.114, 0.005),
        1000: (0.114, 0.003),
    },
    "synchrony": {
        16: (0.221, 0.037),
        24: (0.22, 0.031),
        32: (0.222, 0.024),
        48: (0.222, 0.019),
        64: (0.221, 0.017),
        96: (0.222, 0.015),
        128: (0.223, 0.013),
        200: (0.222, 0.01),
        400: (0.223, 0.007),
        1000: (0.222, 0.005),
    },
    "phase_integration": {
        16: (0.554, 0.024),
        24: (0.462, 0.022),
        32: (0.407, 0.018),
        48: (0.345, 0.018),
        64: (0.306, 0.014),
        96: (0.261, 0.011),
        128: (0.234, 0.01),
        200: (0.201, 0.008),
        400: (0.16, 0.005),
        1000: (0.125, 0.004),
    },
    "stability_index": {
        16: (0.48, 0.127),
        24: (0.514, 0.086),
        32: (0.469, 0.077),
        48: (0.417, 0.065),
        64: (0.401, 0.054),
        96: (0.383, 0.045),
        128: (0.374, 0.036),
        200: (0.358, 0.03),
        400: (0.351, 0.024),
        1000: (0.341, 0.018),
    },
    "higuchi_fd": {
        24: (2.002, 0.064),
        32: (2.001, 0.057),
        48: (2.001, 0.04),
        64: (2.002, 0.033),
        96: (2.001, 0.028),
        128: (2.001, 0.023),
        200: (2.0, 0.019),
        400: (2.001, 0.013),
        1000: (2.0, 0.008),
    },
    "katz_fd": {
        16: (3.952, 2.313),
        24: (3.89, 1.486),
        32: (3.962, 1.258),
        48: (4.119, 1.084),
        64: (4.255, 1.021),
        96: (4.437, 0.913),
        128: (4.567, 0.86),
        200: (4.775, 0.804),
        400: (5.116, 0.753),
        1000: (5.535, 0.698),
    },
    "mfdfa_width": {
        32: (0.569, 0.552),
        48: (0.332, 0.263),
        64: (0.265, 0.185),
        96: (0.218, 0.135),
        128: (0.185, 0.109),
        200: (0.153, 0.08),
        400: (0.12, 0.056),
        1000: (0.086, 0.039),
    },
}

# The cross-layer measures that some length makes reliable (integration, the score, is not: read its alpha).
DEFAULT_MEASURES = ("integration_alpha", "metastability", "synchrony", "phase_integration")


def reliable_from(measure: str) -> int:
    """The shortest history (sample points) at which ``measure`` is reliable (see :data:`RELIABLE_FROM`).

    Example:
        >>> reliable_from("metastability") == RELIABLE_FROM["metastability"]
        True
    """
    if measure not in RELIABLE_FROM:
        raise ValueError(f"`measure` must be one of {sorted(RELIABLE_FROM)}, got {measure!r}.")
    return RELIABLE_FROM[measure]


def is_reliable(measure: str, n_points: int) -> bool:
    """Whether a history of ``n_points`` sample points reaches the reliable minimum of ``measure``.

    Example:
        >>> is_reliable("metastability", 10)
        False
    """
    return n_points >= reliable_from(measure)


def recommend_points_per_epoch(within_epochs: int = 3, measures: Iterable[str] = DEFAULT_MEASURES) -> int:
    """Sample points per epoch so that every measure in ``measures`` is reliable after ``within_epochs`` epochs.

    The tables count points, not epochs: several points per epoch sample the training on a finer time scale
    than one per epoch, and what a measure says about that scale is not what it says about epochs.

    Example:
        >>> recommend_points_per_epoch(4, ["metastability"]) == math.ceil(RELIABLE_FROM["metastability"] / 4)
        True
    """
    if int(within_epochs) != within_epochs or within_epochs < 1:
        raise ValueError(f"`within_epochs` must be an integer >= 1, got {within_epochs!r}.")
    needed = max(reliable_from(m) for m in measures)
    if needed >= NEVER_RELIABLE:
        unreliable = [m for m in measures if reliable_from(m) >= NEVER_RELIABLE]
        raise ValueError(f"`measures` holds {unreliable}, not reliable at any length measured (up to 1000 points).")
    return math.ceil(needed / within_epochs)


def null_floor(measure: str, n_points: int) -> tuple[float, float]:
    """Mean and sd of ``measure`` on the independent-layer null at the longest tabulated ``T <= n_points``.

    A shorter tabulated length has the wider spread, so the band is conservative; ``(nan, nan)`` below the
    shortest length at which the measure is defined.

    Example:
        >>> mean, sd = null_floor("metastability", 50)
        >>> (mean, sd) == NULL_FLOORS["metastability"][48]
        True
    """
    if measure not in NULL_FLOORS:
        raise ValueError(f"`measure` must be one of {sorted(NULL_FLOORS)}, got {measure!r}.")
    table = NULL_FLOORS[measure]
    lengths = [t for t in table if t <= n_points]
    return table[max(lengths)] if lengths else (math.nan, math.nan)
