"""torch.compile: the monitor reports the same summaries as eager mode, whenever the model was compiled."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.capture import select_layers
from tests.helpers import TinyModule, TinyNet, loaders, trainer

BACKEND = "inductor"  # the default backend, compiled to C++ on CPU


def _eager_history(tmp_path: Path, source: str) -> torch.Tensor:
    monitor = DynamicsMonitor(points_per_epoch=1, source=source, verbose=False)
    pl.seed_everything(0)
    trainer(tmp_path / "eager", max_epochs=3, callbacks=[monitor]).fit(TinyModule(), loaders()[0])
    return monitor.history.values


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("source", ["train", "probe"])
def test_submodule_compiled_before_the_callback_attaches(tmp_path: Path, source: str) -> None:
    eager = _eager_history(tmp_path, source)
    pl.seed_everything(0)
    module = TinyModule()
    module.net = torch.compile(module.net, backend=BACKEND)
    module.net(torch.randn(16, 8)).sum().backward()  # compiled for the training batch shape, before any hook
    monitor = DynamicsMonitor(points_per_epoch=1, source=source, verbose=False)
    trainer(tmp_path / "compiled", max_epochs=3, callbacks=[monitor]).fit(module, loaders()[0])
    assert monitor.layer_names == ["net.fc1", "net.fc2", "net.head"]  # no `_orig_mod` in the names
    torch.testing.assert_close(monitor.history.values, eager, rtol=1e-4, atol=1e-5)


def test_module_compiled_after_the_callback_attaches(tmp_path: Path) -> None:
    eager = _eager_history(tmp_path, "train")

    class CompileOnTrainStart(TinyModule):
        def on_train_start(self) -> None:  # after the callback's on_fit_start: the hooks already exist
            self.net = torch.compile(self.net, backend=BACKEND)

    pl.seed_everything(0)
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    trainer(tmp_path / "late", max_epochs=3, callbacks=[monitor]).fit(CompileOnTrainStart(), loaders()[0])
    torch.testing.assert_close(monitor.history.values, eager, rtol=1e-4, atol=1e-5)


def test_layer_names_ignore_the_compile_wrapper() -> None:
    compiled = torch.nn.Sequential(torch.compile(TinyNet(), backend="eager"))
    assert [n for n, _ in select_layers(compiled)] == ["0.fc1", "0.fc2", "0.head"]
    assert [n for n, _ in select_layers(compiled, ["0.fc2"])] == ["0.fc2"]
