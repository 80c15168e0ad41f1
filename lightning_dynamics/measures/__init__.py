"""The measures' settings and declarations: what is computed from a history, and what stands beside each value.

:class:`DynamicsConfig` holds the settings; :data:`MEASURES` declares every logged measure once (name, label, the
points from which it is defined and from which it is reliable, bounds, null); a :class:`MeasureContext` shares the
expensive passes of one computation between measures; :mod:`~lightning_dynamics.measures.readings` sets each latest
value beside its noise floor; :mod:`~lightning_dynamics.measures.tables` writes the registry's tables for the docs.
Imports only :mod:`~lightning_dynamics.functional`, :mod:`~lightning_dynamics.capture` and
:mod:`~lightning_dynamics.validation`; no Lightning import.
"""

from lightning_dynamics.measures.config import DynamicsConfig
from lightning_dynamics.measures.context import MeasureContext
from lightning_dynamics.measures.readings import Reading, fit_summary, noise_floor_summary, relative_change_reading
from lightning_dynamics.measures.registry import (
    MEASURES,
    Measure,
    compute_measures,
    measure_names,
    null_bands,
    null_keys,
)

__all__ = [
    "MEASURES",
    "DynamicsConfig",
    "Measure",
    "MeasureContext",
    "Reading",
    "compute_measures",
    "fit_summary",
    "measure_names",
    "noise_floor_summary",
    "null_bands",
    "null_keys",
    "relative_change_reading",
]
