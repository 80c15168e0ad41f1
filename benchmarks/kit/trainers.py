"""A Trainer for benchmarks and examples (no logger, checkpoints, progress bar or sanity check) and a recorder."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


def quiet_trainer(**overrides: Any) -> pl.Trainer:
    """``pl.Trainer`` on one device with nothing written or printed per step; ``overrides`` win."""
    options: dict[str, Any] = dict(
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(overrides)
    return pl.Trainer(**options)


class EpochMetrics(pl.Callback):
    """Records ``trainer.callback_metrics`` named in ``keys`` once per training epoch (NaN where absent).

    Validation runs before ``on_train_epoch_end``, so ``val_*`` values are those of the same epoch.

    Example:
        >>> recorder = EpochMetrics(("val_acc", "val_loss"))
        >>> recorder.values
        {'val_acc': [], 'val_loss': []}
    """

    def __init__(self, keys: tuple[str, ...] = ("val_acc", "val_loss", "train_loss")) -> None:
        self.keys = tuple(keys)
        self.values: dict[str, list[float]] = {key: [] for key in self.keys}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for key in self.keys:
            value = trainer.callback_metrics.get(key)
            self.values[key].append(float("nan") if value is None else float(value))
