import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_dynamics import DynamicsEarlyStopping, DynamicsMonitor, DynamicsStoppingReason
from lightning_dynamics.convergence import VolatilityDropRule, convergence_signal
from tests.helpers import ScriptedVolatility, TinyModule, loaders, trainer

NAN = float("nan")
# Volatility that appears at epoch 3, peaks at 0.4 (epoch 5), and drops below 0.25 x 0.4 = 0.1 from epoch 9.
SERIES = [NAN, NAN, NAN, 0.2, 0.3, 0.4, 0.35, 0.3, 0.2, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03]


def run(tmp_path: Path, stopper: DynamicsEarlyStopping, series: list[float] = SERIES, **kwargs) -> pl.Trainer:
    pl.seed_everything(0)
    callbacks = [stopper, ScriptedVolatility(series), *kwargs.pop("callbacks", [])]  # stopper first on purpose
    ckpt_path = kwargs.pop("ckpt_path", None)
    t = trainer(tmp_path, max_epochs=kwargs.pop("max_epochs", len(series)), callbacks=callbacks, **kwargs)
    t.fit(TinyModule(), loaders()[0], ckpt_path=ckpt_path)
    return t


def test_stops_at_the_expected_epoch_on_a_known_drop(tmp_path: Path) -> None:
    stopper = DynamicsEarlyStopping(patience=3, strict=False)
    t = run(tmp_path, stopper)
    assert stopper.stopped_epoch == 11  # 9, 10, 11: three consecutive checks at or below 0.1
    assert t.current_epoch == 12
    assert stopper.stopping_reason is DynamicsStoppingReason.VOLATILITY_DROP
    assert "0.4" in stopper.stopping_reason_message
    assert convergence_signal(SERIES, patience=3) == 11  # the analysis replay agrees with the callback


def test_never_stops_before_min_epochs(tmp_path: Path) -> None:
    stopper = DynamicsEarlyStopping(patience=1, min_epochs=13, strict=False)
    run(tmp_path, stopper)
    assert stopper.stopped_epoch == 13


def test_absolute_threshold_and_non_finite(tmp_path: Path) -> None:
    stopper = DynamicsEarlyStopping(stopping_threshold=0.25, strict=False)
    run(tmp_path, stopper)
    assert stopper.stopped_epoch == 3 and stopper.stopping_reason is DynamicsStoppingReason.STOPPING_THRESHOLD
    stopper = DynamicsEarlyStopping(strict=False)
    run(tmp_path / "inf", stopper, series=[0.2, 0.3, math.inf, 0.1, 0.1])
    assert stopper.stopped_epoch == 2 and stopper.stopping_reason is DynamicsStoppingReason.NON_FINITE_METRIC


def test_resume_keeps_patience_state(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True)
    first = DynamicsEarlyStopping(patience=3, strict=False)
    run(tmp_path / "a", first, max_epochs=11, callbacks=[checkpoint], enable_checkpointing=True)  # epochs 0..10
    assert first.rule.wait_count == 2 and first.rule.peak == pytest.approx(0.4) and first.stopped_epoch == 0
    resumed = DynamicsEarlyStopping(patience=3, strict=False)
    run(tmp_path / "b", resumed, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), enable_checkpointing=True)
    assert resumed.stopped_epoch == 11  # the third check, the first after resuming


def test_strict_error_without_a_monitor(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no DynamicsMonitor"):
        run(tmp_path, DynamicsEarlyStopping())


def test_strict_with_a_monitor_waits_for_the_key(tmp_path: Path) -> None:
    stopper = DynamicsEarlyStopping()
    pl.seed_everything(0)
    t = trainer(tmp_path, max_epochs=8, callbacks=[stopper, DynamicsMonitor(verbose=False)])
    t.fit(TinyModule(), loaders()[0])  # no key before epoch 19: no error, no stop
    assert stopper.stopped_epoch == 0 and t.current_epoch == 8


def test_skipped_during_sanity_check(tmp_path: Path) -> None:
    stopper = DynamicsEarlyStopping(stopping_threshold=10.0, strict=False)
    pl.seed_everything(0)
    t = trainer(tmp_path, max_epochs=2, callbacks=[stopper], num_sanity_val_steps=2)
    train, val = loaders()
    t.fit(TinyModule(), train, val)
    assert stopper.stopped_epoch == 0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="`ratio`"):
        DynamicsEarlyStopping(ratio=1.5)
    with pytest.raises(ValueError, match="`patience`"):
        VolatilityDropRule(patience=0)
    with pytest.raises(ValueError, match="`min_epochs`"):
        DynamicsEarlyStopping(min_epochs=-1)
