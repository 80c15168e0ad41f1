"""The transformers Trainer adapter: same history as a plain loop over the tracker, reporting, resume.

A tiny BERT built from a config (no download, about 800 parameters), SGD at a constant rate, no dropout, no gradient
clipping: the Trainer's training is then reproducible, and the plain loop replays the very batches the Trainer fed.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

pytest.importorskip("transformers")
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from lightning_dynamics import DynamicsTracker
from lightning_dynamics.callbacks.hf import STATE_FILENAME, DynamicsTrainerCallback

pytestmark = pytest.mark.integration

DDP_SCRIPT = Path(__file__).with_name("hf_ddp_script.py")

EPOCHS = 5
BATCH = 4
N_EXAMPLES = 32  # 8 optimizer steps per epoch
LR = 0.2
NULL_SURROGATES = 9  # fewer than the default 39: the same code path at a quarter of the cost


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        max_position_embeddings=8,
        type_vocab_size=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def _dataset() -> list[dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 16, (N_EXAMPLES, 6), generator=generator)
    labels = (ids[:, 0] > 7).long()  # learnable from the first token
    return [
        {"input_ids": i, "attention_mask": torch.ones(6, dtype=torch.long), "labels": y}
        for i, y in zip(ids, labels, strict=True)
    ]


def _args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    settings: dict[str, Any] = {
        "per_device_train_batch_size": BATCH,
        "num_train_epochs": EPOCHS,
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(overrides)
    return TrainingArguments(output_dir=str(output_dir), **settings)


def _train(
    output_dir: Path,
    monitor: DynamicsTrainerCallback,
    resume: str | None = None,
    model: BertForSequenceClassification | None = None,
    **overrides: Any,
) -> Trainer:
    model = model or _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    trainer = Trainer(
        model=model, args=_args(output_dir, **overrides), train_dataset=_dataset(), optimizers=(optimizer, None)
    )
    monitor.add_to(trainer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _assert_same_series(a: dict[str, list[float]], b: dict[str, list[float]]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=key)


def test_trainer_callback_matches_the_plain_loop(tmp_path: Path) -> None:
    """Same model, same batches, same SGD: the Trainer adapter and a plain loop over the tracker agree point for
    point (summaries rtol 1e-6, every measure), and the values reach the Trainer's log_history and output_dir."""
    # cost_budget=None: floors at every epoch and the dashboard, whatever the timing (the default spaces them out).
    monitor = DynamicsTrainerCallback(
        points_per_epoch=8, null_surrogates=NULL_SURROGATES, cost_budget=None, verbose=False, layer_stats=True
    )
    fed: list[dict[str, Any]] = []  # the Trainer's training batches, as the model received them

    def record(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        if module.training:
            fed.append({k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in kwargs.items()})

    model = _model()
    model.register_forward_pre_hook(record, with_kwargs=True)
    trainer = _train(tmp_path, monitor, model=model)
    steps_per_epoch = N_EXAMPLES // BATCH
    assert len(fed) == EPOCHS * steps_per_epoch

    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    tracker = DynamicsTracker(config=monitor.tracker.config, verbose=False, layer_stats=True)
    tracker.begin_fit(model)
    model.train()
    step = 0
    for epoch in range(EPOCHS):
        tracker.epoch_start(epoch, step, n_batches=steps_per_epoch)
        for batch_idx in range(steps_per_epoch):
            model(**fed[epoch * steps_per_epoch + batch_idx]).loss.backward()
            tracker.before_optimizer_step()  # the adapter's on_pre_optimizer_step
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            tracker.batch_end(epoch, step, batch_idx, steps_per_epoch)
        tracker.epoch_end(epoch, step)
    tracker.end_fit()

    ours, plain = monitor.tracker, tracker
    assert ours.history is not None and plain.history is not None
    assert ours.n_samples == plain.n_samples == EPOCHS * 8
    assert ours.history.epochs == plain.history.epochs and ours.history.steps == plain.history.steps
    torch.testing.assert_close(ours.history.values, plain.history.values, rtol=1e-6, atol=1e-9, equal_nan=True)
    _assert_same_series(ours.metrics, plain.metrics)
    assert ours.defined == plain.defined
    ours_stats, plain_stats = ours.statistics.series(), plain.statistics.series()
    for stat in ("grad_norm", "update_ratio"):
        np.testing.assert_allclose(ours_stats[stat]["values"], plain_stats[stat]["values"], rtol=1e-5, equal_nan=True)
        assert np.isfinite(np.asarray(ours_stats[stat]["values"], dtype=float)).any()
    assert {"metastability", "integration", "stability_index", "relative_change"} <= ours.defined

    # Reported through Trainer.log: one entry per epoch end, with the step and the last values.
    reported = [entry for entry in trainer.state.log_history if "dynamics/metastability" in entry]
    assert [entry["step"] for entry in reported] == [steps_per_epoch * (e + 1) for e in range(EPOCHS)]
    assert not any(key.endswith(("_null_lo", "_null_hi")) for entry in reported for key in entry)  # short lines
    for key in ("metastability", "integration", "stability_index"):
        assert reported[-1][f"dynamics/{key}"] == pytest.approx(ours.metrics[key][-1], rel=1e-12)
    # The other scalars the Trainer logged (its final train_loss) are recorded with the next point: none came after.
    assert monitor.history_path == tmp_path / "dynamics_history.pt" and monitor.history_path.is_file()
    saved = DynamicsTracker.load(monitor.history_path)
    np.testing.assert_allclose(saved["metrics"]["metastability"], ours.metrics["metastability"], equal_nan=True)
    assert (tmp_path / "dynamics_dashboard.png").is_file()


@pytest.mark.parametrize("checkpoint_step", [11])  # mid-epoch, inside an open sample interval
def test_trainer_callback_resumes_from_a_checkpoint(tmp_path: Path, checkpoint_step: int) -> None:
    """A run resumed from an HF checkpoint ends with the history of the uninterrupted run, point for point."""
    epochs = 3
    full = DynamicsTrainerCallback(
        points_per_epoch=4, null_surrogates=NULL_SURROGATES, log_dashboard=False, verbose=False, cost_budget=None
    )
    _train(tmp_path, full, num_train_epochs=epochs, save_strategy="steps", save_steps=checkpoint_step)
    checkpoint = tmp_path / f"checkpoint-{checkpoint_step}"
    assert (checkpoint / STATE_FILENAME.format(prefix="dynamics")).is_file()

    resumed = DynamicsTrainerCallback(
        points_per_epoch=4, null_surrogates=NULL_SURROGATES, log_dashboard=False, verbose=False, cost_budget=None
    )
    trainer = _train(tmp_path, resumed, resume=str(checkpoint), num_train_epochs=epochs, save_strategy="no")
    a, b = full.tracker, resumed.tracker
    assert a.history is not None and b.history is not None
    assert b.n_samples == a.n_samples == epochs * 4
    assert b.history.epochs == a.history.epochs and b.history.steps == a.history.steps
    torch.testing.assert_close(b.history.values, a.history.values, rtol=1e-6, atol=1e-9, equal_nan=True)
    _assert_same_series(b.metrics, a.metrics)
    # The resumed run claims the next free name in output_dir; its file holds the whole history.
    assert resumed.history_path == tmp_path / "dynamics_history-v1.pt"
    saved = DynamicsTracker.load(resumed.history_path)
    assert saved["steps"] == a.history.steps
    assert any("dynamics/metastability" in entry for entry in trainer.state.log_history)


def test_trainer_callback_probe_needs_a_batch() -> None:
    with pytest.raises(ValueError, match="probe_batch"):
        DynamicsTrainerCallback(source="probe")


def test_trainer_callback_probe_logged_losses_and_a_warning_without_its_trainer(tmp_path: Path) -> None:
    """source="probe" runs the model on a dict batch; a tracker batch is an optimizer step (gradient accumulation
    of 2: 4 steps per epoch); the Trainer's logged loss is recorded with the next sample point (NaN where none was
    logged since the previous point); without add_to, a warning says what is not reported."""
    data = _dataset()
    probe = {key: torch.stack([row[key] for row in data[:8]]) for key in data[0]}
    monitor = DynamicsTrainerCallback(
        source="probe", probe_batch=probe, points_per_epoch=2, log_dashboard=False, verbose=False
    )
    trainer = Trainer(
        model=_model(),
        args=_args(tmp_path, num_train_epochs=2, logging_steps=2, gradient_accumulation_steps=2),
        train_dataset=data,
    )
    trainer.add_callback(monitor)  # not add_to: the callback cannot report
    with pytest.warns(UserWarning, match=r"add_to\(trainer\)"):
        trainer.train()
    tracker = monitor.tracker
    assert tracker.history is not None and tracker.n_samples == 4 and tracker.history.steps == [2, 4, 6, 8]
    assert bool(torch.isfinite(tracker.history.values).all())
    assert not any(key.startswith("dynamics/") for entry in trainer.state.log_history for key in entry)
    # Points at steps 2 and 4 of each epoch; the Trainer logs the loss after step 2's point, before step 4's.
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    assert sorted(losses) == [2, 4, 6, 8]
    np.testing.assert_allclose(
        tracker.logged["loss"], [math.nan, losses[4], math.nan, losses[8]], rtol=1e-12, equal_nan=True
    )


class _TrainModeForward(TrainerCallback):
    """Another callback's forward in training mode, with grad, around each optimizer step."""

    def __init__(self) -> None:
        self.calls = 0

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        model = kwargs["model"]
        assert model.training
        model(input_ids=torch.arange(24).reshape(4, 6) % 16).logits.sum()
        self.calls += 1

    on_step_end = on_step_begin


def test_trainer_callback_records_the_training_forward_only(tmp_path: Path) -> None:
    """Callbacks registered before and after the monitor run the model in training mode: not recorded."""

    def monitor() -> DynamicsTrainerCallback:
        return DynamicsTrainerCallback(
            points_per_epoch=8, null_surrogates=None, save_history=False, log_dashboard=False, verbose=False
        )

    alone = monitor()
    _train(tmp_path / "alone", alone, num_train_epochs=1)
    watched, before, after = monitor(), _TrainModeForward(), _TrainModeForward()
    model = _model()
    trainer = Trainer(
        model=model,
        args=_args(tmp_path / "crowded", num_train_epochs=1),
        train_dataset=_dataset(),
        optimizers=(torch.optim.SGD(model.parameters(), lr=LR), None),
        callbacks=[before],
    )
    watched.add_to(trainer)
    trainer.add_callback(after)
    trainer.train()
    assert before.calls == after.calls == 2 * N_EXAMPLES // BATCH
    a, b = alone.tracker.history, watched.tracker.history
    assert a is not None and b is not None and a.length == b.length == 8
    torch.testing.assert_close(b.values, a.values, rtol=1e-6, atol=1e-9)
    assert "training_step" not in vars(trainer)  # the Trainer's own method again


class _Stream(torch.utils.data.IterableDataset):
    """The examples as an iterable without a length: the Trainer's epochs end when it runs out (short epochs)."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(_dataset())


class _StopEpochEarly(TrainerCallback):
    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if state.global_step % 8 == 4:
            control.should_epoch_stop = True


@pytest.mark.parametrize("short", ["iterable", "should_epoch_stop"])
def test_trainer_callback_numbers_epochs_after_a_short_epoch(tmp_path: Path, short: str) -> None:
    """The Trainer's state.epoch is fractional after a short epoch; the points still carry 0, 1, 2, 3."""
    monitor = DynamicsTrainerCallback(
        points_per_epoch=1, null_surrogates=None, save_history=False, log_dashboard=False, verbose=False
    )
    model = _model()
    if short == "iterable":  # 8 steps an epoch, out of max_steps=32: each epoch is a quarter of the "epoch" length
        overrides: dict[str, Any] = {"max_steps": 32}
        data: Any = _Stream()
        callbacks: list[TrainerCallback] = []
    else:  # the first epoch stops after 4 of its 8 steps, every later one at the step that is 4 mod 8
        overrides, data, callbacks = {"num_train_epochs": 4}, _dataset(), [_StopEpochEarly()]
    trainer = Trainer(
        model=model,
        args=_args(tmp_path, **overrides),
        train_dataset=data,
        optimizers=(torch.optim.SGD(model.parameters(), lr=LR), None),
        callbacks=callbacks,
    )
    monitor.add_to(trainer)
    trainer.train()
    history = monitor.tracker.history
    assert history is not None
    assert history.epochs == [0, 1, 2, 3]
    assert history.steps == ([8, 16, 24, 32] if short == "iterable" else [4, 12, 20, 28])


@pytest.mark.slow
def test_trainer_callback_under_ddp(tmp_path: Path) -> None:
    """torchrun, two CPU processes (gloo): one all-reduce per sample point, the same history and values on both ranks,
    one history file (rank 0). About a minute on the loaded 2-core machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_"))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(DDP_SCRIPT)]
    result = subprocess.run([*command, str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == 2 and rank0["reduces"] == rank1["reduces"] == 8  # 2 epochs x 4 points
    assert rank0["steps"] == rank1["steps"] == list(range(1, 9))  # 32 examples / (2 processes x 4) per epoch
    assert torch.equal(rank0["values"], rank1["values"])
    _assert_same_series(rank0["metrics"], rank1["metrics"])
    assert rank0["history_path"] == str(tmp_path / "dynamics_history.pt") and rank1["history_path"] == "None"
    assert sorted(p.name for p in tmp_path.glob("dynamics_history*")) == ["dynamics_history.pt"]
