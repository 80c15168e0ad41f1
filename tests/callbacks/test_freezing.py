"""DynamicsLayerFreezing, the Lightning adapter of LayerFreezer: it freezes under the Trainer, logs, checkpoints and
resumes its decisions, validates its arguments, and agrees across two DDP processes (gloo)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.callbacks.freezing import DynamicsLayerFreezing
from tests.helpers import TinyModule, random_classification, trainer

FAST = dict(window=8, lag=4, patience=2)


def _monitor() -> DynamicsMonitor:
    # One point per batch (4 per epoch); the freezer reads the history, so the costlier measures are off.
    return DynamicsMonitor(
        points_per_epoch=4, null_surrogates=None, compute_phase_integration=False, verbose=False, log_dashboard=False
    )


EPOCHS = 20  # 8 batches per epoch, a point per 2 batches: 80 points, as the plain-loop test


class Converging(TinyModule):
    """TinyModule with small initial weights (each layer's summary grows well above its minibatch noise) and a
    cosine learning rate to 0 over the run: its layers settle."""

    def __init__(self) -> None:
        super().__init__(lr=0.1)
        with torch.no_grad():
            self.net.fc1.weight.mul_(0.2)
            self.net.fc2.weight.mul_(0.2)

    def configure_optimizers(self):  # type: ignore[override]
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        total = EPOCHS * 8
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _data() -> DataLoader:
    data = random_classification(512, seed=1)
    return DataLoader(data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))


def _fit(tmp_path: Path, epochs: int, freezing: DynamicsLayerFreezing, **kwargs) -> tuple[pl.Trainer, TinyModule]:
    torch.manual_seed(0)
    module = Converging()
    fit_trainer = trainer(tmp_path, max_epochs=epochs, callbacks=[_monitor(), freezing], **kwargs)
    fit_trainer.fit(module, _data())
    return fit_trainer, module


@pytest.mark.integration
def test_freezes_under_the_trainer_logs_and_stops_updates(tmp_path: Path) -> None:
    freezing = DynamicsLayerFreezing(**FAST, verbose=False)
    fit_trainer, module = _fit(tmp_path, EPOCHS, freezing)
    assert freezing.n_frozen >= 1 and freezing.frozen_layers[0] == "net.fc1"
    assert not module.net.fc1.weight.requires_grad and module.net.head.weight.requires_grad
    assert float(fit_trainer.callback_metrics["dynamics/frozen_layers"]) == freezing.n_frozen
    series = fit_trainer.callbacks[0].tracker.logged["dynamics/frozen_layers"]  # type: ignore[attr-defined]
    assert series[-1] == freezing.n_frozen and len(series) == EPOCHS * 4


@pytest.mark.integration
def test_checkpoint_resume_restores_the_decisions(tmp_path: Path) -> None:
    reference = DynamicsLayerFreezing(**FAST, verbose=False)
    _fit(tmp_path / "a", EPOCHS, reference)
    first = reference.freezer.events[0]
    # Stop after the first freeze's epoch, save, resume to the end: the same events, the prefix frozen at once.
    partial = DynamicsLayerFreezing(**FAST, verbose=False)
    stop_trainer, _ = _fit(tmp_path / "b", first.epoch + 1, partial)
    ckpt = tmp_path / "b" / "mid.ckpt"
    stop_trainer.save_checkpoint(ckpt)
    resumed = DynamicsLayerFreezing(**FAST, verbose=False)
    torch.manual_seed(0)
    module = Converging()
    callbacks = [_monitor(), resumed]
    trainer(tmp_path / "c", max_epochs=EPOCHS, callbacks=callbacks).fit(module, _data(), ckpt_path=ckpt)
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
    # Rank 1 proposed freezing all but the head; rank 0's decision (the first layer) holds on both.
    assert rank0["events"] and rank0["events"] == rank1["events"]
    assert rank0["events"][0]["layers"] == ["net.fc1"] and rank0["events"][-1]["n_frozen"] == 1
    assert rank0["requires_grad"] == rank1["requires_grad"]
    for name, value in rank0["params"].items():
        torch.testing.assert_close(value, rank1["params"][name])
    assert rank0["snapshot"]
    for name, value in rank0["snapshot"].items():
        assert torch.equal(rank0["params"][name], value), f"{name} moved after it was frozen"


@pytest.mark.integration
def test_fabric_recipe(tmp_path: Path) -> None:
    """The Fabric recipe of docs/freezing.md: the freezer on the DynamicsFabricMonitor's tracker, after each batch."""
    from lightning.fabric import Fabric
    from torch import nn

    from lightning_dynamics import DynamicsFabricMonitor
    from lightning_dynamics.decisions.freezing import LayerFreezer

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.mul_(0.2)
    monitor = DynamicsFabricMonitor(every_n_steps=2, history_dir=str(tmp_path), log_dashboard=False)
    fabric = Fabric(accelerator="cpu", devices=1, callbacks=[monitor])
    model, optimizer = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9))
    fabric.call("on_train_start", fabric=fabric, model=model)
    freezer = LayerFreezer(window=16, lag=4, patience=2).attach(model.module, monitor.tracker)
    steps, step = 160, 0
    for epoch in range(20):
        fabric.call("on_train_epoch_start", fabric=fabric, epoch=epoch, step=step, n_batches=8)
        for batch_idx in range(8):
            for group in optimizer.param_groups:
                group["lr"] = 0.05 * (1 + torch.cos(torch.tensor(torch.pi * step / steps)).item())
            batch = torch.randint(0, 256, (128,), generator=g)
            optimizer.zero_grad()
            fabric.backward(nn.functional.cross_entropy(model(x[batch]), y[batch]))
            optimizer.step()
            step += 1
            fabric.call("on_train_batch_end", fabric=fabric, epoch=epoch, step=step, batch_idx=batch_idx, n_batches=8)
            freezer.step(epoch, step, agree=lambda n: fabric.broadcast(n, src=0))
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, step=step)
    fabric.call("on_train_end", fabric=fabric)
    assert freezer.n_frozen >= 1 and not net[0].weight.requires_grad and net[4].weight.requires_grad
    assert monitor.tracker.logged["dynamics/frozen_layers"][-1] == freezer.n_frozen
