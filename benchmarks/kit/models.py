"""Small classifiers for digits and a LightningModule that trains any image classifier (or one by name)."""

from __future__ import annotations

from typing import Any

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


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")


class ImageClassifier(pl.LightningModule):
    """Cross-entropy training of an image classifier; logs ``train_loss``, ``val_loss`` and ``val_acc``.

    ``val_acc`` is torchmetrics' multiclass accuracy over the whole validation set, in percent, so that plateau
    thresholds read as percentage points.

    Args:
        model: a module mapping ``[N, C, H, W]`` to ``[N, num_classes]``, or a timm / torchvision model name
            built by :func:`~benchmarks.kit.build_model` (adapted to small images).
        lr: learning rate (peak of the schedule).
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: weight decay (decoupled for AdamW).
        num_classes: classes (outputs of a model built by name; size of the accuracy metric).
        optimizer: ``"sgd"`` (with momentum) or ``"adamw"``.
        schedule: None (constant), ``"cosine"`` (cosine annealing to 0 over ``max_epochs``, stepped per epoch)
            or ``"step"`` (x0.1 at 50% and 75% of ``max_epochs``).
        max_epochs: length of the schedule; needed for a schedule.
        in_channels, image_size, weights_path, model_kwargs: passed to ``build_model`` when ``model`` is a name.

    Example:
        >>> module = ImageClassifier("resnet18", num_classes=100, in_channels=1, image_size=8,
        ...                          model_kwargs=dict(channels=(8, 16, 32, 64)), optimizer="adamw", lr=1e-3,
        ...                          schedule="cosine", max_epochs=30)
        >>> module(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 100])
    """

    def __init__(
        self,
        model: nn.Module | str,
        lr: float = 0.02,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        num_classes: int = 10,
        optimizer: str = "sgd",
        schedule: str | None = None,
        max_epochs: int | None = None,
        in_channels: int = 3,
        image_size: int | tuple[int, int] = 32,
        weights_path: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from torchmetrics.classification import MulticlassAccuracy

        if optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {optimizer!r}.")
        if schedule is not None and schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be None or one of {SCHEDULES}, got {schedule!r}.")
        if schedule is not None and (max_epochs is None or max_epochs < 1):
            raise ValueError(f"`max_epochs` must be a positive integer with schedule={schedule!r}, got {max_epochs!r}.")
        if not lr > 0:
            raise ValueError(f"`lr` must be > 0, got {lr!r}.")
        if isinstance(model, str):
            from benchmarks.kit.architectures import build_model

            model = build_model(
                model, num_classes, in_channels, image_size, weights_path=weights_path, **(model_kwargs or {})
            )
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.num_classes = num_classes
        self.optimizer_name = optimizer
        self.schedule = schedule
        self.max_epochs = max_epochs
        self.val_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")

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
        self.val_accuracy.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        self.log("val_acc", self.val_accuracy.compute() * 100.0, prog_bar=True)
        self.val_accuracy.reset()

    def configure_optimizers(self) -> Any:
        optimizer: torch.optim.Optimizer
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(
                self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule is None:
            return optimizer
        assert self.max_epochs is not None
        scheduler: torch.optim.lr_scheduler.LRScheduler
        if self.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.max_epochs)
        else:
            milestones = [self.max_epochs // 2, (3 * self.max_epochs) // 4]
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
