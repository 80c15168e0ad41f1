"""Reliable minimum series lengths of the measures, measured (docs/method.md section 8b).

PRELIMINARY: the numbers below are placeholders-by-judgement from the issue's first measurements and are being
replaced by the ones derived from ``benchmarks/results/noise_floors.json`` (``benchmarks/noise_floors.py``).
The names and signatures of this module are stable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

RELIABLE_MIN_POINTS: dict[str, int] = {
    "integration_alpha": 200,
    "integration": 200,
    "metastability": 64,
    "synchrony": 64,
    "phase_integration": 64,
    "stability_index": 64,
    "higuchi_fd": 64,
    "katz_fd": 200,
    "mfdfa_width": 400,
    "lyapunov_rosenstein": 200,
}

DEFAULT_MEASURES = ("integration_alpha", "integration", "metastability", "synchrony", "phase_integration")


def reliable_min_points(measure: str) -> int:
    """The shortest history (sample points) at which ``measure`` is reliable (see :data:`RELIABLE_MIN_POINTS`).

    Example:
        >>> reliable_min_points("metastability") == RELIABLE_MIN_POINTS["metastability"]
        True
    """
    if measure not in RELIABLE_MIN_POINTS:
        raise ValueError(f"`measure` must be one of {sorted(RELIABLE_MIN_POINTS)}, got {measure!r}.")
    return RELIABLE_MIN_POINTS[measure]


def is_reliable(measure: str, n_points: int) -> bool:
    """Whether a history of ``n_points`` sample points reaches the reliable minimum of ``measure``.

    Example:
        >>> is_reliable("metastability", 10)
        False
    """
    return n_points >= reliable_min_points(measure)


def recommend_points_per_epoch(within_epochs: int = 3, measures: Iterable[str] = DEFAULT_MEASURES) -> int:
    """Sample points per epoch so that every measure in ``measures`` is reliable after ``within_epochs`` epochs.

    Example:
        >>> recommend_points_per_epoch(4, ["metastability"]) == math.ceil(RELIABLE_MIN_POINTS["metastability"] / 4)
        True
    """
    if int(within_epochs) != within_epochs or within_epochs < 1:
        raise ValueError(f"`within_epochs` must be an integer >= 1, got {within_epochs!r}.")
    needed = max(reliable_min_points(m) for m in measures)
    return math.ceil(needed / within_epochs)
