"""Data and models for the examples, benchmarks and the paper's experiments (needs the ``examples`` extra)."""

from lightning_dynamics.experiments.data import DigitsDataModule
from lightning_dynamics.experiments.models import ImageClassifier, SmallCNN, SmallMLP

__all__ = ["DigitsDataModule", "ImageClassifier", "SmallCNN", "SmallMLP"]
