"""LightningCLI builds the callback from YAML (typed __init__)."""

import importlib.util
from pathlib import Path
from typing import Any

import lightning.pytorch
import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from lightning_dynamics import DynamicsMonitor
from tests.helpers import TinyModule, TinyNet, loaders

pytest.importorskip("jsonargparse")


def _option(monitor: DynamicsMonitor, name: str) -> object:
    """A measure option of the monitor, held in its frozen config or, in older versions, on the monitor."""
    config = getattr(monitor, "config", None)
    return getattr(config, name) if config is not None and hasattr(config, name) else getattr(monitor, name)


def test_callback_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
trainer:
  max_epochs: 1
  accelerator: cpu
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  default_root_dir: {tmp_path}
  callbacks:
    - class_path: lightning_dynamics.DynamicsMonitor
      init_args:
        layers: ["net.fc*"]
        summary: abs_mean
        every_n_steps: 2
        window: 20
        detrend: mean
        verbose: false
"""
    )
    cli = LightningCLI(TinyModule, run=False, args=["--config", str(config)], save_config_callback=None)
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, DynamicsMonitor)]
    assert _option(monitor, "summary") == "abs_mean" and _option(monitor, "every_n_steps") == 2
    assert _option(monitor, "window") == 20 and _option(monitor, "detrend") == "mean"
    cli.trainer.fit(cli.model, loaders()[0])
    assert monitor.layer_names == ["net.fc1", "net.fc2"]
    assert monitor.history.length == 2


def test_invalid_yaml_value_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        """
trainer:
  callbacks:
    - class_path: lightning_dynamics.DynamicsMonitor
      init_args:
        summary: maximum
"""
    )
    with pytest.raises(SystemExit):
        LightningCLI(TinyModule, run=False, args=["--config", str(config)], save_config_callback=None)


ROOT = Path(__file__).resolve().parents[2]


def test_examples_cli_fit_with_the_yaml(tmp_path: Path) -> None:
    """examples/cli.py + examples/cli_config.yaml: a real ``fit`` in a subprocess, overridden to stay short."""
    import subprocess
    import sys

    import torch

    from lightning_dynamics.capture import load_history

    command = [
        sys.executable,
        str(ROOT / "examples" / "cli.py"),
        "fit",
        "--config",
        str(ROOT / "examples" / "cli_config.yaml"),
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=1",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.batch_size=32",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "digits").glob("version_*")
    saved = (run_dir / "config.yaml").read_text()
    assert "DynamicsMonitor" in saved and "DynamicsEarlyStopping" in saved and "SmallCNN" in saved
    history = load_history(run_dir / "dynamics_history.pt")
    assert history["values"].shape[0] == len(history["layer_names"]) >= 3
    assert sorted(set(history["epochs"])) == [0, 1, 2]  # 3 epochs of sub-epoch sample points
    assert torch.isfinite(history["values"]).all()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val_acc", "val_loss", "dynamics/nonfinite"} <= set(header)


def test_short_callback_name_on_the_command_line(tmp_path: Path) -> None:
    """``--trainer.callbacks+=DynamicsMonitor`` resolves the short name and takes typed init args after it."""
    if importlib.util.find_spec("pytorch_lightning") is not None:
        # The pytorch_lightning versions (subclasses of the originals) must not make the short name ambiguous.
        importlib.import_module("lightning_dynamics.pytorch_lightning")
    args = [
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=DynamicsMonitor",
        "--trainer.callbacks.summary=std",
        "--trainer.callbacks.verbose=false",
        "--trainer.callbacks+=DynamicsEarlyStopping",
        "--trainer.callbacks.ratio=0.5",
    ]
    cli = LightningCLI(TinyModule, run=False, args=args, save_config_callback=None)
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, DynamicsMonitor)]
    (stopping,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "DynamicsEarlyStopping"]
    assert _option(monitor, "summary") == "std" and stopping.ratio == 0.5
    cli.trainer.fit(cli.model, loaders()[0])
    assert monitor.history.length >= 1 and set(monitor.history.epochs) == {0}  # one epoch of sample points
    with pytest.raises(SystemExit):
        LightningCLI(TinyModule, run=False, args=["--trainer.callbacks+=DynamicsMonitr"], save_config_callback=None)


# ---------------------------------------------------------------- the standalone pytorch_lightning package


def _pytorch_lightning_module() -> Any:
    """TinyModule's training, but on ``pytorch_lightning.LightningModule`` (a pytorch_lightning Trainer needs it)."""
    pytorch_lightning = pytest.importorskip("pytorch_lightning")

    class PLTinyModule(pytorch_lightning.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.net = TinyNet()
            self.lr = lr

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    return PLTinyModule


def test_pytorch_lightning_trainer_fit_with_the_twins(tmp_path: Path) -> None:
    """A real pytorch_lightning.Trainer fit: the twins log, and the early stopping is a monitoring callback."""
    pytorch_lightning = pytest.importorskip("pytorch_lightning")
    from lightning_dynamics import callbacks as lightning_callbacks
    from lightning_dynamics import pytorch_lightning as ld_pl

    monitor = ld_pl.DynamicsMonitor(points_per_epoch=1, verbose=False)  # the volatility exists after 20 epochs
    stopping = ld_pl.DynamicsEarlyStopping(monitor="stability_volatility", stopping_threshold=1.0)  # stop at once
    assert isinstance(monitor, pytorch_lightning.Callback) and isinstance(monitor, lightning_callbacks.DynamicsMonitor)
    assert isinstance(stopping, pytorch_lightning.Callback)  # a plain Callback (public surface only)
    assert not isinstance(lightning_callbacks.DynamicsEarlyStopping(), pytorch_lightning.callbacks.EarlyStopping)
    trainer = pytorch_lightning.Trainer(
        max_epochs=25,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[stopping, monitor],  # stopping first in the list: it must still run after the monitor logged
    )
    trainer.fit(_pytorch_lightning_module()(), loaders(n=32)[0])
    assert monitor.history.length == 20
    assert "dynamics/stability_volatility" in trainer.callback_metrics
    # Run as a monitoring callback (after the monitor's epoch-end sample): it stops at the first defined value.
    # The lightning.pytorch original would run in list order, before the monitor, and stop one epoch later.
    assert stopping.stopped_epoch == 19 and trainer.current_epoch == 20
    assert ld_pl.DynamicsMonitor.__name__ == "DynamicsMonitor"
    for name in lightning_callbacks.__all__:  # every Lightning callback of the package has a twin
        original = getattr(lightning_callbacks, name)
        if issubclass(original, lightning.pytorch.Callback):
            public = getattr(ld_pl, name)
            assert issubclass(public, pytorch_lightning.Callback) and public.__name__ == name
            assert ld_pl.on_pytorch_lightning(original) is public


def test_pytorch_lightning_cli_short_name(tmp_path: Path) -> None:
    """pytorch_lightning's LightningCLI resolves ``--trainer.callbacks+=DynamicsMonitor`` to the twin."""
    pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.cli import LightningCLI as PLLightningCLI

    from lightning_dynamics import pytorch_lightning as ld_pl

    args = [
        "--trainer.max_epochs=1",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=DynamicsMonitor",
        "--trainer.callbacks.summary=mean",
    ]
    cli = PLLightningCLI(_pytorch_lightning_module(), run=False, args=args, save_config_callback=None)
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, DynamicsMonitor)]
    assert isinstance(monitor, ld_pl.DynamicsMonitor) and _option(monitor, "summary") == "mean"
    cli.trainer.fit(cli.model, loaders()[0])
    assert monitor.history.length >= 1 and set(monitor.history.epochs) == {0}  # one epoch of sample points
