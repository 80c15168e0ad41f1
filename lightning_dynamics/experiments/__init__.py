"""Data and models for the examples, benchmarks and the paper's experiments (needs the ``examples`` extra)."""

from lightning_dynamics.experiments.data import DigitsDataModule
from lightning_dynamics.experiments.models import DeepCNN, ImageClassifier, SmallCNN, SmallMLP
from lightning_dynamics.experiments.trainers import quiet_trainer

__all__ = ["DeepCNN", "DigitsDataModule", "ImageClassifier", "SmallCNN", "SmallMLP", "quiet_trainer"]
