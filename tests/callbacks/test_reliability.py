"""A monitor never breaks the training it watches and never reports a number it does not have."""

import logging
import math
import pickle
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.capture import load_history, save_history
from tests.helpers import TinyModule, forward_hook_count, loaders, trainer


class Troubled(nn.Module):
    """A network with the awkward layers users have: side branches, conditional and frozen parts."""

    def __init__(self, nan_epoch: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)
        self.side = nn.Linear(16, 4)  # its output feeds nothing: NaN there cannot hurt training
        self.sometimes = nn.Linear(16, 16)  # called on even epochs only
        self.frozen = nn.Linear(16, 2)  # zero weights, fixed bias: a constant output
        nn.init.zeros_(self.frozen.weight)
        self.frozen.requires_grad_(False)
        self.labels = nn.Identity()  # returns an integer tensor
        self.empty = nn.Identity()  # returns an empty tensor
        self.nan_epoch = nan_epoch
        self.epoch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc1(x))
        side = self.side(h)
        if self.epoch == self.nan_epoch:
            side.fill_(float("nan"))  # in place, so the hook sees it... after the hook: see NaNSide
        if self.epoch % 2 == 0:
            h = h + 0.1 * torch.tanh(self.sometimes(h))
        self.frozen(h)
        self.labels(h.argmax(-1))
        self.empty(h[:0])
        return self.fc2(h)


class EpochSetter(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        pl_module.net.epoch = trainer.current_epoch


def _nan_output_hook(net: Troubled):
    def hook(module, args, output):
        return torch.full_like(output, float("nan")) if net.epoch == net.nan_epoch else output

    return hook


def test_nonfinite_layers_skipped_intervals_constant_and_integer_outputs(tmp_path: Path) -> None:
    net = Troubled(nan_epoch=3)
    net.side.register_forward_hook(_nan_output_hook(net))  # registered first: the monitor sees NaN that epoch
    monitor = DynamicsMonitor(points_per_epoch=1, layers="all", max_layers=None, verbose=False)
    pl.seed_everything(0)
    t = trainer(tmp_path, max_epochs=22, callbacks=[EpochSetter(), monitor])
    with pytest.warns(UserWarning) as record:
        t.fit(TinyModule(net=net), loaders()[0])
    names = monitor.layer_names
    values = monitor.history.values
    side, sometimes, frozen = names.index("net.side"), names.index("net.sometimes"), names.index("net.frozen")
    # The NaN epoch is a missing point for that layer only; later points are finite again.
    assert values[side, 3].isnan() and values[side, 4:].isfinite().all()
    assert monitor.metrics["nonfinite"][3] == 1.0  # side only: layers not called are missing, not non-finite
    assert monitor.metrics["nonfinite"][4] == 0.0
    # Odd epochs: 'sometimes' was never called; those points are missing, even ones are real.
    assert values[sometimes, 1::2].isnan().all() and values[sometimes, 0::2].isfinite().all()
    # The measures are computed over what is valid and say what they left out.
    assert all(math.isfinite(v) for v in monitor.metrics["metastability"][5:])
    assert math.isfinite(monitor.metrics["stability_volatility"][-1])
    assert monitor.metrics["n_excluded"][-1] >= 1  # frozen (constant); sometimes (50% missing); labels/empty
    assert "net.labels" in names and values[names.index("net.labels")].isnan().all()
    messages = [str(w.message) for w in record]
    for layer, fragment in [
        ("net.side", "NaN/Inf"),
        ("net.sometimes", "were not called"),
        ("net.labels", "no floating-point tensor"),
        ("net.frozen", "excluded"),
    ]:
        hits = [m for m in messages if layer + "'" in m and fragment in m]
        assert len(hits) == 1, (layer, messages)  # once, naming the layer
    assert values[frozen].isfinite().all()


def test_too_short_run_logs_nothing_fake_and_says_how_many_points(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1)
    pl.seed_everything(0)
    t = trainer(tmp_path, max_epochs=3, callbacks=[monitor])
    with caplog.at_level(logging.INFO):
        t.fit(TinyModule(), loaders()[0])
    logged = {k for k in t.callback_metrics if k.startswith("dynamics/")}
    assert logged == {"dynamics/nonfinite"}  # a count of the data, not a measure
    needs = [r.message for r in caplog.records if "keys appear after" in r.message]  # the one fit-start line
    most = max(monitor.tracker.defined_from().values())  # relative_change: 2 * window + 1
    assert len(needs) == 1 and f"keys appear after 1-{most} points" in needs[0] and most == 33


def test_empty_layer_selection_is_an_error_at_setup(tmp_path: Path) -> None:
    t = trainer(
        tmp_path, max_epochs=1, callbacks=[DynamicsMonitor(points_per_epoch=1, layers=lambda name, module: False)]
    )
    with pytest.raises(ValueError, match="selects no module"):
        t.fit(TinyModule(), loaders()[0])


def test_checkpoint_from_an_older_format_is_a_clear_error(tmp_path: Path) -> None:
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    monitor.load_state_dict({"version": 0, "history": {}})
    t = trainer(tmp_path, max_epochs=1, callbacks=[monitor])
    module = TinyModule()
    with pytest.raises(ValueError, match="version 0"):
        t.fit(module, loaders()[0])
    assert forward_hook_count(module) == 0


def test_exception_in_validation_removes_hooks_saves_history_and_is_not_masked(tmp_path: Path) -> None:
    class FailingValidation(TinyModule):
        def validation_step(self, batch, batch_idx):
            if self.current_epoch == 2:
                raise KeyError("user bug in validation")
            return super().validation_step(batch, batch_idx)

    module = FailingValidation()
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    train, val = loaders()
    t = trainer(tmp_path, max_epochs=5, callbacks=[monitor])
    with pytest.raises(KeyError, match="user bug in validation"):
        t.fit(module, train, val)
    assert forward_hook_count(module) == 0
    assert load_history(monitor.history_path)["values"].shape == (3, 2)


def test_failing_history_save_does_not_mask_the_user_exception(tmp_path: Path) -> None:
    module = TinyModule(fail_at_step=5)
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")

    class Redirect(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            monitor.history_path = blocker / "history.pt"  # cannot be created: its parent is a file

    t = trainer(tmp_path, max_epochs=3, callbacks=[monitor, Redirect()])
    with (
        pytest.warns(UserWarning, match="could not save the dynamics history"),
        pytest.raises(RuntimeError, match="boom"),
    ):
        t.fit(module, loaders()[0])
    assert forward_hook_count(module) == 0


def test_failure_inside_the_monitor_never_stops_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_dynamics.measures.context as context_module

    def broken(*args, **kwargs):
        raise FloatingPointError("simulated bug in a measure")

    monkeypatch.setattr(context_module, "dynamics_measures", broken)
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    t = trainer(tmp_path, max_epochs=6, callbacks=[monitor])
    with pytest.warns(UserWarning, match="simulated bug in a measure"):
        t.fit(TinyModule(), loaders()[0])
    assert t.current_epoch == 6 and monitor.history.length == 6
    assert all(math.isnan(v) for v in monitor.metrics["metastability"])


def test_history_loader_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("code ran while loading",))

    path = tmp_path / "evil.pt"
    torch.save({"values": torch.zeros(1, 1), "payload": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt") as error:
        load_history(path)
    assert isinstance(error.value.__cause__, pickle.UnpicklingError)
    state = {
        "format_version": 2,
        "values": torch.ones(2, 3),
        "layer_names": ["a", "b"],
        "summary": "rms",
        "epochs": [0, 1, 2],
        "steps": [1, 2, 3],
    }
    good = save_history(state, tmp_path / "ok.pt")
    assert load_history(good)["layer_names"] == ["a", "b"]


def test_a_layer_whose_capture_fails_is_disabled_named_and_missing_from_then_on() -> None:
    from lightning_dynamics import DynamicsTracker

    class TurnsSparse(nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x.to_sparse() if self.calls == 3 else x  # one bad output, at the third point

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), TurnsSparse(), nn.Linear(8, 2))
    warnings_seen: list[str] = []
    tracker = DynamicsTracker(layers=["0", "2", "3", "4"], warn=warnings_seen.append).attach(model)
    with pytest.warns(UserWarning, match=r"layer '3' \(TurnsSparse\).*sparse"):
        for point in range(6):
            model(torch.randn(16, 4, generator=torch.Generator().manual_seed(point))).to_dense()
            tracker.sample(epoch=point, step=point)
    values = tracker.history.values
    bad = tracker.layer_names.index("3")
    assert values[bad, :2].isfinite().all() and values[bad, 2:].isnan().all()  # disabled: missing from then on
    assert values[[i for i in range(4) if i != bad]].isfinite().all()  # the other layers are untouched
    disabled = [m for m in warnings_seen if "were disabled after their capture failed" in m]
    assert len(disabled) == 1 and "'3'" in disabled[0]  # said once, naming the layer
    assert not any("were not called" in m and "'3'" in m for m in warnings_seen)
