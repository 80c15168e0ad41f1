"""The experiment kit: data, models and trainers for the examples, benchmarks and the paper's experiments.

Not part of the wheel: import it from the repository root as ``benchmarks.kit``. Needs the ``examples`` extra
(and ``vision`` for models by name). Offline data: :class:`DigitsDataModule`
(10 classes, the stand-in for CIFAR-10) and :class:`DigitPairsDataModule` (100 classes from the same digit
images, the stand-in for CIFAR-100); on disk: :class:`CIFARDataModule`. Models: the small digits networks, any
timm / torchvision classifier by name through :func:`build_model` (adapted to 32x32 and smaller images,
optionally from a local pretrained weights file), trained by :class:`ImageClassifier`. The paper's
experiments themselves: ``benchmarks/paper``.
"""

from benchmarks.kit.architectures import build_model
from benchmarks.kit.cifar import CIFARDataModule, read_cifar
from benchmarks.kit.data import DigitPairsDataModule, DigitsDataModule
from benchmarks.kit.models import DeepCNN, ImageClassifier, SmallCNN, SmallMLP
from benchmarks.kit.trainers import EpochMetrics, quiet_trainer

__all__ = [
    "CIFARDataModule",
    "DeepCNN",
    "DigitPairsDataModule",
    "DigitsDataModule",
    "EpochMetrics",
    "ImageClassifier",
    "SmallCNN",
    "SmallMLP",
    "build_model",
    "quiet_trainer",
    "read_cifar",
]
