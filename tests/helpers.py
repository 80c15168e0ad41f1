"""Small models and data for callback tests: fast on 2 CPU cores."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


def random_classification(n: int = 64, features: int = 8, classes: int = 3, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return TensorDataset(x, y.clamp(max=classes - 1))


class TinyNet(nn.Module):
    def __init__(self, features: int = 8, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


class TinyModule(pl.LightningModule):
    def __init__(self, net: nn.Module | None = None, lr: float = 0.1, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else TinyNet()
        self.lr = lr
        self.fail_at_step = fail_at_step

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.fail_at_step is not None and self.global_step == self.fail_at_step:
            raise RuntimeError("boom: user error mid-epoch")
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def loaders(n: int = 64, batch_size: int = 16, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    data = random_classification(n, seed=seed)
    return DataLoader(data, batch_size=batch_size, shuffle=False), DataLoader(data, batch_size=64)


def trainer(tmp_path, max_epochs: int = 22, **kwargs) -> pl.Trainer:
    options = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def forward_hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


class ScriptedVolatility(pl.Callback):
    """Logs a fixed series as the monitored key (runs before monitoring callbacks, like DynamicsMonitor)."""

    def __init__(self, series: list[float], key: str = "dynamics/stability_volatility") -> None:
        self.series = series
        self.key = key

    def on_train_epoch_end(self, trainer, pl_module):
        value = self.series[trainer.current_epoch]
        if not math.isnan(value):
            pl_module.log(self.key, value, on_epoch=True)
