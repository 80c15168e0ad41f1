"""DynamicsTrainerDiagnosis: the ``transformers`` Trainer adapter of :class:`~lightning_dynamics.DynamicsDiagnoser`.

A thin map of the Trainer's events onto the framework-neutral core, beside the monitor's adapter
(:class:`~lightning_dynamics.callbacks.hf.DynamicsTrainerCallback`), whose layer statistics it reads::

    monitor = DynamicsTrainerCallback().add_to(trainer)
    diagnosis = DynamicsTrainerDiagnosis(monitor, stop_on=["nonfinite"]).add_to(trainer)  # after the monitor
    trainer.train()
    for finding in diagnosis.findings:
        print(finding)

The training loss is read from the model's outputs in its training forwards (``outputs.loss``, which a
``transformers`` model returns when the batch holds labels); the validation loss is the latest ``eval_loss`` of
``state.log_history`` at the epoch's end. Its own module: it needs ``transformers``, and ``hf.py`` is the monitor's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.utilities.rank_zero import rank_zero_info, rank_zero_warn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lightning_dynamics.callbacks.hf import DynamicsTrainerCallback, _all_reduce_sum, _checkpoint_folder
from lightning_dynamics.decisions.diagnosis import DynamicsDiagnoser

STATE_FILENAME = "{prefix}_diagnosis_state.pt"


class DynamicsTrainerDiagnosis(TrainerCallback, DynamicsDiagnoser):
    """Say what is wrong with a ``transformers`` Trainer's run, where, and what to try: the findings of
    :class:`~lightning_dynamics.DynamicsDiagnosis` (the same kinds, lines, ``diagnosis/<kind>`` keys and findings file
    beside the monitor's history; docs/diagnosis.md).

    A finding of a ``stop_on`` kind sets ``control.should_training_stop`` (and :attr:`stopped_epoch`); under DDP the
    epoch's numbers and the stop are summed across processes, so every process stops together. The state goes into
    each checkpoint folder (``<prefix>_diagnosis_state.pt``) and is restored by ``resume_from_checkpoint``.

    Args:
        monitor: the :class:`~lightning_dynamics.callbacks.hf.DynamicsTrainerCallback` whose layer statistics are read
            (it turns them on); without one only the rules on the loss, the outputs and the optimizer run.
        **diagnoser: ``thresholds``, ``stop_on``, ``ignore`` of :class:`~lightning_dynamics.DynamicsDiagnoser`.
    """

    def __init__(self, monitor: DynamicsTrainerCallback | None = None, **diagnoser: Any) -> None:
        super().__init__(**diagnoser)
        self.monitor = monitor
        self.trainer: Trainer | None = None
        if monitor is not None:
            monitor.tracker.enable_layer_stats()

    @property
    def _state_name(self) -> str:
        return STATE_FILENAME.format(prefix=self.monitor.tracker.prefix if self.monitor is not None else "dynamics")

    def add_to(self, trainer: Trainer) -> DynamicsTrainerDiagnosis:
        """Register with ``trainer`` (after the monitor) and log ``diagnosis/<kind>`` through it; this callback."""
        trainer.add_callback(self)
        self.trainer = trainer
        return self

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Restore the state on resume, check the model and its optimizer, hook the model's root forward."""
        if state.global_step > 0:
            folders = (args.resume_from_checkpoint, _checkpoint_folder(args, state))
            paths = [Path(f) / self._state_name for f in folders if isinstance(f, (str, Path)) and f]
            found = next((path for path in paths if path.is_file()), None)
            if found is None:
                rank_zero_warn(f"DynamicsTrainerDiagnosis: no diagnosis state in {[str(p) for p in paths]}.")
            else:
                self.load_state_dict(torch.load(found, map_location="cpu", weights_only=True))
        names = self.monitor.tracker.layer_names if self.monitor is not None else []
        optimizer = kwargs.get("optimizer")
        optimizers = [optimizer] if optimizer is not None else []
        self.attach(kwargs["model"], optimizers, layer_names=names, loss_from_output=True)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Run the rules on the epoch; say, log and save the findings; stop on a ``stop_on`` finding."""
        val_loss = next((e["eval_loss"] for e in reversed(state.log_history) if "eval_loss" in e), None)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.close_epoch(
            max(math.ceil(state.epoch or 0) - 1, 0),  # state.epoch is epoch + 1 at an epoch's end
            state.global_step,
            val_loss=val_loss,
            reduce=_all_reduce_sum if distributed else None,
            say=rank_zero_info,
            tracker=self.monitor.tracker if self.monitor is not None else None,
        )
        if self.trainer is not None:
            self.trainer.log(self.logged_values())
        if self.stopped_epoch is not None:
            control.should_training_stop = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Write the state into the checkpoint folder the Trainer has just written."""
        if args.should_save:
            folder = _checkpoint_folder(args, state)
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.state_dict(), folder / self._state_name)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.detach()
