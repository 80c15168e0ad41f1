"""DynamicsModelCheckpoint: Lightning's ModelCheckpoint on a dynamics key that exists only after some epochs.

Stock ``ModelCheckpoint(monitor="dynamics/stability_index")`` raises at the end of the first epoch of any run
with a validation loop: the key is defined only after ``window`` sample points, and ModelCheckpoint treats a
missing key as a misconfiguration once validation has run. This subclass waits for the key instead and checks at
the end of training epochs, where the monitor logs. It overrides public methods only (the hooks
``on_train_epoch_end``, ``on_train_batch_end``, ``on_validation_end`` and ``check_monitor_top_k``), so a Lightning
release that renames private methods cannot break it silently.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lightning_dynamics.callbacks.keys import find_producer, full_key
from lightning_dynamics.callbacks.monitor import DynamicsMonitor
from lightning_dynamics.validation import check_bool, check_choice, check_int


class DynamicsModelCheckpoint(ModelCheckpoint):
    """Keep the best checkpoints by a :class:`DynamicsMonitor` key, waiting until the key is defined.

    Everything else is Lightning's ``ModelCheckpoint`` (file names, ``save_top_k``, ``save_last``, resume).
    Until the key is logged, the saving hooks do nothing (each such check counts in :attr:`waited_checks`;
    ``save_last`` still writes ``last.ckpt`` at the end of training). A sample point whose value is NaN (e.g.
    non-finite activations) never becomes a top-k checkpoint.

    Args:
        monitor: the measure (``"stability_index"``) or a full ``<prefix>/<measure>`` key.
        prefix: the producing monitor's prefix.
        mode: ``"max"`` (default: a higher stability index is better) or ``"min"`` (e.g. volatility).
        strict: raise if no :class:`DynamicsMonitor` logs ``monitor``; otherwise warn and wait for the key.
        save_top_k: an integer >= -1 (``-1``: keep all).
        dirpath, filename, save_top_k, save_last, save_weights_only, every_n_epochs, every_n_train_steps,
            train_time_interval, verbose, auto_insert_metric_name, enable_version_counter: as ``ModelCheckpoint``.

    **No dynamics key was shown to pick a better model than validation does.** On a CNN on digits (Adam 3e-3) a
    checkpoint on the stability index kept epoch 3 (64.2% accuracy) as "best" in a run that reached 97.3%: the index
    sat inside its noise floor at 22 of 24 epochs. Keep the best model with ``ModelCheckpoint(monitor="val_loss")``;
    use this class to study a key, e.g. the most settled epoch by the relative change.

    Example::

        Trainer(callbacks=[DynamicsMonitor(), DynamicsModelCheckpoint(monitor="relative_change", mode="min")])
    """

    def __init__(
        self,
        monitor: str = "stability_index",
        prefix: str = "dynamics",
        mode: Literal["min", "max"] = "max",
        strict: bool = True,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        save_top_k: int = 1,
        save_last: bool | Literal["link"] | None = None,
        save_weights_only: bool = False,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        verbose: bool = False,
        auto_insert_metric_name: bool = True,
        enable_version_counter: bool = True,
    ) -> None:
        save_top_k = check_int("save_top_k", save_top_k, -1)  # type: ignore[assignment]
        check_choice("mode", mode, ("min", "max"))
        for name, value in (
            ("strict", strict),
            ("save_weights_only", save_weights_only),
            ("verbose", verbose),
            ("auto_insert_metric_name", auto_insert_metric_name),
            ("enable_version_counter", enable_version_counter),
        ):
            check_bool(name, value)
        if not (save_last is None or isinstance(save_last, bool) or save_last == "link"):
            raise ValueError(f"`save_last` must be True, False, None or 'link', got {save_last!r}.")
        every_n_epochs = check_int("every_n_epochs", every_n_epochs, 0, allow_none=True)
        every_n_train_steps = check_int("every_n_train_steps", every_n_train_steps, 0, allow_none=True)
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=full_key(monitor, prefix),
            verbose=verbose,
            save_last=save_last,
            save_top_k=save_top_k,
            save_weights_only=save_weights_only,
            mode=mode,
            auto_insert_metric_name=auto_insert_metric_name,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=True,  # the monitor logs at the end of training epochs (or steps)
            enable_version_counter=enable_version_counter,
        )
        self.strict = strict
        self.waited_checks = 0
        self._producer: DynamicsMonitor | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        assert self.monitor is not None
        self._producer = find_producer(trainer.callbacks, self.monitor, "DynamicsModelCheckpoint", self.strict)  # type: ignore[attr-defined]

    def _ready(self, trainer: pl.Trainer) -> bool:
        """Whether the monitored key holds a number (else count a waited check): before the key is logged,
        ModelCheckpoint would raise once validation has run."""
        value = trainer.callback_metrics.get(self.monitor or "")
        if value is not None and not math.isnan(float(value)):
            return True
        self.waited_checks += 1  # not defined yet, or undefined at this point: nothing to rank
        return False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._ready(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.monitor in trainer.callback_metrics:  # a step between sample points is not a waited check
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor in trainer.callback_metrics:  # saves here only with save_on_train_epoch_end=False
            super().on_validation_end(trainer, pl_module)

    def check_monitor_top_k(self, trainer: pl.Trainer, current: Tensor | None = None) -> bool:
        if current is None or math.isnan(float(current)):
            return False  # undefined at this point: nothing to rank (the same on every process: values are global)
        return super().check_monitor_top_k(trainer, current)
