"""DynamicsMonitor: the Lightning adapter of :class:`~lightning_dynamics.DynamicsTracker`.

The tracker owns the data flow and the sampling loop; this callback maps Lightning's hooks onto it, all-reduces
with ``trainer.strategy.reduce``, and logs what comes back: ``pl_module.log`` (so ``callback_metrics``, the progress
bar, ``EarlyStopping`` and ``ModelCheckpoint`` see the values) and every logger's ``log_metrics`` (so each value
reaches the loggers whatever ``Trainer(log_every_n_steps=...)`` is, as Lightning's ``LearningRateMonitor`` does).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_dynamics.capture.layer_selection import is_compiled_module
from lightning_dynamics.tracking.distributed import process_group_timeout
from lightning_dynamics.tracking.options import tracker_from_options
from lightning_dynamics.tracking.tracker import LogPoint
from lightning_dynamics.validation import check_bool, check_ddp_timeout, layers_key


class DynamicsMonitor(Callback):
    r"""Watch training as a dynamical system: integration, metastability, a stability index, and their noise floors.

    Forward hooks on the chosen layers accumulate a scalar summary of each layer's output on the model's device
    (one fused reduction per output, no host synchronisation, no activation kept). By default each epoch gives
    ``points_per_epoch`` sample points; at its end the measures of :mod:`lightning_dynamics.measures.registry` and
    their noise floors (``<measure>_null_lo``/``_null_hi``: the central 95% of the measure on surrogates of the
    run's own history) are computed on the device and logged under ``<prefix>/``. A key is first logged once it
    is defined, then at every computation, NaN included, so ``callback_metrics`` never holds a stale value. All of
    it is done by a :class:`~lightning_dynamics.DynamicsTracker` (:attr:`tracker`).

    Method and formulas: La Quang, Ugail, Howard et al., arXiv:2604.09716; docs/method.md.

    Args:
        prog_bar: show the logged keys in the progress bar.
        log_dashboard: at the end of fit, log the dashboard figure to loggers that take images (rank 0).
        checkpoint_probe_batch: store the probe batch in checkpoints (off: it may be large or private).
        ddp_timeout: with several processes, seconds each waits for the others before a sample point's all-reduce
            (and at each epoch start), then fails with a
            :class:`~lightning_dynamics.tracking.distributed.DistributedMismatchError`; ``None``: the strategy's
            timeout.
        **options: the tracker's options, typed and documented once in
            :func:`~lightning_dynamics.tracking.options.tracker_from_options` (``layers``, ``summary``,
            ``every_n_steps``, ``points_per_epoch``, ``source``, ``window``, ..., ``prefix``, ``save_history``,
            ``verbose``); ``probe_forward`` is called as ``(pl_module, batch)``, and the history file goes to
            ``<log_dir>/<prefix>_history.pt``. ``LightningCLI`` offers and checks each of them.

    Example::

        trainer = Trainer(callbacks=[DynamicsMonitor(summary="std", every_n_steps=50, prog_bar=True)])
    """

    def __init__(
        self,
        *,
        prog_bar: bool = False,
        log_dashboard: bool = True,
        checkpoint_probe_batch: bool = False,
        ddp_timeout: float | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.tracker = tracker_from_options(warn=rank_zero_warn, info=rank_zero_info, **options)
        self.prog_bar = check_bool("prog_bar", prog_bar)
        self.log_dashboard = check_bool("log_dashboard", log_dashboard)
        self.checkpoint_probe_batch = check_bool("checkpoint_probe_batch", checkpoint_probe_batch)
        self.ddp_timeout = check_ddp_timeout(ddp_timeout)
        self._seen: dict[str, Any] = {}  # the logged objects of the trainer's metrics at the previous point

    config = property(lambda self: self.tracker.config, doc="The measures' settings (a DynamicsConfig).")
    prefix = property(lambda self: self.tracker.prefix, doc="The logging namespace.")
    history = property(lambda self: self.tracker.history, doc="The [L, T] SummaryHistory.")
    metrics = property(lambda self: self.tracker.metrics, doc="Measure -> one value per sample point.")
    layer_names = property(lambda self: self.tracker.layer_names, doc="The watched layers.")

    @property
    def history_path(self) -> Path | None:
        """Where the history file goes (claimed at fit start; may be set to another path before fit end)."""
        return self.tracker.history_path

    @history_path.setter
    def history_path(self, path: str | Path | None) -> None:
        self.tracker.history_path = None if path is None else Path(path)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys this monitor logs: ``<prefix>/<measure>`` (and the null bands)."""
        return tuple(f"{self.prefix}/{key}" for key in self.tracker.keys)

    def defined_from(self) -> dict[str, int]:
        """Sample points before each key is first logged (:meth:`DynamicsTracker.defined_from`)."""
        return self.tracker.defined_from()

    @property
    def state_key(self) -> str:
        # The prefix identifies a monitor; the layer selection is named without memory addresses, so a predicate
        # keeps its key across processes and resume finds the state.
        return self._generate_state_key(prefix=self.prefix, layers=layers_key(self.tracker.layers))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        monitors = [c for c in trainer.callbacks if isinstance(c, DynamicsMonitor)]  # type: ignore[attr-defined]
        if sum(m.prefix == self.prefix for m in monitors) > 1:
            raise ValueError(
                f"{sum(m.prefix == self.prefix for m in monitors)} DynamicsMonitor callbacks share "
                f"prefix={self.prefix!r}: their keys would overwrite each other. Give each monitor its own prefix, "
                "e.g. DynamicsMonitor(prefix='dynamics_probe')."
            )
        # Our values are identical on every process (the sums were all-reduced): Lightning's advice to sync is moot.
        warnings.filterwarnings("ignore", message=rf".*'{re.escape(self.prefix)}/[^']*'.*sync_dist=True.*")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After strategy setup and configure_model: the modules are the final ones, on their device.
        # trainer.log_dir is a collective under DDP: resolve it here, where every process passes.
        self.tracker.begin_fit(
            pl_module,
            device=pl_module.device,
            reduce=(lambda packed: trainer.strategy.reduce(packed, reduce_op="sum"))
            if trainer.world_size > 1
            else None,
            ddp_timeout=self.ddp_timeout or process_group_timeout(trainer.strategy),
            history_dir=Path(trainer.log_dir or trainer.default_root_dir),
            is_global_zero=trainer.is_global_zero,
            probe_context=trainer.precision_plugin.forward_context,
            # Only the training loop calls the strategy's training_step: other callbacks' forwards (a probe, a
            # twin, an evaluation) run in their hooks, outside it, whatever the callbacks' order.
            record_during=(trainer.strategy, "training_step"),
        )
        self._recompile_if_compiled(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The trainer's own state is restored by now: a resumed history must not run ahead of it.
        self.tracker.training_position(
            trainer.current_epoch, trainer.global_step, resumed=trainer.ckpt_path is not None
        )

    def _recompile_if_compiled(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """torch.compile does not guard on module hooks: code compiled before they existed would skip them, so
        dynamo's caches are reset and the next call recompiles with the hooks traced in (a one-off cost)."""
        model = trainer.model if trainer.model is not None else pl_module
        compiled = getattr(pl_module, "_compiler_ctx", None) is not None or is_compiled_module(model)
        if compiled or any(is_compiled_module(m) for m in pl_module.modules()):  # a submodule compiled by the user
            torch._dynamo.reset()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker.epoch_start(trainer.current_epoch, trainer.global_step, trainer.num_training_batches)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.tracker.batch_start(batch)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # The gradients are final here (after backward and any unscaling), and the weights not yet updated.
        self.tracker.before_optimizer_step()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.sanity_checking:
            return
        point = self.tracker.batch_end(
            trainer.current_epoch,
            trainer.global_step,
            batch_idx,
            trainer.num_training_batches,
            logged=lambda: self._fresh_scalars(trainer),
        )
        self._log(trainer, pl_module, point)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        point = self.tracker.epoch_end(trainer.current_epoch, trainer.global_step, logged=self._fresh_scalars(trainer))
        self._log(trainer, pl_module, point)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.tracker.end_fit()
        if trainer.is_global_zero and path is not None:
            from lightning_dynamics.callbacks.sinks import hand_to_loggers

            dashboard = self.log_dashboard and bool(trainer.loggers) and self.tracker.dashboard_due(path.parent)
            with self.tracker.dashboard_timer(dashboard):
                hand_to_loggers(trainer.loggers, path, prefix=self.prefix, dashboard=dashboard, warn=rank_zero_warn)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.tracker.end_fit()  # never raises: a failing save must not mask the user's exception

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.tracker.detach()

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict(include_probe_batch=self.checkpoint_probe_batch)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state_dict)  # applied at on_fit_start when the layers are not known yet

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, point: LogPoint | None) -> None:
        if point is None or not point.values:
            return
        # The measures go through `self.log`, so that EarlyStopping, ModelCheckpoint and the progress bar see them in
        # `callback_metrics`; their noise-floor edges go to the loggers only: each `self.log` call costs about a
        # millisecond on CPU (Lightning moves its result state every call), half the monitor's fit-time cost on a
        # small model, and nothing monitors an edge (benchmarks/overhead.md, "whole fits").
        for key, value in point.without_null_edges.items():
            pl_module.log(
                key,
                value,
                on_step=point.on_step,
                on_epoch=not point.on_step,
                prog_bar=self.prog_bar,
                logger=False,  # written to the loggers below, at every point, whatever log_every_n_steps is
                batch_size=1,
                sync_dist=False,  # already identical on every process: the sums were all-reduced
            )
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({**point.values, "epoch": trainer.current_epoch}, step=trainer.global_step)

    def _fresh_scalars(self, trainer: pl.Trainer) -> dict[str, Tensor]:
        """The other scalars logged since the previous point (validation accuracy, losses): a value Lightning still
        holds from before (e.g. the last validation's, between validations) is not recorded again (NaN there).
        Read only when a point closes (`callback_metrics` rebuilds Lightning's metric dict at every read)."""
        out: dict[str, Tensor] = {}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(f"{self.prefix}/") or self._seen.get(key) is value:
                continue
            if (
                isinstance(value, Tensor)
                and value.numel() == 1
                and not any(
                    key.startswith(f"{m.prefix}/")
                    for m in trainer.callbacks  # type: ignore[attr-defined]
                    if isinstance(m, DynamicsMonitor)
                )
            ):
                out[key] = value  # read to the host with the next batch of points: no sync per step
        self._seen = dict(trainer.callback_metrics)
        return out
