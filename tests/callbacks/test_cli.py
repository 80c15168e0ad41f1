"""LightningCLI builds the callback from YAML (typed __init__)."""

from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI

from lightning_dynamics import DynamicsMonitor
from tests.helpers import TinyModule, loaders

pytest.importorskip("jsonargparse")


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
    assert monitor.layers == ["net.fc*"] and monitor.summary == "abs_mean" and monitor.every_n_steps == 2
    assert monitor.window == 20 and monitor.detrend == "mean"
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
