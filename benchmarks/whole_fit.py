"""Whole-fit cost of DynamicsMonitor and its peers: what a user waits for, end-of-fit work included.

``overhead.py`` times training steps; most of the monitor's cost on a small model is not in the steps but at each
epoch's end (the measures and their noise floors) and at the end of fit (the dashboard). This benchmark times
whole ``Trainer.fit`` calls, paired and interleaved in one process:

- ``plain``: the model and data with a CSVLogger, no monitor.
- ``monitor``: ``DynamicsMonitor()`` with its defaults (32 points per epoch, noise floors on, the cost budget of
  5%: floors spaced out and the dashboard left out while they would cost more than 5% of the training time).
- ``monitor_unbudgeted``: ``DynamicsMonitor(cost_budget=None)``: floors at every epoch and the dashboard always
  (the behaviour before the cost budget).
- ``wandb_watch``: ``WandbLogger(offline=True).watch(model, log="all", log_freq=100)``, a peer: parameter and
  gradient histograms (offline run, written to a temporary directory).

Each round fits every configuration once on its own freshly seeded copy of the model, in an order rotated from
round to round; the ratio of a configuration in a round is its fit time over the plain fit's of the same round.
The table gives the median and the range over rounds, the per-step ratio (mean training step, from a timing
callback, over plain's), the monitor's own floor time (``tracker.floor_seconds``) and all of its sample-point
work, measures and floors included (``tracker.compute_seconds``).

Workloads: ``digits`` (the 4-layer CNN of the README on scikit-learn's digits, Adam 3e-3, 22 batches of 64 per
epoch) and ``resnet18`` (timm ResNet-18 on random 3x32x32 images, 60 batches of 64 per epoch).

Run: ``nice -n 10 .venv/bin/python benchmarks/whole_fit.py [--workloads digits --epochs 10 40 --rounds 3]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.kit import DigitsDataModule, ImageClassifier, SmallCNN, quiet_trainer
from lightning_dynamics import DynamicsMonitor

CONFIGS = ("plain", "monitor", "monitor_unbudgeted", "wandb_watch")


class StepTimes(pl.Callback):
    """Wall time of every training step (the first two of a fit dropped: caches and allocators warm up)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def digits() -> tuple[pl.LightningModule, Any]:
    torch.manual_seed(0)
    module = ImageClassifier(SmallCNN(), lr=3e-3, optimizer="adamw", in_channels=1, image_size=8)
    return module, DigitsDataModule(batch_size=64)


def resnet18() -> tuple[pl.LightningModule, Any]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = 60 * 64
    data = TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    return ImageClassifier("resnet18", lr=0.01), DataLoader(data, batch_size=64, shuffle=True)


WORKLOADS: dict[str, Callable[[], tuple[pl.LightningModule, Any]]] = {"digits": digits, "resnet18": resnet18}


def fit_once(workload: str, config: str, epochs: int, root: Path) -> dict[str, float]:
    """One fit of ``workload`` under ``config``: its wall time, its mean step and the monitor's floor time."""
    from lightning.pytorch.loggers import CSVLogger

    module, data = WORKLOADS[workload]()
    timer = StepTimes()
    callbacks: list[pl.Callback] = []
    monitor = None
    logger: Any = CSVLogger(root, name=f"{workload}_{config}")
    if config.startswith("monitor"):
        monitor = DynamicsMonitor(verbose=False, **({"cost_budget": None} if config == "monitor_unbudgeted" else {}))
        callbacks.append(monitor)
    elif config == "wandb_watch":
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(save_dir=str(root), project="whole-fit", offline=True)
        logger.watch(module, log="all", log_freq=100)
    trainer = quiet_trainer(
        max_epochs=epochs, accelerator="cpu", logger=logger, callbacks=[*callbacks, timer], log_every_n_steps=50
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - start
    if config == "wandb_watch":
        import wandb

        wandb.finish()
    steps = timer.times[2:]
    return {
        "fit": seconds,
        "step": statistics.fmean(steps) if steps else float("nan"),
        "floors": 0.0 if monitor is None else monitor.tracker.floor_seconds,
        "computed": 0.0 if monitor is None else monitor.tracker.compute_seconds,
    }


def measure(workload: str, epochs: int, rounds: int, configs: list[str]) -> list[dict[str, Any]]:
    """Interleaved rounds; per configuration the whole-fit and per-step ratios to plain."""
    per_round: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        fit_once(workload, "plain", 1, Path(tmp))  # warm-up: imports, data, allocator
        for index in range(rounds):
            order = configs[index % len(configs) :] + configs[: index % len(configs)]
            per_round.append({config: fit_once(workload, config, epochs, Path(tmp)) for config in order})
    rows = []
    for config in configs:
        fit_ratios = [r[config]["fit"] / r["plain"]["fit"] for r in per_round]
        step_ratios = [r[config]["step"] / r["plain"]["step"] for r in per_round]
        rows.append(
            {
                "workload": workload,
                "epochs": epochs,
                "config": config,
                "fit_s": statistics.median(r[config]["fit"] for r in per_round),
                "fit_ratio": statistics.median(fit_ratios),
                "fit_range": (min(fit_ratios), max(fit_ratios)),
                "step_ratio": statistics.median(step_ratios),
                "floors_s": statistics.median(r[config]["floors"] for r in per_round),
                "computed_s": statistics.median(r[config]["computed"] for r in per_round),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["digits"], choices=list(WORKLOADS))
    parser.add_argument("--epochs", nargs="+", type=int, default=[10, 40])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    configs = ["plain", *(c for c in args.configs if c != "plain")]
    print(
        "| workload | epochs | configuration | fit (s, median) | whole-fit ratio (median, range) | step ratio | "
        "floors (s) | all sample-point work (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for workload in args.workloads:
        for epochs in args.epochs:
            for row in measure(workload, epochs, args.rounds, configs):
                lo, hi = row["fit_range"]
                print(
                    f"| {row['workload']} | {row['epochs']} | {row['config']} | {row['fit_s']:.2f} | "
                    f"{row['fit_ratio']:.2f} ({lo:.2f}-{hi:.2f}) | {row['step_ratio']:.2f} | {row['floors_s']:.2f} | "
                    f"{row['computed_s']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
