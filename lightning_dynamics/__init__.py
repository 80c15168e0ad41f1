"""lightning_dynamics: watch a network's training as a dynamical system.

``DynamicsMonitor`` is a Lightning callback; :mod:`lightning_dynamics.functional` holds the measures as
plain torch functions.
"""

from lightning_dynamics.callbacks import DynamicsEarlyStopping, DynamicsMonitor
from lightning_dynamics.convergence import DynamicsStoppingReason

__version__ = "0.1.0"

__all__ = ["DynamicsEarlyStopping", "DynamicsMonitor", "DynamicsStoppingReason", "__version__"]
