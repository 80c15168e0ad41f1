import csv
import gc
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.capture import load_history
from lightning_dynamics.functional import dynamics_measures, rolling_volatility, stability_index
from lightning_dynamics.functional._checks import clear_shape_caches
from lightning_dynamics.measures.registry import measure_names
from tests.helpers import TinyModule, TinyNet, forward_hook_count, loaders, trainer

MEASURE_KEYS = measure_names("default")


def fit(tmp_path: Path, monitor: DynamicsMonitor, epochs: int = 22, module: TinyModule | None = None, **kwargs):
    pl.seed_everything(0)
    module = module or TinyModule()
    ckpt_path = kwargs.pop("ckpt_path", None)
    t = trainer(tmp_path, max_epochs=epochs, callbacks=[monitor, *kwargs.pop("callbacks", [])], **kwargs)
    train, val = loaders()
    t.fit(module, train, val, ckpt_path=ckpt_path)
    return t, module


def test_keys_in_csv_logger_and_callback_metrics(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    t, _ = fit(tmp_path, monitor, logger=CSVLogger(tmp_path))
    defined = [key for key in MEASURE_KEYS if monitor.defined_from()[key] <= 22]  # relative_change needs 33
    assert len(defined) == len(MEASURE_KEYS) - 1
    for key in defined:
        assert f"dynamics/{key}" in t.callback_metrics, key
    rows = list(csv.DictReader(open(Path(t.logger.log_dir) / "metrics.csv")))
    header = rows[0].keys()
    assert {f"dynamics/{key}" for key in defined} <= set(header)
    volatility = [r["dynamics/stability_volatility"] for r in rows if r["dynamics/stability_volatility"]]
    assert len(volatility) == 22 - (16 + 5 - 1) + 1  # first logged at the 20th epoch, never before
    metastability = [r["dynamics/metastability"] for r in rows if r["dynamics/metastability"]]
    assert len(metastability) == 22 - 5 + 1


def test_logged_values_equal_functional_api_on_the_history(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    t, _ = fit(tmp_path, monitor)
    x = monitor.history.values
    expected = dynamics_measures(x)
    for key in ("integration", "integration_alpha", "metastability", "synchrony", "phase_integration"):
        assert float(t.callback_metrics[f"dynamics/{key}"]) == pytest.approx(float(getattr(expected, key)), rel=1e-5)
    s = stability_index(x)
    logged_s = torch.tensor(monitor.metrics["stability_index"], dtype=torch.float64)
    torch.testing.assert_close(logged_s, s.double(), equal_nan=True, rtol=1e-5, atol=1e-6)
    logged_v = torch.tensor(monitor.metrics["stability_volatility"], dtype=torch.float64)
    torch.testing.assert_close(logged_v, rolling_volatility(s.double()), equal_nan=True, rtol=1e-4, atol=1e-6)


def test_history_window_bounds_the_measures_to_the_last_points(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, history_window=16, verbose=False)
    t, _ = fit(tmp_path, monitor, epochs=24)
    x = monitor.history.values
    assert x.shape[-1] == 24  # the stored history stays whole
    last, whole = dynamics_measures(x[:, -16:]), dynamics_measures(x)
    for key in ("integration_alpha", "metastability", "synchrony"):
        logged = float(t.callback_metrics[f"dynamics/{key}"])
        assert logged == pytest.approx(float(getattr(last, key)), rel=1e-5)
        assert logged != pytest.approx(float(getattr(whole, key)), rel=1e-3)


def test_history_matches_a_manual_rms_of_the_layer_outputs(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, layers=["net.fc2"], verbose=False)
    pl.seed_everything(0)
    module = TinyModule()
    train, _ = loaders()
    snapshots = []

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                snapshots.append(pl_module.net.fc2(pl_module.net.act(pl_module.net.fc1(batch[0]))))

    t = trainer(tmp_path, max_epochs=1, callbacks=[Snapshot(), monitor], limit_val_batches=0)
    t.fit(module, train)
    expected = torch.cat([s.flatten() for s in snapshots]).square().mean().sqrt()
    torch.testing.assert_close(monitor.history.values[0, 0], expected, rtol=1e-5, atol=1e-6)


def test_stock_early_stopping_monitors_a_dynamics_key(tmp_path: Path) -> None:
    stopper = EarlyStopping(
        monitor="dynamics/stability_index",
        mode="max",
        patience=0,
        min_delta=1.0,
        strict=False,
        check_on_train_epoch_end=True,
    )
    t, _ = fit(tmp_path, DynamicsMonitor(points_per_epoch=1, verbose=False), epochs=40, callbacks=[stopper])
    # The key first exists after 16 epochs; min_delta=1 means it can never improve, so stop at the next check.
    assert t.current_epoch == 17
    assert stopper.stopped_epoch == 16


def test_model_checkpoint_monitors_a_dynamics_key(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        monitor="dynamics/stability_volatility",
        mode="min",
        save_on_train_epoch_end=True,
    )
    fit(
        tmp_path,
        DynamicsMonitor(points_per_epoch=1, verbose=False),
        epochs=22,
        callbacks=[checkpoint],
        enable_checkpointing=True,
        limit_val_batches=0,
    )
    assert checkpoint.best_model_path and math.isfinite(float(checkpoint.best_model_score))


def test_hooks_removed_after_fit_and_after_exception(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    _, module = fit(tmp_path, monitor, epochs=2)
    assert forward_hook_count(module) == 0
    failing = TinyModule(fail_at_step=6)
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path / "fail", monitor, epochs=5, module=failing)
    assert forward_hook_count(failing) == 0
    saved = load_history(tmp_path / "fail" / "dynamics_history.pt")
    assert saved["values"].shape == (3, 1)  # the one full epoch before the failure was kept


def test_no_retained_activation_memory_across_50_epochs(tmp_path: Path) -> None:
    # cost_budget=None draws the noise floors at every point, so the set of logged keys is fixed from the start. Under
    # the default time budget a floor's keys first appear whenever the clock allows, and Lightning then keeps a pair
    # of scalar tensors per new key: bounded, but at an epoch that depends on the machine's load.
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False, cost_budget=None)
    snapshots: list[tuple[int, int]] = []

    class Census(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            # Bounded shape caches (FFT multipliers, DFA bases) are not retention: clear them before counting.
            clear_shape_caches()
            gc.collect()
            tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
            snapshots.append((len(tensors), sum(t.numel() * t.element_size() for t in tensors)))

    fit(tmp_path, monitor, epochs=50, callbacks=[Census()], limit_val_batches=0)
    # Once every key exists (epoch 33: relative_change needs 33 points), the number and bytes of live tensors stay
    # flat: nothing per step or per epoch is kept but the preallocated history buffer.
    first = max(monitor.defined_from().values())
    counts = [c for c, _ in snapshots[first:]]
    sizes = [b for _, b in snapshots[first:]]
    assert max(counts) == min(counts), snapshots
    assert max(sizes) == min(sizes), snapshots
    assert monitor.history.values.shape == (3, 50)


def test_history_file_is_saved_and_safe_to_load(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    fit(tmp_path, monitor, epochs=3, logger=CSVLogger(tmp_path))
    saved = load_history(monitor.history_path)
    assert saved["layer_names"] == ["net.fc1", "net.fc2", "net.head"]
    assert saved["values"].shape == (3, 3) and saved["epochs"] == [0, 1, 2]
    assert set(saved["metrics"]) == set(monitor.tracker.keys) and set(MEASURE_KEYS) <= set(monitor.tracker.keys)


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path: Path) -> None:
    full = DynamicsMonitor(points_per_epoch=1, verbose=False)
    fit(tmp_path / "full", full, epochs=22)

    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1, save_on_train_epoch_end=True
    )
    first = DynamicsMonitor(points_per_epoch=1, verbose=False)
    fit(tmp_path / "a", first, epochs=12, callbacks=[checkpoint], enable_checkpointing=True)
    resumed = DynamicsMonitor(points_per_epoch=1, verbose=False)
    fit(
        tmp_path / "b",
        resumed,
        epochs=22,
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
        enable_checkpointing=True,
    )
    torch.testing.assert_close(resumed.history.values, full.history.values)
    assert resumed.history.epochs == list(range(22))
    torch.testing.assert_close(
        torch.tensor(resumed.metrics["stability_volatility"]),
        torch.tensor(full.metrics["stability_volatility"]),
        equal_nan=True,
    )


def test_resume_with_other_layers_is_a_clear_error(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True)
    fit(
        tmp_path / "a",
        DynamicsMonitor(points_per_epoch=1, verbose=False),
        epochs=3,
        callbacks=[checkpoint],
        enable_checkpointing=True,
    )
    other = DynamicsMonitor(points_per_epoch=1, layers="net.fc1", verbose=False)
    other.state_key  # noqa: B018
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    (payload,) = [v for k, v in state.items() if k.startswith("DynamicsMonitor")]
    pl.seed_everything(0)
    t = trainer(tmp_path / "b", max_epochs=1, callbacks=[other])
    other.load_state_dict(payload)
    with pytest.raises(ValueError, match="other layers"):
        t.fit(TinyModule(), loaders()[0])
    assert forward_hook_count(t.lightning_module) == 0


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    t, _ = fit(tmp_path, monitor, epochs=6, precision="bf16-mixed")
    assert monitor.history.values.dtype == torch.float32
    assert monitor.history.values.isfinite().all()
    assert "dynamics/metastability" in t.callback_metrics


def test_module_reused_in_one_forward_counts_every_call(tmp_path: Path) -> None:
    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = torch.nn.Linear(8, 8)
            self.shared = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.shared(torch.tanh(self.shared(self.inp(x)))))

    monitor = DynamicsMonitor(points_per_epoch=1, layers=["net.shared"], verbose=False)
    fit(tmp_path, monitor, epochs=1, module=TinyModule(net=Twice()), limit_val_batches=0)
    assert monitor.tracker.accumulator is not None
    # 4 batches of 16 rows x 8 features, two calls each: the count of the last interval before reset.
    assert monitor.history.length == 1


def test_every_n_steps_sampling(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    monitor = DynamicsMonitor(every_n_steps=2, verbose=False)
    t, _ = fit(tmp_path, monitor, epochs=10, logger=CSVLogger(tmp_path), log_every_n_steps=2)
    assert monitor.history.length == 10 * 4 // 2
    assert monitor.history.steps == list(range(2, 41, 2))
    rows = list(csv.DictReader(open(Path(t.logger.log_dir) / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("dynamics/stability_volatility")]
    assert len(steps) == 20 - 20 + 1


def test_probe_mode_uses_a_fixed_batch_in_eval_mode(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, source="probe", verbose=False)
    _, module = fit(tmp_path, monitor, epochs=5)
    assert monitor.history.length == 5
    first = loaders()[0].dataset.tensors[0][:16]
    with torch.no_grad():
        expected = module.net.head(torch.tanh(module.net.fc2(torch.tanh(module.net.fc1(first)))))
    torch.testing.assert_close(monitor.history.values[2, -1], expected.square().mean().sqrt(), rtol=1e-5, atol=1e-6)
    assert forward_hook_count(module) == 0


def test_probe_batch_given_by_user(tmp_path: Path) -> None:
    probe = torch.randn(5, 8)
    monitor = DynamicsMonitor(points_per_epoch=1, source="probe", probe_batch=probe, layers=["net.fc1"], verbose=False)
    _, module = fit(tmp_path, monitor, epochs=2)
    with torch.no_grad():
        expected = module.net.fc1(probe).square().mean().sqrt()
    torch.testing.assert_close(monitor.history.values[0, -1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 8}, "`window`"),
        ({"summary": "max"}, "`summary`"),
        ({"source": "val"}, "`source`"),
        ({"every_n_steps": 0}, "`every_n_steps`"),
        ({"layers": []}, "`layers`"),
        ({"weights": (1.0,)}, "`weights`"),
        ({"detrend": "quadratic"}, "`detrend`"),
        ({"volatility_window": 1}, "`volatility_window`"),
        ({"history_window": 15}, "`history_window`"),
        ({"history_window": 20.5}, "`history_window`"),
    ],
)
def test_invalid_arguments_raise_at_construction(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DynamicsMonitor(points_per_epoch=1, **kwargs)


def test_unknown_layer_name_raises_at_fit_start(tmp_path: Path) -> None:
    t = trainer(
        tmp_path, max_epochs=1, callbacks=[DynamicsMonitor(points_per_epoch=1, layers=["net.fc3"], verbose=False)]
    )
    with pytest.raises(ValueError, match="Close matches"):
        t.fit(TinyModule(), loaders()[0])


def test_default_net_has_expected_layers(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    fit(tmp_path, monitor, epochs=1, module=TinyModule(net=TinyNet()))
    assert monitor.layer_names == ["net.fc1", "net.fc2", "net.head"]


def test_two_monitors_with_prefixes_log_side_by_side(tmp_path: Path) -> None:
    train = DynamicsMonitor(points_per_epoch=1, verbose=False)
    probe = DynamicsMonitor(points_per_epoch=1, source="probe", prefix="dynamics_probe", verbose=False)
    t, _ = fit(tmp_path, train, epochs=6, callbacks=[probe])
    assert "dynamics/metastability" in t.callback_metrics and "dynamics_probe/metastability" in t.callback_metrics
    assert train.state_key != probe.state_key
    assert probe.history_path.name == "dynamics_probe_history.pt" and probe.history_path.exists()
    with pytest.raises(ValueError, match="`prefix`"):
        DynamicsMonitor(points_per_epoch=1, prefix="a/b")
