"""Key ownership, history lifetime and the README recipes, tried as a user would (with a validation loop)."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_dynamics import DynamicsEarlyStopping, DynamicsModelCheckpoint, DynamicsMonitor
from lightning_dynamics.capture import load_history
from tests.helpers import TinyModule, loaders, trainer

ROOT = Path(__file__).resolve().parents[2]


def fit(t: pl.Trainer, module: TinyModule | None = None, val: bool = True, **kwargs) -> TinyModule:
    pl.seed_everything(0)
    module = module or TinyModule()
    train, val_loader = loaders()
    t.fit(module, train, val_loader if val else None, **kwargs)
    return module


# ---------------------------------------------------------------- one owner for key names


def test_early_stopping_with_a_typo_or_another_prefix_is_an_error(tmp_path: Path) -> None:
    for stopper, hint in (
        (DynamicsEarlyStopping(monitor="stability_volatilty"), "did you mean 'dynamics/stability_volatility'"),
        (DynamicsEarlyStopping(prefix="probe"), "their keys"),
    ):
        t = trainer(tmp_path, max_epochs=1, callbacks=[DynamicsMonitor(points_per_epoch=1, verbose=False), stopper])
        with pytest.raises(ValueError, match=hint):
            fit(t)


def test_non_strict_consumer_warns_and_waits(tmp_path: Path) -> None:
    stopper = DynamicsEarlyStopping(monitor="stability_volatilty", strict=False)
    t = trainer(tmp_path, max_epochs=2, callbacks=[DynamicsMonitor(points_per_epoch=1, verbose=False), stopper])
    with pytest.warns(UserWarning, match="no DynamicsMonitor logs it"):
        fit(t)
    assert t.current_epoch == 2


def test_consumers_follow_the_monitor_prefix(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, prefix="probe", source="probe", verbose=False)
    stopper = DynamicsEarlyStopping("stability_volatility", prefix="probe", stopping_threshold=10.0)
    checkpoint = DynamicsModelCheckpoint(prefix="probe", dirpath=tmp_path / "ckpt")
    t = trainer(tmp_path, max_epochs=30, callbacks=[monitor, stopper, checkpoint], enable_checkpointing=True)
    fit(t)
    assert stopper.monitor == "probe/stability_volatility" and checkpoint.monitor == "probe/stability_index"
    assert t.current_epoch == 20  # the first volatility (epoch 19) is below the absolute threshold
    assert Path(checkpoint.best_model_path).is_file()


def test_two_monitors_with_one_prefix_is_an_error(tmp_path: Path) -> None:
    train, probe = (
        DynamicsMonitor(points_per_epoch=1, verbose=False),
        DynamicsMonitor(points_per_epoch=1, source="probe", layers=["net.fc1"], verbose=False),
    )
    t = trainer(tmp_path, max_epochs=1, callbacks=[train, probe])
    with pytest.raises(ValueError, match="2 DynamicsMonitor callbacks share prefix='dynamics'"):
        fit(t)
    # Two identical monitors are refused even earlier, by Lightning, for their identical state keys.
    with pytest.raises(RuntimeError, match="state_key"):
        trainer(
            tmp_path,
            max_epochs=1,
            callbacks=[
                DynamicsMonitor(points_per_epoch=1, verbose=False),
                DynamicsMonitor(points_per_epoch=1, verbose=False),
            ],
        )


def test_convergence_report_takes_the_prefix(tmp_path: Path) -> None:
    import pandas as pd

    from lightning_dynamics.report.analysis import convergence_report

    frame = pd.DataFrame(
        {"val_acc": [50.0, 90.0, 95.0, 95.0], "probe/stability_volatility": [0.4, 0.05, 0.05, 0.05]},
        index=pd.Index([0, 1, 2, 3], name="epoch"),
    )
    assert convergence_report(frame, prefix="probe", patience=2).signal_epoch == 2
    with pytest.raises(KeyError, match="dynamics/stability_volatility"):
        convergence_report(frame)


# ---------------------------------------------------------------- the README recipes, with a validation loop


def test_readme_checkpoint_recipe_with_a_validation_loop(tmp_path: Path) -> None:
    checkpoint = DynamicsModelCheckpoint(monitor="stability_index", mode="max", dirpath=tmp_path / "ckpt")
    t = trainer(
        tmp_path,
        max_epochs=22,
        callbacks=[DynamicsMonitor(points_per_epoch=1, verbose=False), checkpoint],
        enable_checkpointing=True,
    )
    fit(t)  # stock ModelCheckpoint raises at epoch 0 here: the key exists from epoch 15 on
    assert checkpoint.best_model_score is not None and 0.0 <= float(checkpoint.best_model_score) <= 1.0
    assert Path(checkpoint.best_model_path).is_file() and checkpoint.waited_checks == 15


def test_stock_model_checkpoint_fails_with_a_validation_loop_as_the_readme_says(tmp_path: Path) -> None:
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    checkpoint = ModelCheckpoint(monitor="dynamics/stability_index", mode="max", save_on_train_epoch_end=True)
    t = trainer(
        tmp_path,
        max_epochs=2,
        callbacks=[DynamicsMonitor(points_per_epoch=1, verbose=False), checkpoint],
        enable_checkpointing=True,
    )
    with pytest.raises(MisconfigurationException, match="could not find the monitored key"):
        fit(t)


def test_readme_early_stopping_recipes_with_a_validation_loop(tmp_path: Path) -> None:
    stock = EarlyStopping(
        monitor="dynamics/stability_volatility", mode="min", check_on_train_epoch_end=True, strict=False
    )
    ours = DynamicsEarlyStopping(ratio=0.25, patience=3)
    t = trainer(tmp_path, max_epochs=24, callbacks=[DynamicsMonitor(points_per_epoch=1, verbose=False), stock, ours])
    fit(t)
    assert "dynamics/stability_volatility" in t.callback_metrics and "val_loss" in t.callback_metrics


def test_recipes_with_logger_false_another_logger_and_a_second_fit(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in (False, TensorBoardLogger(tmp_path / "tb"), CSVLogger(tmp_path / "csv")):
        monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
        t = trainer(tmp_path / "root", max_epochs=17, logger=logger, callbacks=[monitor])
        module = fit(t)
        first = monitor.history_path
        assert first is not None and first.is_file() and load_history(first)["values"].shape == (3, 17)
        t.fit_loop.max_epochs = 20  # a second fit on the same Trainer and model continues the history
        fit(t, module=module)
        second = monitor.history_path
        assert second != first and load_history(first)["values"].shape == (3, 17)  # the first file is kept
        assert load_history(second)["values"].shape == (3, 20)
        assert "dynamics/stability_index" in t.callback_metrics


def test_readme_recipe_stop_when_settled_keep_the_best_by_validation(tmp_path: Path) -> None:
    """The README's one recipe, as a user would run it: a validation loop, three kinds of logger, a second fit."""
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    for name, logger in (("none", False), ("tb", TensorBoardLogger(tmp_path / "tb")), ("csv", CSVLogger(tmp_path))):
        checkpoint = ModelCheckpoint(monitor="val_loss", dirpath=tmp_path / name / "ckpt")
        monitor = DynamicsMonitor(points_per_epoch=2, verbose=False)
        callbacks = [monitor, DynamicsEarlyStopping(), checkpoint]
        t = trainer(tmp_path / name, max_epochs=4, logger=logger, callbacks=callbacks, enable_checkpointing=True)
        module = fit(t)
        assert Path(checkpoint.best_model_path).is_file() and "dynamics/metastability" in t.callback_metrics
        t.fit_loop.max_epochs = 6  # a second fit continues
        fit(t, module=module)
        assert monitor.history_path is not None and load_history(monitor.history_path)["values"].shape[1] == 12


# ---------------------------------------------------------------- history lifetime


def test_runs_without_a_log_dir_never_overwrite_each_other(tmp_path: Path) -> None:
    paths = []
    for _ in range(3):
        monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
        fit(trainer(tmp_path, max_epochs=2, callbacks=[monitor]))  # logger=False: all in default_root_dir
        paths.append(monitor.history_path)
    assert [p.name for p in paths] == ["dynamics_history.pt", "dynamics_history-v1.pt", "dynamics_history-v2.pt"]
    assert all(load_history(p)["values"].shape == (3, 2) for p in paths)


def test_a_new_model_on_the_same_monitor_starts_a_fresh_history(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    fit(trainer(tmp_path, max_epochs=3, callbacks=[monitor]))
    fit(trainer(tmp_path, max_epochs=2, callbacks=[monitor]), module=TinyModule())
    assert monitor.history.length == 2


def test_predicate_layers_keep_a_stable_state_key_and_resume(tmp_path: Path) -> None:
    def linear_layers():  # a new function object each call, as in a new process
        return lambda name, module: isinstance(module, torch.nn.Linear)

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True)
    first = DynamicsMonitor(points_per_epoch=1, layers=linear_layers(), verbose=False)
    fit(trainer(tmp_path / "a", max_epochs=4, callbacks=[first, checkpoint], enable_checkpointing=True))
    resumed = DynamicsMonitor(points_per_epoch=1, layers=linear_layers(), verbose=False)
    assert resumed.state_key == first.state_key and "0x" not in resumed.state_key
    t = trainer(tmp_path / "b", max_epochs=6, callbacks=[resumed], enable_checkpointing=True)
    fit(t, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.history.length == 6 and resumed.history.epochs == list(range(6))


def test_failing_save_at_fit_end_warns_with_the_path_and_the_fit_succeeds(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")

    class Redirect(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            monitor.history_path = blocker / "history.pt"  # cannot be created: its parent is a file

    t = trainer(tmp_path, max_epochs=2, callbacks=[monitor, Redirect()])
    with pytest.warns(UserWarning, match=re.escape(f"could not save the dynamics history to {blocker / 'history.pt'}")):
        fit(t)
    assert t.state.finished and monitor.history.length == 2


def test_periodic_flush_survives_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            sys.path.insert(0, {str(ROOT)!r})
            import lightning.pytorch as pl
            from lightning_dynamics import DynamicsMonitor
            from tests.helpers import TinyModule, loaders, trainer

            class Kill(pl.Callback):
                def on_train_epoch_end(self, trainer, pl_module):
                    if trainer.current_epoch == 7:
                        os.kill(os.getpid(), signal.SIGKILL)

            monitor = DynamicsMonitor(points_per_epoch=1, save_every_n_samples=3, verbose=False)
            pl.seed_everything(0)
            trainer({str(tmp_path)!r}, max_epochs=20, callbacks=[monitor, Kill()]).fit(TinyModule(), loaders()[0])
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    saved = load_history(tmp_path / "dynamics_history.pt")
    assert saved["values"].shape == (3, 6)  # 8 points done, flushed at 3 and 6: at most 3 - 1 lost
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("logger_kind", ["mlflow", "wandb"])
def test_history_is_logged_as_a_run_artifact(tmp_path: Path, logger_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if logger_kind == "mlflow":
        pytest.importorskip("mlflow")
        from lightning.pytorch.loggers import MLFlowLogger

        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        logger = MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    else:
        pytest.importorskip("wandb")
        from lightning.pytorch.loggers import WandbLogger

        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_SILENT", "true")
        monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))  # artifact staging, kept in tmp_path
        monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
        logger = WandbLogger(save_dir=str(tmp_path), project="dynamics-test")
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False, log_dashboard=False)
    fit(trainer(tmp_path, max_epochs=3, logger=logger, callbacks=[monitor]))
    name = monitor.history_path.name
    data = monitor.history_path.read_bytes()
    if logger_kind == "mlflow":
        artifacts = list((tmp_path / "mlruns").rglob(f"artifacts/{name}"))
        assert len(artifacts) == 1 and load_history(artifacts[0])["values"].shape == (3, 3)
    else:
        import wandb

        wandb.finish()
        staged = [p for p in tmp_path.rglob("*") if p.is_file() and "wandb_" in str(p) and p.read_bytes() == data]
        assert staged, "the history was not staged as a W&B artifact"


def test_opt_in_complexity_and_the_noise_floors_are_logged(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, complexity_every_n_samples=2, verbose=False)
    t = trainer(tmp_path, max_epochs=28, callbacks=[monitor], logger=CSVLogger(tmp_path))
    fit(t, val=False)
    header = next(csv.reader(open(Path(t.logger.log_dir) / "metrics.csv")))
    for key in ("higuchi_fd", "katz_fd", "mfdfa_width", "metastability_null_lo", "integration_null_hi"):
        series = monitor.metrics[key]
        assert len(series) == 28 and f"dynamics/{key}" in header, key
        # The measures reach `callback_metrics` (EarlyStopping, ModelCheckpoint); the edges only the loggers.
        assert (f"dynamics/{key}" in t.callback_metrics) == (not key.endswith(("_null_lo", "_null_hi"))), key
    assert 1.0 <= monitor.metrics["higuchi_fd"][27] <= 2.5 and torch.isnan(
        torch.tensor(monitor.metrics["higuchi_fd"][26])
    )
    lo, hi = monitor.metrics["metastability_null_lo"][27], monitor.metrics["metastability_null_hi"][27]
    assert 0.0 <= lo <= hi <= 0.5
    assert "dynamics/higuchi_fd" not in DynamicsMonitor(verbose=False).keys  # off by default
    assert "dynamics/metastability_null_lo" not in DynamicsMonitor(null_surrogates=None, verbose=False).keys
