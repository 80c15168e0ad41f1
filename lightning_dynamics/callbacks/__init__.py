"""The Lightning adapters: the only part of the package that imports Lightning."""

from lightning_dynamics.callbacks.checkpoint import DynamicsModelCheckpoint
from lightning_dynamics.callbacks.diagnosis import DynamicsDiagnosis
from lightning_dynamics.callbacks.early_stopping import DynamicsEarlyStopping
from lightning_dynamics.callbacks.fabric import DynamicsFabricDiagnosis, DynamicsFabricMonitor
from lightning_dynamics.callbacks.freezing import DynamicsLayerFreezing
from lightning_dynamics.callbacks.lyapunov import LyapunovMonitor
from lightning_dynamics.callbacks.monitor import DynamicsMonitor


def __getattr__(name: str) -> type:
    # DynamicsTrainerCallback needs transformers, DiagnosisPruning needs optuna: imported on use, kept out of __all__
    if name == "DiagnosisPruning":
        from lightning_dynamics.callbacks.pruning import DiagnosisPruning

        return DiagnosisPruning
    if name == "DynamicsTrainerCallback":
        from lightning_dynamics.callbacks.hf import DynamicsTrainerCallback

        return DynamicsTrainerCallback
    if name == "DynamicsTrainerDiagnosis":
        from lightning_dynamics.callbacks.hf_diagnosis import DynamicsTrainerDiagnosis

        return DynamicsTrainerDiagnosis
    raise AttributeError(f"module 'lightning_dynamics.callbacks' has no attribute {name!r}")


__all__ = [
    "DynamicsDiagnosis",
    "DynamicsEarlyStopping",
    "DynamicsFabricDiagnosis",
    "DynamicsFabricMonitor",
    "DynamicsLayerFreezing",
    "DynamicsModelCheckpoint",
    "DynamicsMonitor",
    "LyapunovMonitor",
]
