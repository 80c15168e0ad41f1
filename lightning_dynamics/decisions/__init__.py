"""What acts on readings: stopping rules, layer freezing and the Lyapunov twin (no Lightning import).

:mod:`~lightning_dynamics.decisions.stopping` holds the stopping rules (the default relative-change rule and the
paper's volatility rule), :mod:`~lightning_dynamics.decisions.freezing` the layer freezer and
:mod:`~lightning_dynamics.decisions.lyapunov` the shadow trajectory behind the Lyapunov exponent of training. The
Lightning-side callbacks that drive them live in :mod:`lightning_dynamics.callbacks`.
"""

from lightning_dynamics.decisions.freezing import FreezeEvent, LayerFreezer
from lightning_dynamics.decisions.lyapunov import TwinTrajectory
from lightning_dynamics.decisions.stopping import DynamicsStoppingReason, RelativeChangeRule, VolatilityDropRule

__all__ = [
    "DynamicsStoppingReason",
    "FreezeEvent",
    "LayerFreezer",
    "RelativeChangeRule",
    "TwinTrajectory",
    "VolatilityDropRule",
]
