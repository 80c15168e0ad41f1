"""The task the examples train: scikit-learn's handwritten digits, two small networks and a LightningModule.

Self-contained on purpose: the examples need only an installed ``lightning-dynamics[examples]`` (scikit-learn ships
the 1797 real 8x8 images, no download), so this folder can be copied out of the repository and run as it is. The
repository's experiment kit (``benchmarks/kit``, not in the wheel) holds the larger set used by the benchmarks; the
split here is the same as its ``DigitsDataModule`` for the same ``val_fraction`` and ``split_seed``.

Example:
    >>> data = DigitsDataModule()
    >>> data.setup()
    >>> len(data.train_set), len(data.val_set), tuple(data.train_set.tensors[0].shape[1:])
    (1347, 450, (1, 8, 8))
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

OPTIMIZERS = ("sgd", "adam")


def digits_split(val_fraction: float = 0.25, split_seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Digits images ``[N, 1, 8, 8]`` in ``[0, 1]`` and labels, split per class: (train x, train y, val x, val y)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    rng = np.random.default_rng(split_seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        is_val[rng.choice(members, round(len(members) * val_fraction), replace=False)] = True
    val = torch.from_numpy(is_val)
    return images[~val], labels[~val], images[val], labels[val]


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn ``load_digits`` as ``[N, 1, 8, 8]`` float images in ``[0, 1]``, split per class.

    Args:
        batch_size: training batch size (validation uses 256).
        val_fraction: share of each class held out for validation.
        split_seed: seed of the split, independent of the training seed.
        shuffle: shuffle the training set each epoch.
    """

    def __init__(
        self, batch_size: int = 64, val_fraction: float = 0.25, split_seed: int = 0, shuffle: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction!r}.")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.shuffle = shuffle
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        train_x, train_y, val_x, val_y = digits_split(self.val_fraction, self.split_seed)
        self.train_set = TensorDataset(train_x, train_y)
        self.val_set = TensorDataset(val_x, val_y)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=256)


class SmallCNN(nn.Module):
    """Three 3x3 convolutions and a linear head for 8x8 single-channel images."""

    def __init__(self, channels: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SmallMLP(nn.Module):
    """A three-layer perceptron on flattened 8x8 images."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ImageClassifier(pl.LightningModule):
    """Cross-entropy training of ``model``; logs ``train_loss``, ``val_loss`` and ``val_acc`` (percent).

    Args:
        model: a module mapping ``[N, 1, 8, 8]`` to ``[N, 10]``.
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
        optimizer: ``"sgd"`` (with momentum) or ``"adam"``.
    """

    def __init__(self, model: nn.Module, lr: float = 0.02, momentum: float = 0.9, optimizer: str = "sgd") -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {optimizer!r}.")
        if not lr > 0:
            raise ValueError(f"`lr` must be > 0, got {lr!r}.")
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.optimizer_name = optimizer

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), batch_size=len(y))
        self.log("val_acc", 100.0 * (logits.argmax(-1) == y).float().mean(), batch_size=len(y))

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
