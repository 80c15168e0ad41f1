"""LightningCLI builds the callback from YAML (typed __init__, and the typed options it takes as **options)."""

import importlib.util
import inspect
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import lightning.pytorch
import pytest
import torch
import yaml
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


# ---------------------------------------------------------------- every builder option reaches the parser


def _builder_defaults() -> dict[str, Any]:
    """The options the adapters take as ``**options``, with their defaults (``warn``/``info``: set by each adapter)."""
    from lightning_dynamics.tracking.options import tracker_from_options

    parameters = inspect.signature(tracker_from_options).parameters
    return {name: p.default for name, p in parameters.items() if name not in ("warn", "info")}


def _own_defaults(cls: type) -> dict[str, Any]:
    """The adapter's own keyword arguments (those before ``**options``) with their defaults."""
    parameters = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _printed_init_args(cli: type, module: type, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The init_args the CLI resolves for ``--trainer.callbacks+=DynamicsMonitor`` (from ``--print_config``)."""
    args = ["--trainer.callbacks+=DynamicsMonitor", "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        cli(module, run=False, args=args, save_config_callback=None)
    assert exit_info.value.code in (0, None)
    (callback,) = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    return callback["init_args"]


def _as_yaml(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("package", ["lightning.pytorch", "pytorch_lightning"])
def test_cli_resolves_every_builder_option_with_its_default(package: str, capsys: pytest.CaptureFixture[str]) -> None:
    """LightningCLI follows ``**options`` into tracker_from_options: every option, typed, with the builder's default.

    ``pytorch_lightning``'s CLI resolves the short name to the twin of :mod:`lightning_dynamics.pytorch_lightning`
    (a shared base class with ``super().__init__(**kwargs)`` would lose the options there).
    """
    if package == "pytorch_lightning":
        pytest.importorskip("pytorch_lightning")
        from pytorch_lightning.cli import LightningCLI as PLLightningCLI

        from lightning_dynamics import pytorch_lightning as ld_pl

        cli, module, cls = PLLightningCLI, _pytorch_lightning_module(), ld_pl.DynamicsMonitor
    else:
        cli, module, cls = LightningCLI, TinyModule, DynamicsMonitor
    init_args = _printed_init_args(cli, module, capsys)
    expected = {**_own_defaults(cls), **_builder_defaults()}
    assert set(_own_defaults(cls)) == {"prog_bar", "log_dashboard", "checkpoint_probe_batch", "ddp_timeout"}
    assert init_args == {name: _as_yaml(default) for name, default in expected.items()}
    assert len(init_args) == 29  # 4 own flags and the 25 builder options (layer_stats and cost_budget included)


@pytest.mark.parametrize("package", ["lightning.pytorch", "pytorch_lightning"])
def test_cli_refuses_bad_option_values(package: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A value outside an option's type is refused by the parser; one outside its range by the config, by name."""
    if package == "pytorch_lightning":
        pytest.importorskip("pytorch_lightning")
        from pytorch_lightning.cli import LightningCLI as PLLightningCLI

        cli, module = PLLightningCLI, _pytorch_lightning_module()
        importlib.import_module("lightning_dynamics.pytorch_lightning")
    else:
        cli, module = LightningCLI, TinyModule
    base = ["--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.callbacks+=DynamicsMonitor"]
    with pytest.raises(SystemExit):
        cli(module, run=False, args=[*base, "--trainer.callbacks.summary=bogus"], save_config_callback=None)
    error = capsys.readouterr().err
    assert "summary" in error and "bogus" in error and "abs_mean" in error  # the Literal's choices are listed
    with pytest.raises(SystemExit):
        cli(module, run=False, args=[*base, "--trainer.callbacks.window=three"], save_config_callback=None)
    assert "window" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"`window` must be an integer >= 16 .*got 3"):
        cli(module, run=False, args=[*base, "--trainer.callbacks.window=3"], save_config_callback=None)


def _parser_options(cls: type) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "monitor")
    names = {action.dest.split(".", 1)[1] for action in parser._actions if action.dest.startswith("monitor.")}
    return parser, names


def test_fabric_options_resolve_through_jsonargparse(tmp_path: Path) -> None:
    """No LightningCLI for Fabric, but jsonargparse's add_class_arguments sees every option, typed."""
    from lightning_dynamics import DynamicsFabricMonitor

    parser, names = _parser_options(DynamicsFabricMonitor)
    assert names == set(_own_defaults(DynamicsFabricMonitor)) | set(_builder_defaults())
    assert set(_own_defaults(DynamicsFabricMonitor)) == {
        "history_dir",
        "log_dashboard",
        "checkpoint_probe_batch",
        "ddp_timeout",
    }
    config = parser.parse_args(["--monitor.summary=std", "--monitor.window=20", f"--monitor.history_dir={tmp_path}"])
    monitor = parser.instantiate_classes(config).monitor
    assert isinstance(monitor, DynamicsFabricMonitor) and monitor.history_dir == str(tmp_path)
    assert (monitor.tracker.config.summary, monitor.tracker.config.window) == ("std", 20)
    with pytest.raises(ArgumentError, match="summary"):
        parser.parse_args(["--monitor.summary=bogus"])


def test_hf_options_resolve_through_jsonargparse() -> None:
    """The transformers adapter keeps the probe options as its own (HF default probe) and the rest via **options."""
    pytest.importorskip("transformers")
    from lightning_dynamics.callbacks.hf import DynamicsTrainerCallback, hf_probe_forward

    parser, names = _parser_options(DynamicsTrainerCallback)
    own = _own_defaults(DynamicsTrainerCallback)
    assert names == set(own) | set(_builder_defaults())
    assert {"source", "probe_batch", "probe_forward"} <= set(own) and own["probe_forward"] is hf_probe_forward
    config = parser.parse_args(["--monitor.every_n_steps=5", "--monitor.prefix=hf"])
    callback = parser.instantiate_classes(config).monitor
    assert isinstance(callback, DynamicsTrainerCallback) and callback.tracker.probe_forward is hf_probe_forward
    assert (callback.tracker.config.every_n_steps, callback.tracker.prefix) == (5, "hf")
    with pytest.raises(ArgumentError, match="detrend"):
        parser.parse_args(["--monitor.detrend=cubic"])
