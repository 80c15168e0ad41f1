"""Pruning an Optuna sweep on the diagnosis: how much of a sweep does it save, at what best accuracy? (issue 27.5)

A small study over learning rate x initialisation gain x weight decay (SGD with momentum 0.9) on scikit-learn
digits, run four ways on the SAME trials (the configurations are drawn once from ``--seed`` and enqueued in every
study; trial ``i`` trains from the same initial weights in every strategy):

- ``full``: every trial to the last epoch (no pruning, no monitor);
- ``median``: Optuna's ``MedianPruner`` (defaults) on ``val_acc`` through ``PyTorchLightningPruningCallback``;
- ``diagnosis``: :class:`~lightning_dynamics.callbacks.pruning.DiagnosisPruning` (its default hopeless kinds), with a
  ``DynamicsMonitor`` and a ``DynamicsDiagnosis``; no Optuna pruner;
- ``both``: ``DiagnosisPruning(monitor="val_acc")`` with ``MedianPruner``;
- ``loss_rules`` and ``loss_rules_median``: the same two without the ``DynamicsMonitor``, so the diagnosis runs
  only its rules on the loss, the data, the outputs and the optimizers (no per-layer statistics: no update-ratio,
  gradient-norm, dead or saturated unit rules), at almost no cost per step.

Reported per strategy: total sweep time (wall, noisy on a shared machine), total epochs trained (a load-independent
cost), the best final validation accuracy (the objective: ``val_acc`` at the last epoch of a completed trial), and
for each trial whether and why it was pruned. Hopeless trials are counted from ``full``: those that end at or below
``--hopeless-acc`` (default 0.2: chance is 0.1).

    python benchmarks/sweep_pruning.py --archs mlp resnet --trials 24 10 --epochs 10 6 \\
        --out benchmarks/results/sweep_pruning.json --markdown benchmarks/results/sweep_pruning.md

``tests/callbacks/test_pruning.py`` runs it in a smoke setting (3 trials, 2 epochs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import optuna
import torch
from optuna_integration import PyTorchLightningPruningCallback
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.kit import quiet_trainer
from benchmarks.kit.data import _digits_split
from lightning_dynamics import DynamicsDiagnosis, DynamicsMonitor
from lightning_dynamics.callbacks.pruning import DiagnosisPruning

STRATEGIES = ("full", "median", "diagnosis", "both", "loss_rules", "loss_rules_median")
_WITH_MEDIAN = ("median", "both", "loss_rules_median")
#: The search space (log-uniform in each range): real sweeps reach past the good region on every axis.
SPACE = {"lr": (1e-3, 10.0), "gain": (0.25, 8.0), "weight_decay": (1e-6, 0.1)}
#: The columns of the summary table, in order.
COLUMNS = (
    "arch",
    "strategy",
    "trials",
    "pruned",
    "by diagnosis",
    "by pruner",
    "epochs",
    "epochs saved",
    "seconds",
    "time saved",
    "s/epoch",
    "hopeless pruned",
    "others pruned",
    "best val_acc",
    "best trial",
)


class SweepModule(pl.LightningModule):
    """Cross-entropy with SGD (momentum 0.9); logs ``val_loss`` and ``val_acc``."""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)


class EpochCount(pl.Callback):
    """Counts the training epochs begun (a pruned trial is pruned after its epoch's training and validation)."""

    def __init__(self) -> None:
        self.epochs = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs += 1


def build(arch: str, gain: float) -> nn.Module:
    """The digits MLP (2 hidden ReLU layers of 64) or timm ResNet-18 at width (8, 16, 32, 64); every linear and
    convolution weight multiplied by ``gain`` (the initialisation axis of the sweep)."""
    if arch == "mlp":
        model: nn.Module = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
        )
    elif arch == "resnet":
        from benchmarks.kit import build_model

        model = build_model("resnet18", 10, 1, 8, channels=(8, 16, 32, 64))
    else:
        raise ValueError(f"`arch` must be 'mlp' or 'resnet', got {arch!r}.")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.mul_(gain)
    return model


def draw_configs(n_trials: int, seed: int) -> list[dict[str, float]]:
    """``n_trials`` configurations, log-uniform over :data:`SPACE`, the same for every strategy."""
    rng = np.random.default_rng(seed)
    return [
        {name: float(math.exp(rng.uniform(math.log(low), math.log(high)))) for name, (low, high) in SPACE.items()}
        for _ in range(n_trials)
    ]


def objective_for(
    arch: str, strategy: str, epochs: int, seed: int, records: dict[int, dict[str, Any]]
) -> Any:  # Callable[[optuna.trial.Trial], float]
    """The study's objective for one strategy; each trial's record (epochs, seconds, outcome) goes to ``records``."""
    train_x, train_y, val_x, val_y = _digits_split(0.25, 0)

    def objective(trial: optuna.trial.Trial) -> float:
        config = {name: trial.suggest_float(name, low, high, log=True) for name, (low, high) in SPACE.items()}
        pl.seed_everything(seed + trial.number, verbose=False)
        model = build(arch, config["gain"])
        g = torch.Generator().manual_seed(seed + trial.number)
        train = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True, generator=g)
        val = DataLoader(TensorDataset(val_x, val_y), batch_size=256)
        count = EpochCount()
        callbacks: list[pl.Callback] = [count]
        if strategy == "median":
            callbacks.append(PyTorchLightningPruningCallback(trial, monitor="val_acc"))
        elif strategy in ("loss_rules", "loss_rules_median"):
            callbacks += [
                DynamicsDiagnosis(),
                DiagnosisPruning(trial, monitor="val_acc" if strategy == "loss_rules_median" else None),
            ]
        elif strategy in ("diagnosis", "both"):
            callbacks += [
                DynamicsMonitor(
                    points_per_epoch=4,
                    null_surrogates=None,
                    compute_phase_integration=False,
                    save_history=False,
                    verbose=False,
                    log_dashboard=False,
                ),
                DynamicsDiagnosis(),
                DiagnosisPruning(trial, monitor="val_acc" if strategy == "both" else None),
            ]
        trainer = quiet_trainer(max_epochs=epochs, accelerator="cpu", callbacks=callbacks, limit_val_batches=None)
        record: dict[str, Any] = {"trial": trial.number, **config}
        records[trial.number] = record
        start = time.perf_counter()
        try:
            trainer.fit(SweepModule(model, config["lr"], config["weight_decay"]), train, val)
        except optuna.TrialPruned:
            record.update(epochs=count.epochs, seconds=time.perf_counter() - start, state="pruned")
            record["pruned_by"] = trial.user_attrs.get("pruned_by", {"by": "pruner", "pruner": "MedianPruner"})
            raise
        value = float(trainer.callback_metrics["val_acc"])
        record.update(epochs=count.epochs, seconds=time.perf_counter() - start, state="complete", val_acc=value)
        return value if math.isfinite(value) else 0.0

    return objective


def run_sweep(
    arch: str, strategy: str, configs: Sequence[dict[str, float]], epochs: int, seed: int = 0
) -> dict[str, Any]:
    """One study of ``configs`` (enqueued in order) under ``strategy``: its summary row and per-trial records."""
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {strategy!r}.")
    torch.set_num_threads(1)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner()
        if strategy in ("median", "both", "loss_rules_median")
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=seed))
    for config in configs:
        study.enqueue_trial(dict(config))
    records: dict[int, dict[str, Any]] = {}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    study.optimize(objective_for(arch, strategy, epochs, seed, records), n_trials=len(configs), catch=())
    seconds = time.perf_counter() - start
    trials = [records[i] for i in sorted(records)]
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["val_acc"] if math.isfinite(t["val_acc"]) else -1.0, default=None)
    pruned = [t for t in trials if t["state"] == "pruned"]
    return {
        "arch": arch,
        "strategy": strategy,
        "trials": len(trials),
        "pruned": len(pruned),
        "by diagnosis": sum(t["pruned_by"].get("by") == "diagnosis" for t in pruned),
        "by pruner": sum(t["pruned_by"].get("by") == "pruner" for t in pruned),
        "epochs": sum(t["epochs"] for t in trials),
        "seconds": seconds,
        "best val_acc": None if best is None else best["val_acc"],
        "best trial": None if best is None else best["trial"],
        "load": load,
        "per_trial": trials,
    }


def compare(rows: list[dict[str, Any]], hopeless_acc: float = 0.2) -> dict[str, Any]:
    """Savings against ``full`` for each row of one architecture, and the goal's verdict (>= 40% at the same best)."""
    full = next(r for r in rows if r["strategy"] == "full")
    hopeless = [t["trial"] for t in full["per_trial"] if not t.get("val_acc", 0.0) > hopeless_acc]
    for row in rows:
        row["epochs saved"] = 1.0 - row["epochs"] / full["epochs"]
        row["time saved"] = 1.0 - row["seconds"] / full["seconds"]
        row["s/epoch"] = row["seconds"] / max(row["epochs"], 1)
        pruned = {t["trial"] for t in row["per_trial"] if t["state"] == "pruned"}
        row["hopeless pruned"] = f"{len(pruned & set(hopeless))}/{len(hopeless)}"
        row["others pruned"] = len(pruned - set(hopeless))  # trials that end above hopeless_acc when trained out
        same = row["best val_acc"] is not None and abs(row["best val_acc"] - full["best val_acc"]) <= 0.005
        row["same best"] = same
        row["goal"] = bool(same and row["epochs saved"] >= 0.4 and row["time saved"] >= 0.4)
    return {"arch": full["arch"], "hopeless": hopeless, "hopeless_acc": hopeless_acc}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("epochs saved", "time saved"):
        return f"{100 * value:.0f}%"
    if key == "seconds":
        return f"{value:.0f}"
    if key == "s/epoch":
        return f"{value:.2f}"
    if key == "best val_acc":
        return f"{value:.4f}"
    return str(value)


def _outcome(trial: dict[str, Any]) -> str:
    if trial["state"] == "complete":
        return f"{trial['val_acc']:.3f}" if math.isfinite(trial["val_acc"]) else "nan"
    reason = trial["pruned_by"]
    why = reason.get("kind") if reason.get("by") == "diagnosis" else reason.get("pruner", "pruner")
    return f"pruned e{trial['epochs'] - 1} ({why})"


def markdown(rows: list[dict[str, Any]], verdicts: list[dict[str, Any]], command: str) -> str:
    """The results page: the summary table, the goal's verdict and every trial's outcome per strategy."""
    lines = [
        "# Pruning a sweep on the diagnosis (generated by `benchmarks/sweep_pruning.py`)",
        "",
        f"`{command}`",
        "",
        "Same trials in every strategy (configurations drawn once and enqueued; same seed per trial). `epochs`: "
        "training epochs run, all trials together (load-independent); `seconds`: wall time of the whole study "
        "(a shared 2-core machine: noisy; `load` is the 1-minute load average at its start). `best val_acc`: "
        "the best completed trial's validation accuracy at its last epoch. Goal (issue 27.5): >= 40% faster at "
        "the same best accuracy (within 0.5 points), judged here on both epochs and seconds.",
        "",
        "| " + " | ".join([*COLUMNS, "load", "goal"]) + " |",
        "|" + "---|" * (len(COLUMNS) + 2),
    ]
    for row in rows:
        cells = [_cell(key, row.get(key)) for key in COLUMNS]
        lines.append("| " + " | ".join([*cells, f"{row['load']:.1f}", "hit" if row["goal"] else "miss"]) + " |")
    for verdict in verdicts:
        arch_rows = [r for r in rows if r["arch"] == verdict["arch"]]
        full = next(r for r in arch_rows if r["strategy"] == "full")
        lines += [
            "",
            f"## {verdict['arch']}: every trial",
            "",
            f"{len(verdict['hopeless'])} of {full['trials']} configurations are hopeless (final val_acc <= "
            f"{verdict['hopeless_acc']} when trained to the end): trials {verdict['hopeless']}.",
            "",
            "| trial | lr | gain | weight_decay | " + " | ".join(r["strategy"] for r in arch_rows) + " |",
            "|" + "---|" * (4 + len(arch_rows)),
        ]
        for index, trial in enumerate(full["per_trial"]):
            outcomes = [_outcome(r["per_trial"][index]) for r in arch_rows]
            lines.append(
                f"| {trial['trial']} | {trial['lr']:.3g} | {trial['gain']:.3g} | {trial['weight_decay']:.2g} | "
                + " | ".join(outcomes)
                + " |"
            )
        reasons = [
            f"- trial {t['trial']} ({r['strategy']}): {t['pruned_by'].get('kind')} at epoch "
            f"{t['pruned_by'].get('epoch')}: {t['pruned_by'].get('evidence')}"
            for r in arch_rows
            for t in r["per_trial"]
            if t["state"] == "pruned"
            and t["pruned_by"].get("by") == "diagnosis"
            and r["strategy"] in ("diagnosis", "loss_rules")
        ]
        if reasons:
            lines += ["", "Why the diagnosis pruned (strategies `diagnosis` and `loss_rules`):", "", *reasons]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=["mlp", "resnet"])
    parser.add_argument("--trials", nargs="+", type=int, default=[24, 10], help="one per arch")
    parser.add_argument("--epochs", nargs="+", type=int, default=[10, 6], help="one per arch")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hopeless-acc", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--from-json", type=Path, default=None, help="only write --markdown from a saved --out")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        if args.markdown is None:
            raise ValueError("`--from-json` writes the page given as `--markdown`; give --markdown.")
        archs = list(dict.fromkeys(r["arch"] for r in saved["rows"]))
        verdicts = [compare([r for r in saved["rows"] if r["arch"] == a], args.hopeless_acc) for a in archs]
        args.markdown.write_text(markdown(saved["rows"], verdicts, saved["command"]))
        return
    if "full" not in args.strategies:
        raise ValueError(f"`--strategies` must include 'full' (the reference), got {args.strategies}.")
    if not len(args.trials) == len(args.epochs) == len(args.archs):
        raise ValueError(f"give one --trials and one --epochs per arch: {args.archs}, {args.trials}, {args.epochs}.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows: list[dict[str, Any]] = []
    verdicts = []
    for arch, n_trials, epochs in zip(args.archs, args.trials, args.epochs, strict=True):
        configs = draw_configs(n_trials, args.seed)
        # Untimed warm-up (imports, first fit, the monitor's first measures): else the first strategy pays for it.
        run_sweep(arch, "both", configs[:1], 1, args.seed)
        arch_rows = []
        for strategy in args.strategies:
            row = run_sweep(arch, strategy, configs, epochs, args.seed)
            arch_rows.append(row)
            print(
                f"{arch:6s} {strategy:9s} epochs {row['epochs']:4d} seconds {row['seconds']:7.1f} "
                f"pruned {row['pruned']:2d} best {row['best val_acc']}",
                flush=True,
            )
        verdicts.append(compare(arch_rows, args.hopeless_acc))
        rows += arch_rows
        command = "python benchmarks/sweep_pruning.py " + " ".join(argv if argv is not None else sys.argv[1:])
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"rows": rows, "verdicts": verdicts, "command": command}, indent=1))
        if args.markdown is not None:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(markdown(rows, verdicts, command))


if __name__ == "__main__":
    main()
