"""One model, three ways to drive the tracker: Lightning Trainer, Fabric, a plain loop. Same history, same values."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.kit import DigitsDataModule, SmallCNN
from lightning_dynamics import DynamicsConfig, DynamicsMonitor, DynamicsTracker
from lightning_dynamics.capture import load_history
from lightning_dynamics.capture.layer_stats import STAT_KEYS
from lightning_dynamics.measures.registry import measure_names

MEASURE_KEYS = measure_names("default")

EPOCHS = 18
LR = 0.05


class _Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = SmallCNN(channels=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        self.log("val_acc", (self(x).argmax(-1) == y).float().mean() * 100)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LR, momentum=0.9)


def _data() -> tuple[DataLoader, DataLoader]:
    data = DigitsDataModule(batch_size=128, shuffle=False)
    data.setup()
    assert data.train_set is not None and data.val_set is not None
    return DataLoader(data.train_set, batch_size=128), DataLoader(data.val_set, batch_size=256)


def _trainer_run(tmp_path: Path) -> DynamicsMonitor:
    pl.seed_everything(0)
    module = _Classifier()
    monitor = DynamicsMonitor(verbose=False, cost_budget=None)  # floors at every epoch, whatever the timing
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[monitor],
    )
    trainer.fit(module, *_data())  # with a validation loop: eval-mode forwards must not be recorded
    return monitor


def _plain_run(tmp_path: Path) -> DynamicsTracker:
    pl.seed_everything(0)
    module = _Classifier()  # an nn.Module like any other here: the plain loop never uses Lightning
    optimizer = module.configure_optimizers()
    train, val = _data()
    tracker = DynamicsTracker(prefix="plain", config=DynamicsConfig(cost_budget=None))
    tracker.begin_fit(module, history_dir=tmp_path)
    step = 0
    for epoch in range(EPOCHS):
        tracker.epoch_start(epoch, step, len(train))
        module.train()
        for batch_idx, (x, y) in enumerate(train):
            optimizer.zero_grad()
            nn.functional.cross_entropy(module(x), y).backward()
            optimizer.step()
            step += 1
            tracker.batch_end(epoch, step, batch_idx, len(train))
        module.eval()
        with torch.no_grad():
            for x, _ in val:
                module(x)  # validation in eval mode: not recorded
        tracker.epoch_end(epoch, step)
    tracker.end_fit()
    return tracker


def _fabric_run(tmp_path: Path):  # type: ignore[no-untyped-def]
    from lightning.fabric import Fabric

    from lightning_dynamics import DynamicsFabricMonitor

    monitor = DynamicsFabricMonitor(history_dir=tmp_path, cost_budget=None)
    fabric = Fabric(accelerator="cpu", devices=1, callbacks=[monitor])
    fabric.seed_everything(0)
    module = _Classifier()
    optimizer = module.configure_optimizers()
    model, optimizer = fabric.setup(module, optimizer)
    train, val = _data()
    fabric.call("on_train_start", fabric=fabric, model=model)
    step = 0
    for epoch in range(EPOCHS):
        fabric.call("on_train_epoch_start", fabric=fabric, epoch=epoch, step=step, n_batches=len(train))
        model.train()
        for batch_idx, (x, y) in enumerate(train):
            optimizer.zero_grad()
            fabric.backward(nn.functional.cross_entropy(model(x), y))
            optimizer.step()
            step += 1
            fabric.call(  # outputs and batch too: Fabric also calls the LightningModule's own hook
                "on_train_batch_end",
                fabric=fabric,
                outputs=None,
                batch=(x, y),
                batch_idx=batch_idx,
                epoch=epoch,
                step=step,
            )
        model.eval()
        with torch.no_grad():
            for x, _ in val:
                model(x)
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, step=step)
    fabric.call("on_train_end", fabric=fabric)
    return monitor


def test_trainer_fabric_and_plain_loop_give_identical_histories_and_values(tmp_path: Path) -> None:
    lightning_run = _trainer_run(tmp_path / "trainer")
    plain = _plain_run(tmp_path / "plain")
    fabric = _fabric_run(tmp_path / "fabric")
    reference = lightning_run.tracker
    assert reference.layer_names == plain.layer_names == fabric.tracker.layer_names
    assert reference.history is not None and reference.history.length == EPOCHS * min(
        DynamicsConfig().points_per_epoch, len(_data()[0])
    )
    for other in (plain, fabric.tracker):
        assert other.history is not None
        torch.testing.assert_close(other.history.values, reference.history.values, rtol=1e-6, atol=0)
        assert other.computed == reference.computed and set(other.keys) == set(reference.keys)
        for key in reference.keys:  # every measure and noise floor
            a, b = torch.tensor(other.metrics[key]), torch.tensor(reference.metrics[key])
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, equal_nan=True, msg=key)
    assert not math.isnan(reference.metrics["stability_index"][-1])
    # The three history files hold the same series.
    files = [reference.history_path, tmp_path / "plain" / "plain_history.pt", fabric.history_path]
    loaded = [load_history(path) for path in files]
    for state in loaded[1:]:
        torch.testing.assert_close(state["values"], loaded[0]["values"], rtol=1e-6, atol=0)
    val_acc = loaded[0]["logged"]["val_acc"]
    assert val_acc.shape == (reference.history.length,)  # the Trainer's validation accuracy rides along ...
    assert int((~val_acc.isnan()).sum()) == EPOCHS  # ... recorded once per validation, NaN between (not repeated)


def test_plain_loop_records_training_mode_forwards_only() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    tracker = DynamicsTracker(layers=["0"]).attach(model)
    x = torch.randn(16, 4)
    model.eval()
    model(x)
    model.train()
    model(x)
    values = tracker.sample(epoch=0, step=1)
    assert tracker.history is not None
    expected = model[0](x).detach().square().mean().sqrt()
    torch.testing.assert_close(tracker.history.values[0, 0], expected)
    assert set(values) == set(tracker.keys) and set(MEASURE_KEYS) <= set(values)  # no layer statistics by default
    tracker.detach()
    with_stats = DynamicsTracker(layers=["0"], layer_stats=True).attach(model)
    model(x)
    stats = {f"stats/{key}" for key in STAT_KEYS}  # the layer statistics' summaries over depth
    assert set(with_stats.sample(epoch=0, step=1)) == set(with_stats.keys) | stats
    with_stats.detach()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_tracker_needs_attach_before_sample() -> None:
    with pytest.raises(RuntimeError, match="before attach"):
        DynamicsTracker().sample(epoch=0, step=0)


def test_examples_plain_and_fabric_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    root = Path(__file__).resolve().parents[2] / "examples"
    monkeypatch.syspath_prepend(str(root))  # as `python examples/x.py` does: the task module beside the script
    for name in ("plain_pytorch", "fabric_demo"):
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = module.train(epochs=3, out=tmp_path / name)
        tracker = result[0] if name == "plain_pytorch" else result[0].tracker
        assert tracker.n_samples >= 3 and tracker.history_path is not None and tracker.history_path.exists()


def test_examples_run_from_a_copy_outside_the_repository(tmp_path: Path) -> None:
    """The examples need only the installed package: copied out of the repository, with nothing of it but
    ``lightning_dynamics`` importable (no ``benchmarks``), the demo runs and prints the key to watch."""
    import os
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "examples", tmp_path / "examples")
    site = tmp_path / "site"
    site.mkdir()
    (site / "lightning_dynamics").symlink_to(repo / "lightning_dynamics")
    sources = [p.read_text() for p in (tmp_path / "examples").glob("*.py")]
    assert not any("from benchmarks" in text or "import benchmarks" in text for text in sources)
    env = {**os.environ, "PYTHONPATH": str(site)}
    command = [sys.executable, "examples/digits_demo.py", "--epochs", "2", "--out", "runs"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dynamics/relative_change" in result.stdout and "docs/reading_the_dashboard.md" in result.stdout
    assert list((tmp_path / "runs").glob("version_0/dynamics_history.pt"))
