"""The monitor at the edges a user meets through the Trainer: a second Trainer, float64 models, a sweep
sharing a directory, loose arguments, stale values, empty fits, messages under DDP-style logging."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_dynamics import DynamicsFabricMonitor, DynamicsMonitor
from lightning_dynamics.capture import load_history
from lightning_dynamics.report.cli import main as report_main
from tests.helpers import TinyModule, loaders, trainer


def test_a_second_fit_with_a_new_trainer_writes_files_the_package_reads(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    module = TinyModule()
    train, val = loaders()
    for run in range(2):
        trainer(tmp_path / f"fit{run}", max_epochs=3, callbacks=[monitor]).fit(module, train, val)
    assert monitor.history.epochs == [0, 1, 2, 0, 1, 2] and monitor.history.segments == [0, 3]
    saved = load_history(monitor.history_path)  # the second fit's file: both segments, readable
    assert saved["segments"] == [0, 3]
    assert report_main(["report", str(monitor.history_path.parent)]) == 0
    restored = DynamicsMonitor(points_per_epoch=1, verbose=False)
    restored.load_state_dict(monitor.state_dict())  # the state of two fits restores
    trainer(tmp_path / "fit2", max_epochs=4, callbacks=[restored]).fit(module, train, val)
    assert restored.history.segments == [0, 3, 6]


def test_a_restored_history_that_runs_ahead_of_the_trainer_is_refused(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    train, val = loaders()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, max_epochs=2, callbacks=[monitor, checkpoint], enable_checkpointing=True).fit(
        TinyModule(), train, val
    )
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    key = next(k for k in state["callbacks"] if k.startswith("DynamicsMonitor"))
    late = DynamicsMonitor(points_per_epoch=1, verbose=False)
    late_trainer = trainer(tmp_path / "late", max_epochs=6, callbacks=[late])
    late_trainer.fit(TinyModule(), train, val)
    ahead = late.state_dict()  # 6 epochs recorded
    state["callbacks"][key] = ahead
    torch.save(state, tmp_path / "tampered.ckpt")
    resumed = DynamicsMonitor(points_per_epoch=1, verbose=False)
    with pytest.raises(ValueError, match="runs ahead of the trainer"):
        trainer(tmp_path / "r", max_epochs=4, callbacks=[resumed]).fit(
            TinyModule(), train, val, ckpt_path=tmp_path / "tampered.ckpt"
        )


@pytest.mark.parametrize("summary", ["rms", "mean", "abs_mean", "std"])
def test_float64_models_keep_every_layer(tmp_path: Path, summary: str) -> None:
    monitor = DynamicsMonitor(summary=summary, points_per_epoch=2, verbose=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer(tmp_path, max_epochs=3, callbacks=[monitor], precision="64-true").fit(TinyModule(), *loaders())
    layer_trouble = [
        str(w.message) for w in record if "DynamicsTracker" in str(w.message) and "layers" in str(w.message)
    ]
    assert not layer_trouble  # no layer disabled, missing or excluded
    x = monitor.history.values
    assert x.shape == (3, 6) and bool(torch.isfinite(x).all())


def test_a_sweep_of_two_runs_started_together_in_one_directory_keeps_both(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from lightning_dynamics import DynamicsMonitor
        from tests.helpers import TinyModule, loaders, trainer
        epochs = int(sys.argv[1])
        monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
        trainer({str(tmp_path)!r}, max_epochs=epochs, callbacks=[monitor]).fit(TinyModule(), *loaders())
        print(monitor.history_path)
        """
    )
    runs = [subprocess.Popen([sys.executable, "-c", script, str(n)], stdout=subprocess.PIPE, text=True) for n in (3, 5)]
    paths = [Path(run.communicate(timeout=300)[0].strip().splitlines()[-1]) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert paths[0] != paths[1]
    assert sorted(load_history(p)["values"].shape[1] for p in paths) == [3, 5]


def test_a_fit_without_training_batches_writes_no_history(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(verbose=False)
    trainer(tmp_path, max_epochs=2, callbacks=[monitor], limit_train_batches=0).fit(TinyModule(), *loaders())
    assert monitor.tracker.n_samples == 0
    assert not [p for p in tmp_path.rglob("*") if "history" in p.name]


def test_validation_values_are_recorded_once_not_repeated(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=4, verbose=False)
    trainer(tmp_path, max_epochs=4, callbacks=[monitor], check_val_every_n_epoch=2).fit(TinyModule(), *loaders())
    val_loss = monitor.tracker.logged["val_loss"]
    recorded = [i for i, v in enumerate(val_loss) if not math.isnan(v)]
    # Validation runs at the end of epochs 1 and 3, before the epoch's last point: recorded there, NaN elsewhere.
    assert recorded == [7, 15], val_loss


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"save_history": "x"}, "`save_history` must be True or False"),
        ({"prog_bar": 1}, "`prog_bar` must be True or False"),
        ({"log_dashboard": None}, "`log_dashboard` must be True or False"),
        ({"verbose": math.nan}, "`verbose` must be True or False"),
        ({"h_opt": -1}, r"`h_opt` must be a finite number in \[0.0, 2.0\]"),
        ({"h_opt": 1e30}, "`h_opt`"),
        ({"sigma": math.inf}, "`sigma`"),
        ({"ddp_timeout": 1e30}, "`ddp_timeout`"),
        ({"ddp_timeout": 0}, "`ddp_timeout`"),
        ({"points_per_epoch": 0}, "`points_per_epoch`"),
        ({"points_per_epoch": True}, "`points_per_epoch`"),
        ({"null_surrogates": 3}, "`null_surrogates` must be an integer >= 9"),
        ({"prefix": ""}, "`prefix`"),
        ({"prefix": "a/b"}, "`prefix`"),
        ({"source": "val"}, "`source` must be one of"),
        ({"summary": True}, "`summary` must be one of"),
        ({"max_layers": 0}, "`max_layers`"),
        ({"save_every_n_samples": 1.5}, "`save_every_n_samples`"),
        ({"probe_forward": "forward"}, "`probe_forward`"),
    ],
)
@pytest.mark.parametrize("adapter", [DynamicsMonitor, DynamicsFabricMonitor])
def test_every_argument_is_validated_with_its_name(adapter: type, arguments: dict, match: str) -> None:
    if adapter is DynamicsFabricMonitor and set(arguments) & {"prog_bar"}:
        pytest.skip("a Lightning-only argument")
    with pytest.raises(ValueError, match=match):
        adapter(**arguments)


def test_two_layers_named_with_dollars_draw_literally(tmp_path: Path) -> None:
    net = nn.ModuleDict({"$\\foo{$": nn.Linear(8, 16), "b": nn.Linear(16, 16), "head": nn.Linear(16, 3)})

    class Named(TinyModule):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net["head"](torch.tanh(self.net["b"](torch.tanh(self.net["$\\foo{$"](x)))))

    run_dir = tmp_path / "lr_$\\eta{$"
    monitor = DynamicsMonitor(points_per_epoch=4, verbose=False)
    trainer(run_dir, max_epochs=6, callbacks=[monitor]).fit(Named(net=net), *loaders())
    assert "net.$\\foo{$" in monitor.layer_names
    assert report_main(["report", str(monitor.history_path.parent)]) == 0


def test_values_reach_the_logger_under_lightnings_default_logging_interval(tmp_path: Path) -> None:
    """every_n_steps=2 under log_every_n_steps=50 (the default) still writes metrics.csv: the monitor logs at its own
    sample points, not at the Trainer's logging interval."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    monitor = DynamicsMonitor(every_n_steps=2, verbose=False)
    t = trainer(tmp_path, max_epochs=4, callbacks=[monitor], logger=CSVLogger(tmp_path))  # log_every_n_steps=50
    t.fit(TinyModule(), *loaders())
    rows = list(csv.DictReader(open(Path(t.logger.log_dir) / "metrics.csv")))
    logged = [r for r in rows if r.get("dynamics/metastability")]
    assert len(logged) == monitor.tracker.n_samples - 5 + 1  # every computation from the 5th point on
