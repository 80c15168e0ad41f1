import logging
import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamics import DynamicsEarlyStopping, DynamicsModelCheckpoint, DynamicsMonitor, DynamicsStoppingReason
from lightning_dynamics.decisions.stopping import RelativeChangeRule, VolatilityDropRule, convergence_signal
from tests.helpers import ScriptedVolatility, TinyModule, loaders, trainer

NAN = float("nan")
# Volatility that appears at epoch 3, peaks at 0.4 (epoch 5), and drops below 0.25 x 0.4 = 0.1 from epoch 9.
SERIES = [NAN, NAN, NAN, 0.2, 0.3, 0.4, 0.35, 0.3, 0.2, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03]
LEGACY = {"monitor": "stability_volatility", "strict": False}


def run(tmp_path: Path, stopper: DynamicsEarlyStopping, series: list[float] = SERIES, **kwargs) -> pl.Trainer:
    pl.seed_everything(0)
    callbacks = [stopper, ScriptedVolatility(series), *kwargs.pop("callbacks", [])]  # stopper first on purpose
    ckpt_path = kwargs.pop("ckpt_path", None)
    t = trainer(tmp_path, max_epochs=kwargs.pop("max_epochs", len(series)), callbacks=callbacks, **kwargs)
    t.fit(TinyModule(), loaders()[0], ckpt_path=ckpt_path)
    return t


# ---------------------------------------------------------------- the legacy volatility rule (monitor=<key>)


def test_legacy_rule_stops_at_the_expected_epoch_on_a_known_drop(tmp_path: Path) -> None:
    stopper = DynamicsEarlyStopping(patience=3, **LEGACY)
    assert isinstance(stopper.rule, VolatilityDropRule)
    t = run(tmp_path, stopper)
    assert stopper.stopped_epoch == 11  # 9, 10, 11: three consecutive checks at or below 0.1
    assert t.current_epoch == 12
    assert stopper.stopping_reason is DynamicsStoppingReason.VOLATILITY_DROP
    assert "0.4" in stopper.stopping_reason_message
    assert convergence_signal(SERIES, patience=3) == 11  # the analysis replay agrees with the callback


def test_legacy_rule_min_epochs_threshold_and_non_finite(tmp_path: Path) -> None:
    stopper = DynamicsEarlyStopping(patience=1, min_epochs=13, **LEGACY)
    run(tmp_path, stopper)
    assert stopper.stopped_epoch == 13
    stopper = DynamicsEarlyStopping(stopping_threshold=0.25, **LEGACY)
    run(tmp_path / "t", stopper)
    assert stopper.stopped_epoch == 3 and stopper.stopping_reason is DynamicsStoppingReason.STOPPING_THRESHOLD
    stopper = DynamicsEarlyStopping(**LEGACY)
    run(tmp_path / "inf", stopper, series=[0.2, 0.3, math.inf, 0.1, 0.1])
    assert stopper.stopped_epoch == 2 and stopper.stopping_reason is DynamicsStoppingReason.NON_FINITE_METRIC


def test_legacy_rule_resume_keeps_patience_state(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True)
    first = DynamicsEarlyStopping(patience=3, **LEGACY)
    run(tmp_path / "a", first, max_epochs=11, callbacks=[checkpoint], enable_checkpointing=True)  # epochs 0..10
    assert first.rule.wait_count == 2 and first.rule.peak == pytest.approx(0.4) and first.stopped_epoch == 0
    resumed = DynamicsEarlyStopping(patience=3, **LEGACY)
    run(tmp_path / "b", resumed, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), enable_checkpointing=True)
    assert resumed.stopped_epoch == 11  # the third check, the first after resuming


# ---------------------------------------------------------------- the default rule, through Lightning


def test_strict_error_without_a_monitor(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="there is no DynamicsMonitor"):
        run(tmp_path, DynamicsEarlyStopping())


def test_public_surface_only() -> None:
    """A plain Callback: no Lightning EarlyStopping base, no private method of Lightning overridden."""
    from lightning.pytorch.callbacks import EarlyStopping

    assert not isinstance(DynamicsEarlyStopping(), EarlyStopping)
    own = {name for name in vars(DynamicsEarlyStopping) if name.startswith("_") and not name.startswith("__")}
    assert all(not hasattr(pl.Callback, name) for name in own)
    for cls, base in ((DynamicsModelCheckpoint, ModelCheckpoint),):
        private = {n for n in vars(cls) if n.startswith("_") and not n.startswith("__") and hasattr(base, n)}
        assert not private, private
    assert (
        DynamicsEarlyStopping().state_key
        == "DynamicsEarlyStopping{'monitor': 'dynamics/relative_change', 'ratio': 0.25}"
    )


# ---------------------------------------------------------------- `rule` picks the rule; `monitor` names a key


def test_rule_argument_picks_the_rule_and_monitor_names_the_key() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        default = DynamicsEarlyStopping()
        volatility = DynamicsEarlyStopping(rule="volatility")
        keyed = DynamicsEarlyStopping(rule="volatility", monitor="probe/stability_index", strict=False)
        probe = DynamicsEarlyStopping(rule="relative_change", prefix="probe")
    assert isinstance(default.rule, RelativeChangeRule) and default.uses_history
    assert isinstance(volatility.rule, VolatilityDropRule) and volatility.monitor == "dynamics/stability_volatility"
    assert isinstance(keyed.rule, VolatilityDropRule) and (keyed.monitor, keyed.prefix) == (
        "probe/stability_index",
        "probe",
    )
    assert isinstance(probe.rule, RelativeChangeRule) and probe.prefix == "probe"
    # The state keys are those of the old spelling: checkpoints written before `rule` existed still restore.
    assert volatility.state_key == "DynamicsEarlyStopping{'monitor': 'dynamics/stability_volatility', 'ratio': 0.25}"
    assert default.state_key == "DynamicsEarlyStopping{'monitor': 'dynamics/relative_change', 'ratio': 0.25}"
    with pytest.raises(ValueError, match=r"`rule` must be one of \('relative_change', 'volatility'\), got 'volatile'"):
        DynamicsEarlyStopping(rule="volatile")


def test_an_explicit_rule_is_never_overridden_by_monitor() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit rule is the new spelling: no deprecation
        same = DynamicsEarlyStopping(rule="relative_change", monitor="probe/relative_change")
    assert isinstance(same.rule, RelativeChangeRule) and same.prefix == "probe"
    with pytest.raises(
        ValueError, match=r"`monitor` names the key the 'volatility' rule reads.*got monitor='val_loss'"
    ):
        DynamicsEarlyStopping(rule="relative_change", monitor="val_loss")


def test_rule_argument_drives_the_volatility_rule_in_a_check() -> None:
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    stopper = DynamicsEarlyStopping(rule="volatility", stopping_threshold=0.5, strict=False)
    t = fake_trainer(other_rank_says_stop=False, **{"dynamics/stability_volatility": 0.4})
    stopper.on_train_epoch_end(t, module)
    assert t.should_stop and stopper.stopping_reason is DynamicsStoppingReason.STOPPING_THRESHOLD


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"monitor": "relative_change"}, {"rule": "relative_change"}),
        ({"monitor": "probe/relative_change"}, {"rule": "relative_change", "prefix": "probe"}),
        ({"monitor": "stability_volatility"}, {"rule": "volatility", "monitor": "stability_volatility"}),
        ({"monitor": "probe/stability_index"}, {"rule": "volatility", "monitor": "probe/stability_index"}),
    ],
)
def test_rule_chosen_by_monitor_is_deprecated_and_still_works(old: dict, new: dict) -> None:
    spelled = ", ".join(f"{key}={value!r}" for key, value in new.items())
    with pytest.warns(DeprecationWarning, match=re.escape(f"Write DynamicsEarlyStopping({spelled})")):
        stopper = DynamicsEarlyStopping(**old)
    current = DynamicsEarlyStopping(**new)
    assert type(stopper.rule) is type(current.rule)
    assert (stopper.monitor, stopper.prefix, stopper.state_key) == (current.monitor, current.prefix, current.state_key)


def _digits_loaders(n_val: int = 360) -> tuple[DataLoader, DataLoader]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    train = TensorDataset(x[n_val:], y[n_val:])
    return DataLoader(train, batch_size=64, shuffle=True), DataLoader(TensorDataset(x[:n_val], y[:n_val]), 360)


class DigitsMLP(TinyModule):
    def __init__(self) -> None:
        net = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
        super().__init__(net=net, lr=0.02)


@pytest.mark.slow  # 30-120 s on 2 shared cores: the monitor's measures at every epoch dominate
@pytest.mark.integration
def test_stops_a_plateauing_digits_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The MLP of benchmarks/early_stopping.py on digits settles within ~15 epochs (its accuracy within about 2
    points of its best); the relative-change rule without its drift guard stops it there, and says once why and
    when. The default rule, guard included, on MLPs of this kind: benchmarks/early_stopping_calibration.md."""
    pl.seed_everything(0)
    stopper = DynamicsEarlyStopping()
    stopper.rule = RelativeChangeRule(drift_guard=False)
    monitor = DynamicsMonitor(points_per_epoch=4, verbose=False, save_history=False, compute_phase_integration=False)
    t = trainer(tmp_path, max_epochs=40, callbacks=[stopper, monitor])  # stopper first: it moves itself after
    train, val = _digits_loaders()
    with caplog.at_level(logging.INFO):
        t.fit(DigitsMLP(), train, val)
    assert 8 <= stopper.stopped_epoch <= 30 and t.current_epoch == stopper.stopped_epoch + 1
    assert stopper.stopping_reason is DynamicsStoppingReason.RELATIVE_CHANGE
    assert isinstance(stopper.rule, RelativeChangeRule) and stopper.rule.statistic <= 0.25
    assert float(t.callback_metrics["dynamics/stopping_relative_change"]) == pytest.approx(stopper.rule.statistic)
    said = [r.getMessage() for r in caplog.records if "DynamicsEarlyStopping stopped training" in r.getMessage()]
    assert len(said) == 1 and f"at epoch {stopper.stopped_epoch}" in said[0]
    assert monitor.tracker.logged["dynamics/stopped_epoch"][-1] == stopper.stopped_epoch  # for the report


class RandomWalkWeights(TinyModule):
    """Never converges: fixed inputs, and after every batch each weight takes a Gaussian step (no learning)."""

    def __init__(self, sigma: float = 0.05) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.sigma = sigma
        self.scale = {name: float(p.detach().square().mean().sqrt()) for name, p in self.named_parameters()}

    def training_step(self, batch, batch_idx):
        x, _ = batch
        self(x)
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.add_(self.sigma * self.scale[name] * torch.randn_like(p))
        self.optimizers().step()  # no gradients: changes nothing, but counts the step (every_n_steps sampling)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("sampling", [{"points_per_epoch": 1}, {"every_n_steps": 1}])
def test_does_not_stop_a_random_walk_weights_run(tmp_path: Path, sampling: dict) -> None:
    pl.seed_everything(0)
    stopper = DynamicsEarlyStopping(verbose=True)
    monitor = DynamicsMonitor(**sampling, verbose=False, save_history=False, compute_phase_integration=False)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    fixed = DataLoader(TensorDataset(x.repeat(4, 1), torch.zeros(64, dtype=torch.long)), batch_size=16)
    t = trainer(tmp_path, max_epochs=40, callbacks=[monitor, stopper])
    t.fit(RandomWalkWeights(), fixed)
    assert stopper.stopped_epoch == 0 and t.current_epoch == 40 and not t.should_stop
    assert monitor.tracker.n_samples == (40 if "points_per_epoch" in sampling else 160)
    assert math.isfinite(stopper.rule.statistic) and stopper.rule.statistic > 0.25


@pytest.mark.integration
def test_verbose_says_once_while_the_statistic_is_undefined(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before the rule has 2 x window_epochs + 1 epochs, every check would print "nan (p = nan)": said once instead."""
    stopper = DynamicsEarlyStopping(verbose=True, window_epochs=2)  # defined from epoch 4 on
    monitor = DynamicsMonitor(points_per_epoch=2, null_surrogates=None, verbose=False, save_history=False)
    t = trainer(tmp_path, max_epochs=7, callbacks=[monitor, stopper])
    with caplog.at_level(logging.INFO):
        t.fit(TinyModule(), loaders()[0])
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DynamicsEarlyStopping:")]
    assert not any("nan" in message for message in said), said
    assert sum("needs 5 epochs" in message for message in said) == 1
    assert sum("median relative change" in message and "checks at or below" in message for message in said) >= 2


# ---------------------------------------------------------------- DDP agreement, state, arguments (no Trainer)


def fake_trainer(other_rank_says_stop: bool, **metrics: float) -> SimpleNamespace:
    def reduce_boolean_decision(decision: bool, all: bool = True) -> bool:
        assert all is False  # one process that says stop stops every process
        return decision or other_rank_says_stop

    return SimpleNamespace(
        sanity_checking=False,
        current_epoch=7,
        should_stop=False,
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        strategy=SimpleNamespace(reduce_boolean_decision=reduce_boolean_decision),
    )


def test_ddp_agreement_through_reduce_boolean_decision() -> None:
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    quiet = DynamicsEarlyStopping(**LEGACY)
    t = fake_trainer(other_rank_says_stop=True, **{"dynamics/stability_volatility": 0.4})
    quiet.on_train_epoch_end(t, module)  # this rank's rule says go on; another rank's says stop
    assert t.should_stop and quiet.stopped_epoch == 7 and "another process" in quiet.stopping_reason_message
    keen = DynamicsEarlyStopping(stopping_threshold=0.5, **LEGACY)
    t = fake_trainer(other_rank_says_stop=False, **{"dynamics/stability_volatility": 0.4})
    keen.on_train_epoch_end(t, module)
    assert t.should_stop and keen.stopping_reason is DynamicsStoppingReason.STOPPING_THRESHOLD
    t = fake_trainer(other_rank_says_stop=False, **{"dynamics/stability_volatility": 0.4})
    DynamicsEarlyStopping(**LEGACY).on_train_epoch_end(t, module)
    assert not t.should_stop


def test_state_round_trip_and_checked_fields() -> None:
    stopper = DynamicsEarlyStopping()
    stopper.rule.wait_count, stopper.stopped_epoch, stopper.waited_checks = 2, 0, 3
    state = stopper.state_dict()
    restored = DynamicsEarlyStopping()
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    bad = [
        ({**state, "stopped_epoch": -1}, "`stopped_epoch`"),
        ({**state, "seen_samples": 1.5}, "`seen_samples`"),
        ({**state, "waited_checks": None}, "`waited_checks`"),
        ({**state, "stopping_reason": 99}, "`stopping_reason` must be one of"),
        ({**state, "stopping_reason_message": 3}, "`stopping_reason_message`"),
        ({**state, "rule": {"peak": 0.1, "wait_count": 1}}, "lacks"),  # a volatility-rule state for this rule
        ({k: v for k, v in state.items() if k != "rule"}, "lacks"),
        ({**state, "rule": [1]}, "`rule` must be a dict"),
    ]
    for broken, match in bad:
        with pytest.raises(ValueError, match=match):
            DynamicsEarlyStopping().load_state_dict(broken)
    with pytest.raises(ValueError, match="keys peak, wait_count"):
        DynamicsEarlyStopping(**LEGACY).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stopping_threshold": math.inf}, "`stopping_threshold` must be a finite number, got inf"),
        ({"stopping_threshold": "x"}, "`stopping_threshold` must be a finite number, got 'x'"),
        ({"check_finite": math.nan}, "`check_finite` must be True or False, got nan"),
        ({"patience": True}, "`patience` must be an integer >= 1, got True"),
        ({"patience": math.nan}, "`patience` must be an integer >= 1, got nan"),
        ({"patience": math.inf}, "`patience` must be an integer >= 1, got inf"),
        ({"ratio": "x"}, "`ratio` must be a finite number, got 'x'"),
        ({"ratio": None}, "`ratio` must be a finite number, got None"),
        ({"ratio": 1.5}, r"`ratio` must be a number in \(0, 1\), got 1.5"),
        ({"min_epochs": None}, "`min_epochs` must be an integer >= 0, got None"),
        ({"min_epochs": -1}, "`min_epochs`"),
        ({"alpha": 2}, "`alpha`"),
        ({"window_epochs": 0}, "`window_epochs`"),
        ({"strict": "yes"}, "`strict` must be True or False, got 'yes'"),
        ({"verbose": None}, "`verbose` must be True or False"),
        ({"monitor": ""}, "`monitor`"),
        ({"prefix": "a/b"}, "`prefix`"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    for extra in ({}, {"monitor": "stability_volatility"}):  # the same checks whichever rule runs
        with pytest.raises(ValueError, match=match):
            DynamicsEarlyStopping(**{**extra, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"save_top_k": "x"}, "`save_top_k` must be an integer >= -1, got 'x'"),
        ({"save_top_k": -2}, "`save_top_k`"),
        ({"mode": "up"}, "`mode` must be one of"),
        ({"strict": 1}, "`strict` must be True or False"),
        ({"save_last": "yes"}, "`save_last`"),
        ({"every_n_epochs": -1}, "`every_n_epochs`"),
    ],
)
def test_checkpoint_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DynamicsModelCheckpoint(**kwargs)


def test_checkpoint_never_ranks_an_undefined_value() -> None:
    checkpoint = DynamicsModelCheckpoint(save_top_k=-1)
    t = fake_trainer(False)
    assert not checkpoint.check_monitor_top_k(t, None)  # type: ignore[arg-type]
    assert not checkpoint.check_monitor_top_k(t, torch.tensor(NAN))  # type: ignore[arg-type]
    assert checkpoint.check_monitor_top_k(t, torch.tensor(0.3))  # type: ignore[arg-type]


def test_reads_the_trainers_schedulers_over_the_rest_of_the_budget() -> None:
    """Thin glue: trainer.lr_scheduler_configs -> learning_rate_outlook with the budget left in the scheduler's unit."""
    from types import SimpleNamespace

    import torch

    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    milestones = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30], gamma=0.1)
    for _ in range(20):  # the end of epoch 20: the scheduler has stepped 20 times
        opt.step()
        milestones.step()
    config = SimpleNamespace(scheduler=milestones, interval="epoch", frequency=1)
    trainer = SimpleNamespace(lr_scheduler_configs=[config], max_epochs=40, current_epoch=20, global_step=0)
    outlook = DynamicsEarlyStopping._lr_outlook(trainer)  # type: ignore[arg-type]
    assert outlook is not None and outlook.lowers and outlook.steps_until == 10
    trainer.max_epochs = 25  # the milestone lies beyond the budget
    assert not DynamicsEarlyStopping._lr_outlook(trainer).lowers  # type: ignore[arg-type,union-attr]
    per_step = SimpleNamespace(scheduler=milestones, interval="step", frequency=1)
    trainer = SimpleNamespace(lr_scheduler_configs=[per_step], estimated_stepping_batches=100, global_step=95)
    assert not DynamicsEarlyStopping._lr_outlook(trainer).lowers  # type: ignore[arg-type,union-attr]
    assert DynamicsEarlyStopping._lr_outlook(SimpleNamespace(lr_scheduler_configs=[])) is None  # type: ignore[arg-type]
