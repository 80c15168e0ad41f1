"""The Lightning adapters: the only part of the package that imports Lightning."""

from lightning_dynamics.callbacks.checkpoint import DynamicsModelCheckpoint
from lightning_dynamics.callbacks.early_stopping import DynamicsEarlyStopping
from lightning_dynamics.callbacks.fabric import DynamicsFabricMonitor
from lightning_dynamics.callbacks.lyapunov import LyapunovMonitor
from lightning_dynamics.callbacks.monitor import DynamicsMonitor

__all__ = [
    "DynamicsEarlyStopping",
    "DynamicsFabricMonitor",
    "DynamicsModelCheckpoint",
    "DynamicsMonitor",
    "LyapunovMonitor",
]
