"""The only part of the package that imports Lightning."""

from lightning_dynamics.callbacks.early_stopping import DynamicsEarlyStopping
from lightning_dynamics.callbacks.monitor import DynamicsMonitor

__all__ = ["DynamicsEarlyStopping", "DynamicsMonitor"]
