"""Only the training forward is recorded, whatever other callbacks run and in whatever order.

Two monitors are a supported set-up (a probe monitor beside the training one), and so are a Lyapunov twin and a user's
own evaluation in a callback hook. Each runs forwards of the same model between the training monitor's hooks; none may
reach its summaries. Every adapter is checked against a run with the training monitor alone: the histories agree to
float rounding (an intruding forward moved them by 1e-4 to 4.55x relative).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from lightning_dynamics import DynamicsMonitor, DynamicsTracker
from lightning_dynamics.callbacks.lyapunov import LyapunovMonitor
from lightning_dynamics.capture import SummaryAccumulator, side_forward
from lightning_dynamics.capture.hooks import ActivationCapture
from lightning_dynamics.decisions.lyapunov import TwinTrajectory
from tests.helpers import TinyModule, TinyNet, forward_hook_count, loaders, trainer

pytestmark = pytest.mark.integration

EPOCHS = 3


def _training_monitor(**kwargs: Any) -> DynamicsMonitor:
    return DynamicsMonitor(points_per_epoch=4, null_surrogates=None, save_history=False, verbose=False, **kwargs)


class TrainModeEvaluation(pl.Callback):
    """A user's own forward in training mode, with grad, in the hooks around the training step."""

    def __init__(self) -> None:
        self.calls = 0

    def _forward(self, pl_module: pl.LightningModule, batch: Any) -> None:
        pl_module(batch[0] * 3.0).sum()  # far from the training inputs: any leak moves the summaries
        self.calls += 1

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self._forward(pl_module, batch)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        pl_module(torch.ones(4, 8)).sum()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._forward(pl_module, batch)


def _fit(tmp_path: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    pl.seed_everything(0)
    t = trainer(tmp_path, max_epochs=EPOCHS, callbacks=callbacks, limit_val_batches=0)
    t.fit(TinyModule(), loaders()[0])
    return t


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Tensor:
    monitor = _training_monitor()
    _fit(tmp_path_factory.mktemp("alone"), [monitor])
    assert monitor.history is not None and monitor.history.length == EPOCHS * 4
    return monitor.history.values.clone()


def _other(kind: str) -> pl.Callback:
    if kind == "probe":
        return DynamicsMonitor(
            source="probe", prefix="probe", points_per_epoch=4, null_surrogates=None, save_history=False, verbose=False
        )
    if kind == "lyapunov":
        return LyapunovMonitor(d0=0.05, prefix="twin")
    return TrainModeEvaluation()


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("kind", ["probe", "lyapunov", "evaluation"])
def test_lightning_records_the_training_forward_only(tmp_path: Path, reference: Tensor, kind: str, order: str) -> None:
    monitor, other = _training_monitor(), _other(kind)
    _fit(tmp_path, [other, monitor] if order == "before" else [monitor, other])
    assert monitor.history is not None
    torch.testing.assert_close(monitor.history.values, reference, rtol=1e-6, atol=1e-9)
    if kind == "probe":
        assert other.history is not None and other.history.length == EPOCHS * 4  # the probe itself still records
    if kind == "lyapunov":
        assert other.twin.real_steps == EPOCHS * 4
    if kind == "evaluation":
        assert other.calls == 2 * EPOCHS * 4


def test_lightning_window_is_removed_at_teardown(tmp_path: Path) -> None:
    monitor, probe = _training_monitor(), _other("probe")
    t = _fit(tmp_path, [probe, monitor])
    assert "training_step" not in vars(t.strategy)  # the strategy's own method again
    assert forward_hook_count(t.lightning_module) == 0


def _fabric_loop(tmp_path: Path, callbacks: list[Any]) -> Any:
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, callbacks=callbacks)
    fabric.seed_everything(0)
    module = TinyModule()
    model, optimizer = fabric.setup(module, module.configure_optimizers())
    train = loaders()[0]
    fabric.call("on_train_start", fabric=fabric, model=model)
    step = 0
    for epoch in range(EPOCHS):
        fabric.call("on_train_epoch_start", fabric=fabric, epoch=epoch, step=step, n_batches=len(train))
        for batch_idx, (x, y) in enumerate(train):
            fabric.call("on_train_batch_start", fabric=fabric, batch=(x, y), batch_idx=batch_idx)
            optimizer.zero_grad()
            fabric.backward(nn.functional.cross_entropy(model(x), y))
            optimizer.step()
            step += 1
            fabric.call(  # outputs too: Fabric also calls the LightningModule's own hook
                "on_train_batch_end",
                fabric=fabric,
                outputs=None,
                batch=(x, y),
                batch_idx=batch_idx,
                epoch=epoch,
                step=step,
            )
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, step=step)
    fabric.call("on_train_end", fabric=fabric)
    return fabric


class FabricEvaluation:
    """A Fabric callback that runs the model in training mode, with grad, in its batch hooks."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.calls = 0

    def on_train_start(self, fabric: Any, model: nn.Module, **kwargs: Any) -> None:
        self.model = model

    def on_train_batch_start(self, fabric: Any, batch: Any = None, **kwargs: Any) -> None:
        self.on_train_batch_end(fabric, batch=batch)

    def on_train_batch_end(self, fabric: Any, batch: Any = None, **kwargs: Any) -> None:
        assert self.model is not None and self.model.training
        self.model(batch[0] * 3.0).sum()
        self.calls += 1


def test_fabric_records_the_training_forward_only(tmp_path: Path) -> None:
    from lightning_dynamics import DynamicsFabricMonitor

    def monitor(**kwargs: Any) -> DynamicsFabricMonitor:
        return DynamicsFabricMonitor(
            points_per_epoch=4, null_surrogates=None, save_history=False, verbose=False, **kwargs
        )

    alone = monitor()
    _fabric_loop(tmp_path / "alone", [alone])
    watched, before, after = monitor(), FabricEvaluation(), FabricEvaluation()
    probe = monitor(source="probe", prefix="probe")
    fabric = _fabric_loop(tmp_path / "crowded", [probe, before, watched, after])
    assert alone.tracker.history is not None and watched.tracker.history is not None
    assert alone.tracker.history.length == EPOCHS * 4 and before.calls == after.calls == 2 * EPOCHS * 4
    torch.testing.assert_close(watched.tracker.history.values, alone.tracker.history.values, rtol=1e-6, atol=1e-9)
    assert probe.tracker.history is not None and bool(probe.tracker.history.values.isfinite().all())
    assert "call" not in vars(fabric)  # Fabric's own method again


def test_plain_loop_leaves_a_twin_trajectory_out() -> None:
    """A twin steps in training mode with grad, right after the real step: a tracker gated on training mode alone
    recorded it."""

    def run(with_twin: bool) -> Tensor:
        torch.manual_seed(0)
        model = TinyNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        tracker = DynamicsTracker(layers=["fc1", "fc2", "head"], verbose=False).attach(model)
        twin = TwinTrajectory(d0=0.05).attach(model, optimizer)
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        for step in range(6):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if with_twin:
                twin.step(lambda: nn.functional.cross_entropy(model(x), y))
            tracker.sample(epoch=0, step=step, compute=False)
        assert tracker.history is not None
        return tracker.history.values

    torch.testing.assert_close(run(with_twin=True), run(with_twin=False), rtol=0, atol=0)


def test_side_forward_records_into_its_owner_only() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    mine, other = (SummaryAccumulator(2, "mean", torch.device("cpu")) for _ in range(2))
    with ActivationCapture(list(net.named_children()), mine) as a, ActivationCapture(list(net.named_children()), other):
        with side_forward(a):
            net(torch.randn(5, 3))
    assert mine.counts == [20, 10] and other.counts == [0, 0]


def test_a_window_records_only_inside_its_method_and_leaves_no_trace() -> None:
    class Loop:
        def __init__(self, model: nn.Module) -> None:
            self.model = model

        def training_step(self, x: Tensor) -> Tensor:
            return self.model(x)

    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    loop = Loop(net)
    accumulators = [SummaryAccumulator(2, "mean", torch.device("cpu")) for _ in range(2)]
    captures = [ActivationCapture(list(net.named_children()), acc).attach() for acc in accumulators]
    for capture in captures:
        capture.record_during(loop, "training_step")
    net(torch.randn(5, 3))  # outside the training step
    loop.training_step(torch.randn(5, 3))
    assert [acc.counts for acc in accumulators] == [[20, 10], [20, 10]]
    captures[0].remove()
    loop.training_step(torch.randn(5, 3))
    assert [acc.counts for acc in accumulators] == [[20, 10], [40, 20]]
    assert loop.training_step.__wrapped__.__func__ is Loop.training_step  # still wrapped for the second capture
    captures[1].remove()
    assert "training_step" not in vars(loop)


def test_a_tracker_in_a_window_can_still_be_switched_off_by_hand() -> None:
    """benchmarks/overhead.py times the hooks by switching recording off in every other step."""

    class Loop:
        def training_step(self, model: nn.Module, x: Tensor) -> Tensor:
            return model(x)

    model, loop = TinyNet(), Loop()
    tracker = DynamicsTracker(layers=["fc1", "fc2", "head"], verbose=False)
    tracker.attach(model, record_during=(loop, "training_step"))
    tracker.capture_enabled = False
    loop.training_step(model, torch.randn(4, 8))
    assert tracker.accumulator is not None and tracker.accumulator.counts == [0, 0, 0]
    tracker.capture_enabled = True
    assert not tracker.capture_enabled  # outside the window
    loop.training_step(model, torch.randn(4, 8))
    assert tracker.accumulator.counts == [64, 64, 12]
    tracker.detach()
    assert "training_step" not in vars(loop)
