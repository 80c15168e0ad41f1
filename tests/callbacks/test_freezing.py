"""DynamicsLayerFreezing, the Lightning adapter of LayerFreezer: it freezes under the Trainer, logs, checkpoints and
resumes its decisions, validates its arguments, and agrees across two DDP processes (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.callbacks.freezing import DynamicsLayerFreezing
from tests.helpers import TinyModule, loaders, trainer

FAST = dict(window=8, lag=2, patience=2)


def _fit(tmp_path: Path, epochs: int, freezing: DynamicsLayerFreezing, **kwargs) -> tuple[pl.Trainer, TinyModule]:
    torch.manual_seed(0)
    module = TinyModule(lr=0.05)
    fit_trainer = trainer(
        tmp_path,
        max_epochs=epochs,
        callbacks=[DynamicsMonitor(every_n_steps=1, verbose=False, log_dashboard=False), freezing],
        **kwargs,
    )
    fit_trainer.fit(module, *loaders(n=64, batch_size=16))
    return fit_trainer, module


@pytest.mark.integration
def test_freezes_under_the_trainer_logs_and_stops_updates(tmp_path: Path) -> None:
    freezing = DynamicsLayerFreezing(**FAST, verbose=False)
    fit_trainer, module = _fit(tmp_path, 30, freezing)
    assert freezing.n_frozen >= 1 and freezing.frozen_layers[0] == "net.fc1"
    assert not module.net.fc1.weight.requires_grad and module.net.head.weight.requires_grad
    assert float(fit_trainer.callback_metrics["dynamics/frozen_layers"]) == freezing.n_frozen
    series = fit_trainer.callbacks[0].tracker.logged["dynamics/frozen_layers"]  # type: ignore[attr-defined]
    assert series[-1] == freezing.n_frozen and len(series) == 30 * 4


@pytest.mark.integration
def test_checkpoint_resume_restores_the_decisions(tmp_path: Path) -> None:
    reference = DynamicsLayerFreezing(**FAST, verbose=False)
    _fit(tmp_path / "a", 30, reference)
    first = reference.freezer.events[0]
    # Stop after the first freeze's epoch, save, resume to 30 epochs: the same events, the prefix frozen at once.
    partial = DynamicsLayerFreezing(**FAST, verbose=False)
    stop_trainer, _ = _fit(tmp_path / "b", first.epoch + 1, partial)
    ckpt = tmp_path / "b" / "mid.ckpt"
    stop_trainer.save_checkpoint(ckpt)
    resumed = DynamicsLayerFreezing(**FAST, verbose=False)
    torch.manual_seed(0)
    module = TinyModule(lr=0.05)
    callbacks = [DynamicsMonitor(every_n_steps=1, verbose=False, log_dashboard=False), resumed]
    trainer(tmp_path / "c", max_epochs=30, callbacks=callbacks).fit(
        module, *loaders(n=64, batch_size=16), ckpt_path=ckpt
    )
    assert [vars(e) for e in resumed.freezer.events][: len(partial.freezer.events)] == [
        vars(e) for e in partial.freezer.events
    ]
    assert resumed.freezer.events[0] == first
    assert not module.net.fc1.weight.requires_grad


@pytest.mark.integration
def test_needs_a_monitor_with_its_prefix(tmp_path: Path) -> None:
    freezing = DynamicsLayerFreezing(prefix="other", verbose=False)
    with pytest.raises(ValueError, match="prefix='other'"):
        _fit(tmp_path, 1, freezing)


@pytest.mark.parametrize(
    ("name", "value"), [("change_tol", -1.0), ("window", 1), ("patience", 0), ("prefix", "a/b"), ("verbose", 1)]
)
def test_constructor_is_validated(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        DynamicsLayerFreezing(**{name: value})  # type: ignore[arg-type]


@pytest.mark.slow
def test_ddp_ranks_agree(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_"))
    }
    script = Path(__file__).with_name("freezing_ddp_script.py")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["events"] and rank0["events"] == rank1["events"]  # rank 1's own proposal was overruled
    assert rank0["requires_grad"] == rank1["requires_grad"]
    for name, value in rank0["params"].items():
        torch.testing.assert_close(value, rank1["params"][name])
    assert rank0["snapshot"]
    for name, value in rank0["snapshot"].items():
        assert torch.equal(rank0["params"][name], value), f"{name} moved after it was frozen"
