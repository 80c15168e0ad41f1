"""DiagnosisPruning in an Optuna study: a hopeless trial is pruned with its reason stored, a healthy one completes,
the study's pruner acts through `monitor=`, bad arguments are refused, and the sweep benchmark runs (smoke)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("optuna")
pytest.importorskip("optuna_integration")

import optuna

from benchmarks.kit import quiet_trainer
from benchmarks.kit.data import _digits_split
from benchmarks.sweep_pruning import COLUMNS, EpochCount, SweepModule, build, compare, markdown, run_sweep
from lightning_dynamics import DynamicsDiagnosis, DynamicsMonitor
from lightning_dynamics.callbacks.pruning import HOPELESS_KINDS, DiagnosisPruning

pytestmark = pytest.mark.integration

EPOCHS = 3


def _monitor() -> DynamicsMonitor:
    return DynamicsMonitor(
        points_per_epoch=4,
        null_surrogates=None,
        compute_phase_integration=False,
        save_history=False,
        verbose=False,
        log_dashboard=False,
    )


def _fit(trial: Any, lr: float, gain: float = 1.0, epochs: int = EPOCHS, **pruning: Any) -> tuple[float, int]:
    """The digits MLP under a monitor, a diagnosis and DiagnosisPruning: (final val_acc, epochs begun)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_x, train_y, val_x, val_y = _digits_split(0.25, 0)
    train = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(val_x, val_y), batch_size=256)
    count = EpochCount()
    callbacks = [count, _monitor(), DynamicsDiagnosis(), DiagnosisPruning(trial, **pruning)]
    trainer = quiet_trainer(max_epochs=epochs, accelerator="cpu", callbacks=callbacks, limit_val_batches=None)
    trial.set_user_attr("epochs", 0)
    try:
        trainer.fit(SweepModule(build("mlp", gain), lr, 0.0), train, val)
    finally:
        trial.set_user_attr("epochs", count.epochs)
    return float(trainer.callback_metrics["val_acc"]), count.epochs


def _study(pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", pruner=pruner or optuna.pruners.NopPruner())


def test_a_hopeless_trial_is_pruned_with_its_reason_stored() -> None:
    study = _study()
    study.optimize(lambda trial: _fit(trial, lr=50.0)[0], n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    reason = trial.user_attrs["pruned_by"]
    assert reason["by"] == "diagnosis" and reason["kind"] in ("nonfinite", "lr_too_high"), reason
    assert reason["epoch"] == 0 and reason["evidence"] and reason["action"]
    assert trial.user_attrs["epochs"] == 1  # pruned at its first epoch's end, not trained to EPOCHS


def test_a_healthy_trial_completes_unpruned() -> None:
    study = _study()
    study.optimize(lambda trial: _fit(trial, lr=0.05)[0], n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
    assert "pruned_by" not in trial.user_attrs
    assert trial.user_attrs["epochs"] == EPOCHS
    assert trial.value is not None and trial.value > 0.5


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_monitor_reports_the_objective_and_the_study_pruner_prunes_on_it() -> None:
    study = _study(_AlwaysPrune())
    study.optimize(lambda trial: _fit(trial, lr=0.05, monitor="val_acc")[0], n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    reason = trial.user_attrs["pruned_by"]
    assert reason["by"] == "pruner" and reason["pruner"] == "_AlwaysPrune" and reason["monitor"] == "val_acc"
    assert list(trial.intermediate_values) == [0] and 0.0 < trial.intermediate_values[0] <= 1.0


def test_kinds_choose_what_prunes() -> None:
    # lr=50 is named (nonfinite or lr_too_high), but only `wrong_output` prunes here: the trial runs to its end.
    study = _study()
    study.optimize(lambda trial: _fit(trial, lr=50.0, epochs=2, kinds=["wrong_output"])[0], n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert study.trials[0].user_attrs["epochs"] == 2


def test_check_pruned_raises_after_a_prune_and_is_quiet_otherwise() -> None:
    study = _study()
    trial = study.ask()
    pruning = DiagnosisPruning(trial)
    pruning.check_pruned()  # not pruned: nothing
    trial.set_user_attr("pruned_by", {"by": "diagnosis", "kind": "nonfinite"})  # as rank 0 writes it under DDP
    with pytest.raises(optuna.TrialPruned, match="nonfinite"):
        pruning.check_pruned()


def test_bad_arguments_are_refused_with_what_is_allowed() -> None:
    trial = _study().ask()
    with pytest.raises(TypeError, match=r"optuna\.trial\.Trial"):
        DiagnosisPruning(optuna.trial.FixedTrial({"lr": 0.1}))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr_way_too_high"):
        DiagnosisPruning(trial, kinds=["nonfinite", "lr_way_too_high"])
    with pytest.raises(TypeError, match=r"\['nonfinite'\]"):
        DiagnosisPruning(trial, kinds="nonfinite")
    with pytest.raises(ValueError, match="nothing would prune"):
        DiagnosisPruning(trial, kinds=[])
    with pytest.raises(ValueError, match="`monitor`"):
        DiagnosisPruning(trial, monitor="")
    with pytest.raises(TypeError, match="DynamicsDiagnosis"):
        DiagnosisPruning(trial, diagnosis=_monitor())  # type: ignore[arg-type]
    assert DiagnosisPruning(trial).kinds == HOPELESS_KINDS
    assert DiagnosisPruning(trial, kinds=[], monitor="val_acc").kinds == ()


@pytest.mark.parametrize("case", ["none", "two", "not_in_trainer"])
def test_fit_refuses_a_missing_or_ambiguous_diagnosis(case: str) -> None:
    trial = _study().ask()
    if case == "not_in_trainer":
        pruning = DiagnosisPruning(trial, diagnosis=DynamicsDiagnosis())
        callbacks: list[Any] = [DynamicsDiagnosis(), pruning]
        match = "not in Trainer"
    else:
        pruning = DiagnosisPruning(trial)
        callbacks = [pruning] if case == "none" else [DynamicsDiagnosis(), DynamicsDiagnosis(prefix="other"), pruning]
        match = f"found {0 if case == 'none' else 2}"
    x, y = _digits_split(0.25, 0)[:2]
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", callbacks=callbacks, limit_train_batches=2)
    with pytest.raises(ValueError, match=match):
        trainer.fit(SweepModule(build("mlp", 1.0), 0.05, 0.0), DataLoader(TensorDataset(x, y), batch_size=64))


def test_the_sweep_benchmark_runs_and_reports_its_columns() -> None:
    # trial 1 diverges (lr 8): the diagnosis prunes it at its first epoch; the others complete.
    configs = [
        {"lr": 0.05, "gain": 1.0, "weight_decay": 1e-4},
        {"lr": 8.0, "gain": 1.0, "weight_decay": 1e-4},
        {"lr": 0.1, "gain": 0.5, "weight_decay": 1e-5},
    ]
    rows = [run_sweep("mlp", strategy, configs, epochs=2) for strategy in ("full", "median", "diagnosis", "both")]
    verdict = compare(rows)
    full, _, diagnosis, _ = rows
    assert full["epochs"] == 6 and full["pruned"] == 0
    assert diagnosis["by diagnosis"] == 1 and diagnosis["epochs"] == 5
    pruned = diagnosis["per_trial"][1]
    assert pruned["state"] == "pruned" and pruned["pruned_by"]["kind"] in HOPELESS_KINDS
    assert diagnosis["best val_acc"] == full["best val_acc"]  # the same trial, same seed, same weights
    assert verdict["hopeless"] == [1]
    page = markdown(rows, [verdict], "smoke")
    header = next(line for line in page.splitlines() if line.startswith("| arch"))
    assert [c.strip() for c in header.strip("|").split("|")] == [*COLUMNS, "load", "goal"]
    assert "pruned e0 (" in page


def test_the_package_imports_without_optuna_and_says_what_to_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['optuna'] = None\n"  # as if Optuna were not installed
        "import lightning_dynamics, lightning_dynamics.callbacks\n"
        "try:\n    lightning_dynamics.DiagnosisPruning\nexcept ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "pip install 'lightning-dynamics[sweep]'" in result.stdout
