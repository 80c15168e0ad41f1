"""DynamicsDiagnosis: the Lightning adapter of :class:`~lightning_dynamics.decisions.diagnosis.DynamicsDiagnoser`.

A plain Lightning ``Callback`` on public hooks only (``setup``, ``on_train_start``, ``on_train_batch_end``,
``on_train_epoch_end``, ``state_dict`` / ``load_state_dict``, ``trainer.should_stop``,
``trainer.strategy.reduce`` and ``reduce_boolean_decision``): the rules live in the framework-neutral core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_dynamics.callbacks.monitor import DynamicsMonitor
from lightning_dynamics.decisions.diagnosis import DiagnosisThresholds, DynamicsDiagnoser, findings_path
from lightning_dynamics.validation import check_bool, check_int


class DynamicsDiagnosis(Callback):
    r"""Say what is wrong with a run, where, and what to try: named findings, each kind once.

    At each training epoch's end the rules of :class:`~lightning_dynamics.decisions.diagnosis.DynamicsDiagnoser`
    read the epoch's training loss (the ``loss`` that ``training_step`` returns), the validation loss
    (``val_loss_key`` in ``callback_metrics``), the inputs and outputs of the epoch's first two training forwards,
    and the per-layer statistics of the :class:`~lightning_dynamics.DynamicsMonitor` with the same ``prefix``
    (dead and saturated units, gradient norms, update-to-weight ratios, weight norms); the model and its optimizers
    are checked at the start. Kinds, evidence and actions: docs/diagnosis.md.

    Each new finding is said once on rank 0 in one line; ``diagnosis/<kind>`` is logged at every epoch (1.0 once
    the kind was found, else 0.0). A finding of a ``stop_on`` kind ends the run (``trainer.should_stop``) and
    says why (:attr:`stop_reason`), so a sweep can prune it; the processes agree as Lightning's ``EarlyStopping``
    does (``reduce_boolean_decision``), and the epoch's numbers are summed across processes first, so every
    process reads the same ones. The findings are checkpointed and resume exactly. Rank 0 writes them beside the
    monitor's history (:attr:`findings_path`), where the dashboard and ``lightning-dynamics report`` read them.

    Args:
        stop_on: kinds of finding that end the run, e.g. ``["nonfinite", "lr_too_high"]``.
        ignore: kinds never reported.
        thresholds: the rules' thresholds (:class:`~lightning_dynamics.decisions.diagnosis.DiagnosisThresholds`).
        frozen: modules frozen on purpose, named in the LightningModule (e.g. ``["backbone"]`` when fine-tuning a
            head): not ``not_training``, while a trainable parameter missing from the optimizer still is.
        prefix: the :class:`~lightning_dynamics.DynamicsMonitor` whose layer statistics are read (without one,
            only the rules on the loss, the data, the outputs and the optimizers run).
        val_loss_key: the validation loss in ``trainer.callback_metrics``.
        log_every_epoch: log ``diagnosis/<kind>`` at each epoch's end.

    Attributes:
        findings: every finding so far (:class:`~lightning_dynamics.decisions.diagnosis.Finding`).
        stopped_epoch: the epoch at which it stopped the run (``None`` if it did not).
        stop_reason: the finding that stopped it, in words.

    Example::

        diagnosis = DynamicsDiagnosis(stop_on=["nonfinite"])
        trainer = Trainer(callbacks=[DynamicsMonitor(), diagnosis])
        trainer.fit(model)
        for finding in diagnosis.findings:
            print(finding.kind, finding.layers, finding.evidence, finding.action)
    """

    def __init__(
        self,
        stop_on: Iterable[str] = (),
        ignore: Iterable[str] = (),
        thresholds: DiagnosisThresholds | None = None,
        frozen: Iterable[str] = (),
        prefix: str = "dynamics",
        val_loss_key: str = "val_loss",
        log_every_epoch: bool = True,
    ) -> None:
        super().__init__()
        self.diagnoser = DynamicsDiagnoser(thresholds=thresholds, stop_on=stop_on, ignore=ignore, frozen=frozen)
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ValueError(f"`prefix` must be a non-empty name without '/', got {prefix!r}.")
        if not isinstance(val_loss_key, str) or not val_loss_key:
            raise ValueError(f"`val_loss_key` must be a non-empty string, got {val_loss_key!r}.")
        self.prefix = prefix
        self.val_loss_key = val_loss_key
        self.log_every_epoch = check_bool("log_every_epoch", log_every_epoch)
        self._monitor: DynamicsMonitor | None = None

    findings = property(lambda self: self.diagnoser.findings, doc="Every finding so far, in the order first seen.")
    stopped_epoch = property(lambda self: self.diagnoser.stopped_epoch, doc="The epoch it stopped the run at.")
    stop_reason = property(lambda self: self.diagnoser.stop_reason, doc="The finding that stopped it, in words.")

    @property
    def findings_path(self) -> Path | None:
        """The findings file, beside the monitor's history (``<prefix>_diagnosis[-vN].json``; ``None`` without one).

        Written by rank 0 at each epoch's end, so the monitor's dashboard at fit end and ``lightning-dynamics
        report`` show the findings. A file of its own rather than a field of the history: the history is the
        monitor's record of measurements, and the findings are read from it downstream (one-way data flow).
        """
        path = self._monitor.history_path if self._monitor is not None else None
        return None if path is None else findings_path(path)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]
        monitors = [c for c in callbacks if isinstance(c, DynamicsMonitor) and c.prefix == self.prefix]
        self._monitor = monitors[0] if monitors else None
        if self._monitor is None:
            rank_zero_warn(
                f"DynamicsDiagnosis: no DynamicsMonitor(prefix={self.prefix!r}) in Trainer(callbacks=...): the rules "
                "on per-layer statistics (gradients, dead and saturated units, updates) do not run."
            )
        elif not self._monitor.tracker.attached and self._monitor.tracker.enable_layer_stats():
            # The statistics are off by default (their cost on small models); the diagnosis reads them.
            rank_zero_info(f"DynamicsDiagnosis: turned on DynamicsMonitor(prefix={self.prefix!r})'s layer statistics.")
        # After every other callback's epoch end (the monitor has closed the epoch's point), before checkpoints.
        others = [c for c in callbacks if c is not self]
        position = next((i for i, c in enumerate(others) if isinstance(c, Checkpoint)), len(others))
        trainer.callbacks = [*others[:position], self, *others[position:]]  # type: ignore[attr-defined]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        names = self._monitor.layer_names if self._monitor is not None else []
        self.diagnoser.attach(pl_module, trainer.optimizers, layer_names=names)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, Tensor):
            self.diagnoser.observe_loss(loss)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        statistics = self._monitor.tracker.statistics if self._monitor is not None else None
        val_loss = trainer.callback_metrics.get(self.val_loss_key)
        stop = self.diagnoser.close_epoch(
            epoch,
            trainer.global_step,
            statistics=statistics,
            val_loss=None if val_loss is None else float(val_loss),
            reduce=lambda packed: trainer.strategy.reduce(packed, reduce_op="sum"),
            agree=lambda flag: trainer.strategy.reduce_boolean_decision(flag, all=False),
            say=rank_zero_info,
            save_to=self.findings_path if trainer.is_global_zero else None,
            owner="DynamicsDiagnosis",
        )
        if self.log_every_epoch:
            for key, value in self.diagnoser.logged_values().items():
                pl_module.log(key, value, on_step=False, on_epoch=True, batch_size=1)
        if stop:
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.diagnoser.detach()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.diagnoser.detach()

    def state_dict(self) -> dict[str, Any]:
        return {
            "diagnoser": self.diagnoser.state_dict(),
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; every field is checked first, and a ValueError names the wrong one."""
        where = "DynamicsDiagnosis checkpoint state"
        if not isinstance(state_dict, dict) or "diagnoser" not in state_dict:
            raise ValueError(f"{where} must be a dict with `diagnoser`, got {state_dict!r:.80}.")
        stopped = state_dict.get("stopped_epoch")
        if stopped is not None:
            check_int("stopped_epoch", stopped, 0)
        reason = state_dict.get("stop_reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError(f"{where}: `stop_reason` must be a string or None, got {reason!r:.80}.")
        self.diagnoser.load_state_dict(state_dict["diagnoser"])
        # Checkpoints written before the diagnoser kept the stop themselves hold it here only.
        self.diagnoser.stopped_epoch = stopped
        self.diagnoser.stop_reason = reason
