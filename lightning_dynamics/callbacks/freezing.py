"""DynamicsLayerFreezing: the Lightning adapter of :class:`~lightning_dynamics.decisions.freezing.LayerFreezer`.

It reads the history of the :class:`~lightning_dynamics.DynamicsMonitor` with the same prefix and, after each of
its sample points, freezes the converged prefix of the network (front to back; never unfreezes). The decision and
what freezing does to the model live in the framework-neutral core; this callback maps Lightning's hooks onto it,
makes every DDP rank use rank 0's decision (``trainer.strategy.broadcast``), logs ``<prefix>/frozen_layers`` and
checkpoints the decisions.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_dynamics.callbacks.monitor import DynamicsMonitor
from lightning_dynamics.decisions.freezing import FROZEN_LAYERS_KEY, LayerFreezer
from lightning_dynamics.validation import check_bool


class DynamicsLayerFreezing(Callback):
    r"""Freeze the layers whose dynamics have converged, front to back, to save backward compute.

    After each sample point of the :class:`~lightning_dynamics.DynamicsMonitor` with the same ``prefix``, every
    monitored layer is tested for convergence: its recent change, relative to its largest excursion since the
    start of training, is at most ``change_tol``, and its last ``window`` points show no drift (variance ratio at
    most ``max_variance_ratio``; a random walk reads about ``window / 6``). A layer that passes ``patience``
    consecutive checks is converged; the longest converged run of layers from the front is frozen:
    ``requires_grad=False`` and ``.grad = None`` on its parameters (and eval-mode normalisation statistics with
    ``freeze_norm_stats``), so backward stops at the first trainable layer and no optimizer updates them. Layers
    are mapped to parameters by :func:`~lightning_dynamics.decisions.freezing.prefix_parameter_groups`
    (parameters outside monitored layers go with the monitored layer registered before them). Nothing is ever
    unfrozen. Formulas and calibration: docs/freezing.md.

    The monitor should sample several times per epoch (``DynamicsMonitor(every_n_steps=...)``): the defaults
    need ``window = 48`` sample points before the first decision. Place this callback after the monitor in
    ``callbacks`` (placed before, it sees each sample point one batch later).

    Args:
        change_tol: largest recent change, as a fraction of the layer's largest excursion, that counts as settled.
        max_variance_ratio: largest variance ratio over ``window`` points that counts as free of drift.
        lag: points per smoothed value in the change test.
        window: points of the variance-ratio test; also the least history before a decision.
        patience: consecutive passing checks before a layer may be frozen.
        keep_trainable: the last this many monitored layers are never frozen (>= 1).
        freeze_norm_stats: keep normalisation layers inside the frozen prefix in eval mode.
        min_samples: no decision before this many sample points (default ``max(window, 2 * lag)``).
        prefix: the prefix of the :class:`~lightning_dynamics.DynamicsMonitor` to read; keys are logged under it.
        verbose: one line on rank 0 for each freezing decision.

    Example::

        trainer = Trainer(callbacks=[DynamicsMonitor(every_n_steps=4), DynamicsLayerFreezing()])
    """

    def __init__(
        self,
        change_tol: float = 0.1,
        max_variance_ratio: float = 1.0,
        lag: int = 8,
        window: int = 48,
        patience: int = 4,
        keep_trainable: int = 1,
        freeze_norm_stats: bool = False,
        min_samples: int | None = None,
        prefix: str = "dynamics",
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ValueError(f"`prefix` must be a non-empty name without '/', got {prefix!r}.")
        check_bool("verbose", verbose)
        self.freezer = LayerFreezer(  # validates every setting
            change_tol=change_tol,
            max_variance_ratio=max_variance_ratio,
            lag=lag,
            window=window,
            patience=patience,
            keep_trainable=keep_trainable,
            freeze_norm_stats=freeze_norm_stats,
            min_samples=min_samples,
            info=rank_zero_info if verbose else None,
        )
        self.prefix = prefix
        self.verbose = verbose
        self._monitor: DynamicsMonitor | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    @property
    def n_frozen(self) -> int:
        """Monitored layers frozen so far (a prefix of ``monitor.layer_names``)."""
        return self.freezer.n_frozen

    @property
    def frozen_layers(self) -> list[str]:
        return self.freezer.frozen_layers

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        monitors = [
            c
            for c in trainer.callbacks  # type: ignore[attr-defined]
            if isinstance(c, DynamicsMonitor) and c.prefix == self.prefix
        ]
        if not monitors:
            raise ValueError(
                f"DynamicsLayerFreezing(prefix={self.prefix!r}) needs a DynamicsMonitor with prefix={self.prefix!r} "
                "in Trainer(callbacks=...), e.g. [DynamicsMonitor(every_n_steps=4), DynamicsLayerFreezing()]."
            )
        self._monitor = monitors[0]
        if self._monitor.tracker.source != "train":
            rank_zero_warn(
                "DynamicsLayerFreezing: the monitor uses source='probe'; frozen layers' probe summaries still move "
                "with the layers before them, which is what the convergence tests read."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After every callback's on_fit_start: the monitor has attached and knows its layers.
        assert self._monitor is not None
        self.freezer.attach(pl_module, self._monitor.tracker)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)
        pl_module.log(f"{self.prefix}/{FROZEN_LAYERS_KEY}", float(self.freezer.n_frozen), on_step=False, on_epoch=True)

    def _check(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or self.freezer.layer_names == []:
            return

        def agree(n: int) -> int:
            return int(trainer.strategy.broadcast(n, src=0))  # one collective per sample point

        self.freezer.step(trainer.current_epoch, trainer.global_step, agree=agree)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.freezer.detach()

    def state_dict(self) -> dict[str, Any]:
        return self.freezer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.freezer.load_state_dict(state_dict)  # applied at attach (on_train_start): the prefix is refrozen
