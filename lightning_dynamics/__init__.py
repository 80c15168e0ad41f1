"""lightning_dynamics: watch a network's training as a dynamical system.

``DynamicsMonitor`` is a Lightning callback over the framework-neutral :class:`DynamicsTracker`;
:mod:`lightning_dynamics.functional` holds the measures as plain torch functions. Importing the package, its
``functional`` or ``capture`` modules, the tracker or the config does not import Lightning: the Lightning
adapters are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_dynamics.decisions.diagnosis import DiagnosisThresholds, DynamicsDiagnoser, Finding
from lightning_dynamics.decisions.stopping import DynamicsStoppingReason
from lightning_dynamics.measures.config import DynamicsConfig
from lightning_dynamics.tracking.distributed import DistributedMismatchError
from lightning_dynamics.tracking.tracker import DynamicsTracker

if TYPE_CHECKING:
    from lightning_dynamics.callbacks import (
        DynamicsDiagnosis,
        DynamicsEarlyStopping,
        DynamicsFabricDiagnosis,
        DynamicsFabricMonitor,
        DynamicsModelCheckpoint,
        DynamicsMonitor,
        LyapunovMonitor,
    )
    from lightning_dynamics.callbacks.hf import DynamicsTrainerCallback  # noqa: F401  (lazy, not in __all__)
    from lightning_dynamics.callbacks.pruning import DiagnosisPruning  # noqa: F401  (lazy, needs optuna)

__version__ = "0.1.0"

# Names served lazily from lightning_dynamics.callbacks (the only package that imports Lightning).
_LIGHTNING_NAMES = {
    "DiagnosisPruning",  # needs the sweep extra (optuna): served on use, kept out of __all__
    "DynamicsDiagnosis",
    "DynamicsEarlyStopping",
    "DynamicsFabricDiagnosis",
    "DynamicsFabricMonitor",
    "DynamicsLayerFreezing",
    "DynamicsModelCheckpoint",
    "DynamicsMonitor",
    "DynamicsTrainerCallback",  # needs the transformers extra: served on use, kept out of __all__
    "DynamicsTrainerDiagnosis",  # likewise
    "LyapunovMonitor",
}


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_NAMES:
        return getattr(importlib.import_module("lightning_dynamics.callbacks"), name)
    raise AttributeError(f"module 'lightning_dynamics' has no attribute {name!r}")


__all__ = [
    "DiagnosisThresholds",
    "DistributedMismatchError",
    "DynamicsConfig",
    "DynamicsDiagnoser",
    "DynamicsDiagnosis",
    "DynamicsEarlyStopping",
    "DynamicsFabricDiagnosis",
    "DynamicsFabricMonitor",
    "DynamicsModelCheckpoint",
    "DynamicsMonitor",
    "DynamicsStoppingReason",
    "DynamicsTracker",
    "Finding",
    "LyapunovMonitor",
    "__version__",
]
