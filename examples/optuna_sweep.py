"""An Optuna sweep that prunes hopeless trials on the diagnosis, and the rest on the median of the objective.

Run: ``python examples/optuna_sweep.py [--trials 20] [--epochs 10] [--storage sqlite:///optuna_sweep.db]``.
Needs an installed ``lightning-dynamics[examples,sweep]`` (optuna, optuna-integration, scikit-learn); the task lives
beside this file (``digits.py``). Docs: docs/sweeps.md.

Each trial samples a learning rate, an initialisation gain and a weight decay for a small CNN on scikit-learn digits.
``DynamicsDiagnosis`` names problems as they happen; ``DiagnosisPruning`` ends a trial at the first epoch where it
finds one the trial cannot recover from (a non-finite loss, a diverging learning rate, exploding gradients, a bug in
the data or the outputs), and records why in ``trial.user_attrs["pruned_by"]``. With ``monitor="val_acc"`` it also
reports the accuracy each epoch, so the study's ``MedianPruner`` prunes the slow trials.

The study lives in a SQLite file by default, so a sweep can be stopped and resumed (``--study-name`` names it). For
many machines, give every worker the same shared database (``--storage postgresql://user:pass@host/db`` or
``mysql://...``) and the same ``--study-name``: each worker runs this script and Optuna hands out the trials.
"""

from __future__ import annotations

import argparse
from typing import Any

import lightning.pytorch as pl
import optuna
import torch
from digits import DigitsDataModule, ImageClassifier, SmallCNN
from torch import nn

from lightning_dynamics import DynamicsDiagnosis, DynamicsMonitor
from lightning_dynamics.callbacks.pruning import DiagnosisPruning


class SweptClassifier(ImageClassifier):
    """The examples' classifier (SGD with momentum 0.9) with a weight decay."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float) -> None:
        super().__init__(model, lr=lr)
        self.weight_decay = weight_decay

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


def objective(trial: optuna.trial.Trial, epochs: int) -> float:
    lr = trial.suggest_float("lr", 1e-3, 10.0, log=True)
    gain = trial.suggest_float("gain", 0.25, 8.0, log=True)  # scales the initial weights: a bad init is hopeless too
    weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    pl.seed_everything(trial.number, verbose=False)
    model = SmallCNN()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.mul_(gain)
    # The monitor's cheap settings: the diagnosis reads its per-layer statistics, not the dynamical measures.
    monitor = DynamicsMonitor(
        points_per_epoch=4, null_surrogates=None, save_history=False, verbose=False, log_dashboard=False
    )
    pruning = DiagnosisPruning(trial, monitor="val_acc")  # default kinds: HOPELESS_KINDS
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=[monitor, DynamicsDiagnosis(), pruning],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(SweptClassifier(model, lr, weight_decay), datamodule=DigitsDataModule())
    pruning.check_pruned()  # raises TrialPruned under DDP, where the callback stops the processes instead
    return float(trainer.callback_metrics["val_acc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--storage", default="sqlite:///optuna_sweep.db", help="an Optuna storage URL (RDB)")
    parser.add_argument("--study-name", default="lightning_dynamics_digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    study = optuna.create_study(
        study_name=args.study_name,
        storage=args.storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
    )
    study.optimize(lambda trial: objective(trial, args.epochs), n_trials=args.trials)

    for trial in study.trials:
        reason = trial.user_attrs.get("pruned_by")
        if reason is None:
            why = f"{trial.state.name.lower()} {trial.value}"
        elif reason["by"] == "diagnosis":
            why = f"pruned at epoch {reason['epoch']}: {reason['kind']} ({reason['evidence']})"
        else:
            why = f"pruned at epoch {reason['epoch']} by {reason['pruner']} ({reason['monitor']}={reason['value']})"
        print(f"trial {trial.number:3d} lr={trial.params['lr']:.3g} gain={trial.params['gain']:.3g}: {why}")
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if completed:
        print(f"best: trial {study.best_trial.number}, val_acc {study.best_value:.2f}%, {study.best_params}")


if __name__ == "__main__":
    main()
