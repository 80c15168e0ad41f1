"""DynamicsModelCheckpoint: Lightning's ModelCheckpoint on a dynamics key that exists only after some epochs.

Stock ``ModelCheckpoint(monitor="dynamics/stability_index")`` raises at the end of the first epoch of any run
with a validation loop: the key is defined only after ``window`` sample points, and ModelCheckpoint treats a
missing key as a misconfiguration once validation has run. This subclass waits for the key instead (saving
``last`` checkpoints meanwhile if asked) and checks at the end of training epochs, where the monitor logs.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from lightning_dynamics.callbacks.keys import find_producer, full_key
from lightning_dynamics.callbacks.monitor import DynamicsMonitor


class DynamicsModelCheckpoint(ModelCheckpoint):
    """Keep the best checkpoints by a :class:`DynamicsMonitor` key, waiting until the key is defined.

    Everything else is Lightning's ``ModelCheckpoint`` (file names, ``save_top_k``, ``save_last``, resume).
    A sample point whose value is NaN (e.g. non-finite activations) never becomes the best checkpoint.

    Args:
        monitor: the measure (``"stability_index"``) or a full ``<prefix>/<measure>`` key.
        prefix: the producing monitor's prefix.
        mode: ``"max"`` (default: a higher stability index is better) or ``"min"`` (e.g. volatility).
        strict: raise if no :class:`DynamicsMonitor` logs ``monitor``; otherwise warn and wait for the key.
        dirpath, filename, save_top_k, save_last, save_weights_only, every_n_epochs, every_n_train_steps,
            train_time_interval, verbose, auto_insert_metric_name, enable_version_counter: as ``ModelCheckpoint``.

    Example::

        Trainer(callbacks=[DynamicsMonitor(), DynamicsModelCheckpoint(monitor="stability_index", mode="max")])
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

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        assert self.monitor is not None
        value = monitor_candidates.get(self.monitor)
        if value is None or math.isnan(float(value)):
            self.waited_checks += 1  # not defined yet, or undefined at this point: nothing to rank
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
