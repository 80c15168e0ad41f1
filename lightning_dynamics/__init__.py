"""lightning_dynamics: training seen as a dynamical system."""

__version__ = "0.1.0"
