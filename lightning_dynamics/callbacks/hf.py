"""DynamicsTrainerCallback: the ``transformers`` Trainer adapter of :class:`~lightning_dynamics.DynamicsTracker`.

The tracker owns the data flow and the sampling loop; this callback maps the Trainer's events onto it::

    trainer = Trainer(model=model, args=TrainingArguments("runs/bert"), train_dataset=train)
    monitor = DynamicsTrainerCallback().add_to(trainer)
    trainer.train()  # <output_dir>/dynamics_history.pt; values in trainer.state.log_history and every report_to

A "batch" of the tracker is one optimizer step (``on_step_end``, ``state.global_step``): with
``gradient_accumulation_steps=k`` its summaries pool the ``k`` micro-batches' forwards, and an epoch has
``ceil(len(train_dataloader) / k)`` of them. The forward calls made inside ``Trainer.training_step`` are recorded, and
no other (evaluation, other callbacks' forwards); without :meth:`DynamicsTrainerCallback.add_to`, the calls in training
mode.

Values go through ``Trainer.log`` (so ``state.log_history``, every ``report_to`` integration and the progress bar
receive them); a callback is given no Trainer by its events, hence :meth:`DynamicsTrainerCallback.add_to`. Resume: the
tracker's state goes into ``checkpoint-<step>/<prefix>_tracker_state.pt`` at each ``on_save`` and is restored by
``trainer.train(resume_from_checkpoint=...)`` (why not HF's ``ExportableState``: docs/transformers.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from lightning.fabric.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from lightning_dynamics.callbacks.sinks import dashboard_figure, dashboard_png_path
from lightning_dynamics.tracking.options import tracker_from_options
from lightning_dynamics.tracking.tracker import LogPoint
from lightning_dynamics.validation import check_bool, check_ddp_timeout, check_path

STATE_FILENAME = "{prefix}_tracker_state.pt"


def hf_probe_forward(model: nn.Module, batch: Any) -> Any:
    """The probe forward for a Trainer's batches: ``model(**batch)`` for a dict of inputs, else ``model(batch)``."""
    return model(**batch) if isinstance(batch, Mapping) else model(batch)


def _checkpoint_folder(args: TrainingArguments, state: TrainerState) -> Path:
    return Path(args.output_dir or ".") / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"


def _all_reduce_sum(packed: Tensor) -> Tensor:
    packed = packed.clone()
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return packed


class DynamicsTrainerCallback(TrainerCallback):
    """Watch a ``transformers`` Trainer's training as a dynamical system; every option of the Fabric adapter.

    Method and formulas: La Quang, Ugail, Howard et al., arXiv:2604.09716; docs/method.md.

    Args:
        source: ``"train"`` (the training forwards) or ``"probe"`` (``probe_batch`` in eval mode under ``no_grad``).
        probe_batch: required with ``source="probe"`` (the Trainer's events do not show the batches): a batch as
            the Trainer's collator makes it, e.g. ``data_collator([train[i] for i in range(8)])``.
        probe_forward: ``(model, batch) -> output`` for the probe (default: :func:`hf_probe_forward`).
        history_dir: where ``<prefix>_history.pt`` goes (default: ``args.output_dir``).
        log_dashboard: at the end of training, draw the dashboard beside the history (``<prefix>_dashboard.png``).
        checkpoint_probe_batch: store the probe batch in the tracker state of each checkpoint.
        ddp_timeout: with several processes, seconds each waits for the others before a sample point's all-reduce;
            ``None``: ``TrainingArguments.ddp_timeout``.
        **options: the tracker's other options, as :func:`~lightning_dynamics.tracking.options.tracker_from_options`;
            ``every_n_steps`` counts optimizer steps.
    """

    def __init__(
        self,
        *,
        source: Literal["train", "probe"] = "train",
        probe_batch: Any = None,
        probe_forward: Callable[[nn.Module, Any], Any] | None = hf_probe_forward,
        history_dir: str | Path | None = None,
        log_dashboard: bool = True,
        checkpoint_probe_batch: bool = False,
        ddp_timeout: float | None = None,
        **options: Any,
    ) -> None:
        if source == "probe" and probe_batch is None:
            raise ValueError(
                "`probe_batch` must be given with source='probe', got None: a Trainer callback never sees the "
                "training batches. Pass one as the collator makes it, e.g. data_collator([train[i] for i in range(8)])."
            )
        self.tracker = tracker_from_options(
            source=source,
            probe_batch=dict(probe_batch) if isinstance(probe_batch, Mapping) else probe_batch,  # a BatchEncoding
            probe_forward=probe_forward,
            warn=rank_zero_warn,
            info=rank_zero_info,
            **options,
        )
        self.history_dir = check_path("history_dir", history_dir)
        self.log_dashboard = check_bool("log_dashboard", log_dashboard)
        self.checkpoint_probe_batch = check_bool("checkpoint_probe_batch", checkpoint_probe_batch)
        self.ddp_timeout = check_ddp_timeout(ddp_timeout)
        self.trainer: Trainer | None = None
        self._epoch = 0
        self._n_steps: int | None = None
        self._logs_seen = 0
        self._epoch_begun = False

    @property
    def history_path(self) -> Path | None:
        return self.tracker.history_path

    @property
    def _state_name(self) -> str:
        return STATE_FILENAME.format(prefix=self.tracker.prefix)

    def add_to(self, trainer: Trainer) -> DynamicsTrainerCallback:
        """Register with ``trainer`` and report through its ``Trainer.log``; returns this callback."""
        trainer.add_callback(self)
        self.trainer = trainer
        return self

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Attach to the model, claim the history file in the output folder and, on resume, restore the state."""
        if self.trainer is None:
            rank_zero_warn(
                "DynamicsTrainerCallback has no Trainer: its values reach no report_to integration and no log_history "
                "(they are in the history file). Register it with DynamicsTrainerCallback().add_to(trainer)."
            )
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.tracker.begin_fit(
            kwargs["model"],
            reduce=_all_reduce_sum if distributed else None,
            ddp_timeout=self.ddp_timeout or float(args.ddp_timeout),
            history_dir=self.history_dir or args.output_dir or ".",
            is_global_zero=state.is_world_process_zero,
            # Only the training loop calls Trainer.training_step: forwards run by other callbacks are left out.
            record_during=(self.trainer, "training_step") if self.trainer is not None else None,
        )
        self._logs_seen = len(state.log_history)
        self._epoch_begun = False  # no epoch of this train() call has begun yet (see on_epoch_begin)
        resumed = state.global_step > 0  # the Trainer restored a checkpoint
        if resumed:
            folders = (args.resume_from_checkpoint, _checkpoint_folder(args, state))
            paths = [Path(f) / self._state_name for f in folders if isinstance(f, (str, Path)) and f]
            found = next((path for path in paths if path.is_file()), None)
            if found is None:
                rank_zero_warn(
                    f"DynamicsTrainerCallback: no dynamics state in {[str(p) for p in paths]}; "
                    f"the history starts afresh at step {state.global_step}."
                )
            else:
                self.tracker.load_state_dict(torch.load(found, map_location="cpu", weights_only=True))
        self.tracker.training_position(int(state.epoch or 0), state.global_step, resumed=resumed)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """An epoch begins: its length in optimizer steps, when the train dataloader has a length."""
        try:
            self._n_steps = math.ceil(len(kwargs["train_dataloader"]) / args.gradient_accumulation_steps)
        except (KeyError, TypeError):
            self._n_steps = None
        # Counted from the epoch-begin events: after a short epoch (an iterable dataset, should_epoch_stop) the
        # Trainer's fractional state.epoch still holds the previous epoch's number. The count starts where this
        # train() call starts: 0, or the epoch a resumed run is in.
        self._epoch = self._epoch + 1 if self._epoch_begun else int(state.epoch or 0)
        self._epoch_begun = True
        self.tracker.epoch_start(self._epoch, state.global_step, self._n_steps)

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """After the backward pass (and gradient clipping), before the optimizer step: the gradient statistics."""
        self.tracker.before_optimizer_step()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """After each optimizer step: a sample point closes if the schedule says so."""
        # The step's index in its epoch from the global step, so that a run resumed mid-epoch samples as before.
        step, n_steps = state.global_step, self._n_steps
        index = None if n_steps is None else step - 1 - self._epoch * n_steps
        self._close(state, lambda logged: self.tracker.batch_end(self._epoch, step, index, n_steps, logged=logged))

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Close the epoch: its last sample point and the measures."""
        self._close(state, lambda logged: self.tracker.epoch_end(self._epoch, state.global_step, logged=logged))

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Write the tracker's state into the checkpoint folder the Trainer has just written."""
        if args.should_save:
            folder = _checkpoint_folder(args, state)
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(
                self.tracker.state_dict(include_probe_batch=self.checkpoint_probe_batch), folder / self._state_name
            )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Remove the hooks, save the history and draw the dashboard beside it (first process)."""
        path = self.tracker.end_fit()
        if path is not None and self.log_dashboard and self.tracker.dashboard_due(path.parent):
            try:
                with self.tracker.dashboard_timer(True):
                    dashboard_figure(path).savefig(dashboard_png_path(path))
            except Exception as error:  # a figure (or a missing matplotlib) must never fail a finished run
                rank_zero_warn(f"DynamicsTrainerCallback: could not draw the dashboard figure: {error!r}")

    def _close(self, state: TrainerState, close: Callable[[dict[str, float]], LogPoint | None]) -> None:
        """Close a point with the scalars the Trainer logged since the previous one (loss, eval metrics); log it."""
        logged = {
            key: float(value)
            for entry in state.log_history[self._logs_seen :]
            for key, value in entry.items()
            if isinstance(value, (int, float))
            and key not in ("epoch", "step")
            and not key.startswith(f"{self.tracker.prefix}/")
        }
        n_samples = self.tracker.n_samples
        point = close(logged)
        if self.tracker.n_samples > n_samples:
            self._logs_seen = len(state.log_history)
        if point is not None and point.without_null_edges and self.trainer is not None:
            self.trainer.log(point.without_null_edges)  # the Trainer prints each dict: no noise-floor edges
