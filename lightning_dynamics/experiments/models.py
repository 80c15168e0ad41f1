"""Small classifiers for digits and a LightningModule that trains any image classifier."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Three 3x3 convolutions and a linear head for 8x8 single-channel images."""

    def __init__(self, channels: int = 16, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
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


class DeepCNN(nn.Module):
    """A deep CNN for 8x8 images: ``depth`` 3x3 convolution-BatchNorm-ReLU blocks, global pooling, a linear head.

    Gives the monitor ``depth + 1`` layers to work with, closer to the depth of the paper's networks.
    """

    def __init__(self, depth: int = 8, channels: int = 24, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for index in range(depth):
            layers += [nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
            if index == depth // 2:
                layers.append(nn.MaxPool2d(2))
            width = channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SmallMLP(nn.Module):
    """A three-layer perceptron on flattened images."""

    def __init__(self, in_features: int = 64, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ImageClassifier(pl.LightningModule):
    """Cross-entropy training of ``model`` with SGD (momentum 0.9); logs ``train_loss``, ``val_loss``, ``val_acc``.

    ``val_acc`` is in percent so that plateau thresholds read as percentage points.
    """

    def __init__(self, model: nn.Module, lr: float = 0.02, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean() * 100.0, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
