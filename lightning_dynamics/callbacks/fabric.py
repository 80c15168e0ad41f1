"""DynamicsFabricMonitor: the Lightning Fabric adapter of :class:`~lightning_dynamics.DynamicsTracker`.

Fabric calls a callback's hooks where the training loop says so, with ``fabric.call(name, **kwargs)``. The model's
forward calls in training mode are recorded (validation in eval mode is not), except those made inside
``fabric.call`` (any callback's hooks: a probe, a twin trajectory, an evaluation)::

    monitor = DynamicsFabricMonitor()
    fabric = Fabric(callbacks=[monitor], loggers=CSVLogger("runs"))
    model, optimizer = fabric.setup(model, optimizer)
    fabric.call("on_train_start", fabric=fabric, model=model)
    for epoch in range(epochs):
        fabric.call("on_train_epoch_start", fabric=fabric, epoch=epoch, step=step, n_batches=len(loader))
        for batch_idx, batch in enumerate(loader):
            ...  # forward, backward, optimizer step; step += 1
            fabric.call("on_train_batch_end", fabric=fabric, outputs=loss, batch=batch, batch_idx=batch_idx,
                        epoch=epoch, step=step)  # outputs, batch: a LightningModule's own hook takes them
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, step=step)
    fabric.call("on_train_end", fabric=fabric)

Values are logged with ``fabric.log_dict`` under ``<prefix>/``; rank 0 saves the history and logs the dashboard.
:class:`DynamicsFabricDiagnosis`, listed after the monitor, names what goes wrong (docs/diagnosis.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from lightning.fabric import Fabric
from lightning.fabric.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_dynamics.decisions.diagnosis import DynamicsDiagnoser
from lightning_dynamics.tracking.distributed import process_group_timeout
from lightning_dynamics.tracking.options import tracker_from_options
from lightning_dynamics.tracking.tracker import LogPoint
from lightning_dynamics.validation import check_bool, check_ddp_timeout, check_path


class DynamicsFabricMonitor:
    """Watch a Fabric training loop as a dynamical system; every option of :class:`DynamicsMonitor`.

    Args:
        history_dir: where ``<prefix>_history.pt`` goes (default: the first logger's ``log_dir``, else the
            working directory).
        log_dashboard: at the end of training, log the dashboard figure to loggers that take images (rank 0).
        checkpoint_probe_batch: put the probe batch in :meth:`state_dict` (off: it may be large or private).
        ddp_timeout: with several processes, seconds each waits for the others before a sample point's all-reduce
            (and at each epoch start); ``None``: the strategy's timeout.
        **options: the tracker's options, as :func:`~lightning_dynamics.tracking.options.tracker_from_options`
            (``probe_forward`` is called as ``(model, batch)``, default ``model(batch[0])``).
    """

    def __init__(
        self,
        *,
        history_dir: str | Path | None = None,
        log_dashboard: bool = True,
        checkpoint_probe_batch: bool = False,
        ddp_timeout: float | None = None,
        **options: Any,
    ) -> None:
        self.tracker = tracker_from_options(warn=rank_zero_warn, info=rank_zero_info, **options)
        self.history_dir = check_path("history_dir", history_dir)
        self.log_dashboard = check_bool("log_dashboard", log_dashboard)
        self.checkpoint_probe_batch = check_bool("checkpoint_probe_batch", checkpoint_probe_batch)
        self.ddp_timeout = check_ddp_timeout(ddp_timeout)
        self._fabric: Fabric | None = None

    @property
    def history_path(self) -> Path | None:
        return self.tracker.history_path

    def on_train_start(
        self, fabric: Fabric, model: nn.Module, epoch: int = 0, step: int = 0, resumed: bool = False, **kwargs: Any
    ) -> None:
        """Attach to ``model`` (a module returned by ``fabric.setup`` or the plain module).

        After :meth:`load_state_dict` from a checkpoint, pass the ``epoch`` and ``step`` training resumes at and
        ``resumed=True``: a restored history that runs ahead of them is refused. Otherwise a restored history is
        continued in a new segment (a new fit).
        """
        module = getattr(model, "module", model) if type(model).__name__ == "_FabricModule" else model
        log_dir = getattr(fabric.logger, "log_dir", None) if fabric.loggers else None
        self._fabric = fabric

        def reduce(packed: Tensor) -> Tensor:
            reduced = fabric.all_reduce(packed, reduce_op="sum")
            assert isinstance(reduced, Tensor)
            return reduced

        self.tracker.begin_fit(
            module,
            device=fabric.device,
            reduce=reduce if fabric.world_size > 1 else None,
            ddp_timeout=self.ddp_timeout or process_group_timeout(fabric.strategy),
            history_dir=self.history_dir or log_dir or ".",
            is_global_zero=fabric.is_global_zero,
            probe_context=fabric.autocast,
            pause_during=(fabric, "call"),  # forwards run by callbacks' hooks are not training
        )
        self.tracker.training_position(epoch, step, resumed=resumed)

    def on_train_epoch_start(
        self, fabric: Fabric, epoch: int, step: int = 0, n_batches: int | None = None, **kwargs: Any
    ) -> None:
        """An epoch begins (``n_batches``: its length, for sub-epoch sample points)."""
        self.tracker.epoch_start(epoch, step, n_batches)

    def on_train_batch_start(self, fabric: Fabric, batch: Any = None, **kwargs: Any) -> None:
        """For ``source="probe"``: the first batch becomes the probe batch unless one was given."""
        self.tracker.batch_start(batch)

    def on_before_optimizer_step(self, fabric: Fabric | None = None, **kwargs: Any) -> None:
        """After ``fabric.backward`` and before ``optimizer.step()``: the per-layer gradient statistics."""
        self.tracker.before_optimizer_step()

    def on_train_batch_end(
        self,
        fabric: Fabric,
        step: int,
        epoch: int = 0,
        batch_idx: int | None = None,
        n_batches: int | None = None,
        **kwargs: Any,
    ) -> None:
        """After each batch: ``step`` optimizer steps so far, ``batch_idx`` in the epoch and its length."""
        self._log(fabric, self.tracker.batch_end(epoch, step, batch_idx, n_batches), step)

    def on_train_epoch_end(self, fabric: Fabric, epoch: int, step: int | None = None, **kwargs: Any) -> None:
        """Close the epoch: its last sample point and the measures (``step`` is recorded with the point)."""
        step = epoch if step is None else step
        self._log(fabric, self.tracker.epoch_end(epoch, step), step)

    def on_train_end(self, fabric: Fabric, **kwargs: Any) -> None:
        """Remove the hooks, save the history and hand it (and the dashboard) to the loggers (rank 0)."""
        path = self.tracker.end_fit()
        if path is not None:
            from lightning_dynamics.callbacks.sinks import hand_to_loggers

            loggers = fabric.loggers
            dashboard = self.log_dashboard and bool(loggers) and self.tracker.dashboard_due(path.parent)
            with self.tracker.dashboard_timer(dashboard):
                hand_to_loggers(loggers, path, prefix=self.tracker.prefix, dashboard=dashboard, warn=rank_zero_warn)

    def _log(self, fabric: Fabric, point: LogPoint | None, step: int) -> None:
        if point is not None and point.values and fabric.loggers:
            fabric.log_dict(point.values, step=step)

    def sample(self, fabric: Fabric, epoch: int, step: int, logged: dict[str, float] | None = None) -> dict[str, float]:
        """One sample point with its measures, now, whatever the schedule (for loops that sample by hand)."""
        values = self.tracker.sample(epoch, step, logged=logged)
        self._log(fabric, self.tracker.log_point(values, on_step=True), step)
        return values

    def state_dict(self) -> dict[str, Any]:
        """For ``fabric.save(path, {"dynamics": monitor.state_dict(), ...})``."""
        return self.tracker.state_dict(include_probe_batch=self.checkpoint_probe_batch)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)


class DynamicsFabricDiagnosis(DynamicsDiagnoser):
    """The diagnosis of a Fabric loop: a :class:`~lightning_dynamics.DynamicsDiagnoser` on the monitor's hooks.

    List it after ``monitor`` in ``Fabric(callbacks=[...])``; pass ``optimizers=[optimizer]`` to ``on_train_start``,
    the loss as ``outputs`` to ``on_train_batch_end``, any ``val_loss`` to ``on_train_epoch_end``. A ``stop_on``
    finding sets :attr:`stopped_epoch` on every process. Lines, keys, file: as ``DynamicsDiagnosis``.
    """

    def __init__(self, monitor: DynamicsFabricMonitor | None = None, **diagnoser: Any) -> None:
        super().__init__(**diagnoser)
        self.monitor = monitor
        if monitor is not None:
            monitor.tracker.enable_layer_stats()

    def on_train_start(self, fabric: Fabric, model: nn.Module, optimizers: Iterable[Any] = (), **kwargs: Any) -> None:
        module = getattr(model, "module", model) if type(model).__name__ == "_FabricModule" else model
        names = self.monitor.tracker.layer_names if self.monitor is not None else []
        self.attach(module, [getattr(o, "optimizer", o) for o in optimizers], layer_names=names)

    def on_train_batch_end(self, fabric: Fabric, outputs: Any = None, **kwargs: Any) -> None:
        self.observe_loss(outputs.get("loss") if isinstance(outputs, Mapping) else outputs)

    def on_train_epoch_end(self, fabric: Fabric, epoch: int, step: int = 0, val_loss: Any = None, **kw: Any) -> None:
        reduce = lambda packed: cast(Tensor, fabric.all_reduce(packed, reduce_op="sum"))  # noqa: E731
        tracker = self.monitor.tracker if self.monitor is not None else None
        self.close_epoch(epoch, step, val_loss=val_loss, reduce=reduce, say=rank_zero_info, tracker=tracker)
        if fabric.loggers:
            fabric.log_dict(self.logged_values(), step=step)

    def on_train_end(self, fabric: Fabric, **kwargs: Any) -> None:
        self.detach()
