"""What a resumed or restarted run trusts: validated checkpoint state and history files, stopping decisions only on
fresh values, a failing probe."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_dynamics import DynamicsEarlyStopping, DynamicsMonitor
from lightning_dynamics.capture import load_history, save_history
from tests.helpers import TinyModule, forward_hook_count, loaders, trainer


def _checkpointed_state(tmp_path: Path, **monitor_kwargs) -> tuple[dict, Path]:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True)
    pl.seed_everything(0)
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False, **monitor_kwargs)
    t = trainer(tmp_path, max_epochs=3, callbacks=[monitor, checkpoint], enable_checkpointing=True)
    t.fit(TinyModule(), loaders()[0])
    path = tmp_path / "ckpt" / "last.ckpt"
    callbacks = torch.load(path, weights_only=False)["callbacks"]
    (state,) = [v for k, v in callbacks.items() if k.startswith("DynamicsMonitor")]
    return state, path


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda s: s["history"].update(values=torch.zeros(3, 4)), "one entry per sample point"),
        (lambda s: s["history"].update(values=torch.zeros(4, 3)), "4 rows but there are 3 layer names"),
        (lambda s: s["accumulator"].update(counts=[-1, 0, 0]), "non-negative integers"),
        (lambda s: s["accumulator"].update(sums=torch.zeros(3, 5)), r"`sums` must be .* of shape \(3, 1\)"),
        (lambda s: s["metrics"]["metastability"].append(0.5), "4 values for 3 sample points"),
        (lambda s: s["config"].update(every_n_steps=2), "every_n_steps: checkpoint 2"),
        (lambda s: s["history"].update(epochs=[0, 2, 1]), "non-decreasing"),
    ],
)
def test_corrupt_checkpoint_state_is_a_clear_error(tmp_path: Path, corrupt, match: str) -> None:
    state, _ = _checkpointed_state(tmp_path)
    corrupt(state)
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    monitor.load_state_dict(state)
    module = TinyModule()
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path / "b", max_epochs=1, callbacks=[monitor]).fit(module, loaders()[0])
    assert forward_hook_count(module) == 0


def test_probe_batch_is_checkpointed_only_when_asked(tmp_path: Path) -> None:
    state, _ = _checkpointed_state(tmp_path / "a", source="probe")
    assert "probe_batch" not in state
    state, _ = _checkpointed_state(tmp_path / "b", source="probe", checkpoint_probe_batch=True)
    assert isinstance(state["probe_batch"], list) and state["probe_batch"][0].shape == (16, 8)


def test_history_file_detects_truncation_and_flipped_bits(tmp_path: Path) -> None:
    state = {
        "format_version": 2,
        "layer_names": ["a"],
        "summary": "rms",
        "values": torch.arange(40.0).reshape(1, 40),
        "epochs": list(range(40)),
        "steps": list(range(40)),
    }
    path = save_history(state, tmp_path / "h.pt")
    data = bytearray(path.read_bytes())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match=r"truncated\.pt"):
        load_history(truncated)
    index = data.find(bytes(torch.tensor([20.0]).numpy().tobytes()))  # a float32 value inside the payload
    assert index > 0
    data[index] ^= 0x01
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checksum mismatch|flipped\.pt"):
        load_history(flipped)
    with pytest.raises(FileNotFoundError, match="no dynamics history file"):
        load_history(tmp_path / "missing.pt")


def test_early_stopping_counts_fresh_values_only(tmp_path: Path) -> None:
    """Sampling every 8 steps (2 epochs) while checking every epoch: every other check has no fresh value."""
    monitor = DynamicsMonitor(every_n_steps=8, verbose=False)
    stopper = DynamicsEarlyStopping("stability_volatility", ratio=0.01, patience=1000)  # never stops on the value
    pl.seed_everything(0)
    t = trainer(tmp_path, max_epochs=48, callbacks=[monitor, stopper], log_every_n_steps=8)
    t.fit(TinyModule(), loaders()[0])
    assert monitor.tracker.n_samples == 24
    defined_checks = 48 - 2 * (20 - 1) - 1  # the volatility exists from the 20th sample point (step 160) on
    assert stopper.waited_checks > 0 and stopper.waited_checks <= defined_checks


def test_nan_after_definition_is_logged_and_stops_with_check_finite(tmp_path: Path) -> None:
    class Poisoned(TinyModule):
        def training_step(self, batch, batch_idx):
            if self.current_epoch >= 22:
                with torch.no_grad():
                    for p in self.parameters():
                        p.fill_(math.nan)
            return super().training_step(batch, batch_idx)

    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    stopper = DynamicsEarlyStopping("stability_volatility", ratio=0.01, patience=1000)  # only check_finite stops it
    pl.seed_everything(0)
    t = trainer(tmp_path, max_epochs=40, callbacks=[monitor, stopper])
    with pytest.warns(UserWarning):
        t.fit(Poisoned(), loaders()[0])
    # Not stale: the NaN reached callback_metrics, and the stopper stopped on it.
    assert math.isnan(float(t.callback_metrics["dynamics/stability_volatility"]))
    assert stopper.stopping_reason.name == "NON_FINITE_METRIC" and t.current_epoch < 40


def test_a_failing_probe_forward_warns_and_training_goes_on(tmp_path: Path) -> None:
    def broken(pl_module, batch):
        raise RuntimeError("probe exploded")

    monitor = DynamicsMonitor(points_per_epoch=1, source="probe", probe_forward=broken, verbose=False)
    pl.seed_everything(0)
    t = trainer(tmp_path, max_epochs=4, callbacks=[monitor])
    module = TinyModule()
    with pytest.warns(UserWarning, match="probe forward failed"):
        t.fit(module, loaders()[0])
    assert t.current_epoch == 4 and monitor.history.length == 4
    assert monitor.history.values.isnan().all()  # missing points, not made-up ones
    assert forward_hook_count(module) == 0
