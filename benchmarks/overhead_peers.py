"""Training-step overhead of DynamicsMonitor next to its peers, on one model and the same data, in one run.

Configurations, each a ratio to a plain fit of the same model and data:

- ``monitor``: ``DynamicsMonitor()`` with its defaults (hooks on the auto-selected layers; 32 sample points per
  epoch, each a few on-device additions inside a step; the measures and noise floors run at the epoch's end,
  outside the timed steps). This file times steps only: the whole-fit comparison, end-of-epoch and end-of-fit work
  included, is ``whole_fit.py``.
- ``wandb_watch``: ``WandbLogger(offline=True).watch(model, log="all", log_freq=N)``: parameter and gradient
  histograms every ``N`` steps, written to an offline run.
- ``cockpit``: Cockpit's ``economy`` preset (Schneider, Dangel & Hennig, NeurIPS 2021: Alpha, Distance,
  GradHist1d, GradNorm, InnerTest, Loss, NormTest, OrthoTest, UpdateSize) with its default schedule (every step),
  the model and loss extended by BackPACK, the backward pass inside Cockpit's context as in Cockpit's examples.
- ``tb_histograms``: a callback that calls TensorBoard's ``add_histogram`` for every parameter every ``N`` steps.

Method (after ``overhead.py --paired``, reusing its ``StepTimer`` and ``model_and_data``): every configuration
trains its own copy of the model (same seed, same initial weights, same batches), so that one's hooks never run
in another's steps. Each round runs one fit of ``--steps`` steps per configuration, plain included, in an order
rotated from round to round; the first two steps of each fit are dropped. The overhead of a configuration in a
round is mean(step) / mean(plain step of the same round) - 1: a mean, not a median, so that the steps where
histograms are written every ``N`` steps count at their share. The table gives the median over rounds and the
range of the round ratios.

Run: ``nice -n 10 .venv/bin/python benchmarks/overhead_peers.py [--rounds 4 --steps 22 --every 10]``.
Needs the ``loggers`` extra (tensorboard, wandb) and, for Cockpit, ``cockpit-for-pytorch`` and
``backpack-for-pytorch``; a peer whose package is missing is reported as such and left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import BATCH, MODELS, StepTimer, model_and_data

from benchmarks.kit import ImageClassifier, SmallCNN, quiet_trainer
from lightning_dynamics import DynamicsMonitor

# A plain CNN that every peer supports (BackPACK has no batch-wise extension for BatchNorm in training mode,
# which rules out the timm models of overhead.py for Cockpit): SmallCNN widened for 3x32x32 inputs.
MODELS.setdefault("small_cnn", lambda: SmallCNN(channels=32, in_channels=3))
BATCH.setdefault("small_cnn", 128)


class TensorBoardHistograms(pl.Callback):
    """``SummaryWriter.add_histogram`` of every parameter every ``every_n_steps`` optimizer steps."""

    def __init__(self, log_dir: str, every_n_steps: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir)
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            for name, parameter in pl_module.named_parameters():
                self.writer.add_histogram(name, parameter.detach(), trainer.global_step)

    def close(self) -> None:
        self.writer.close()


class CockpitClassifier(ImageClassifier):
    """``ImageClassifier`` whose backward pass runs inside a Cockpit (economy preset), BackPACK-extended."""

    def attach_cockpit(self, preset: str = "economy") -> None:
        from backpack import extend
        from cockpit import Cockpit
        from cockpit.utils.configuration import configuration

        self.model = extend(self.model)
        self.loss_function = extend(nn.CrossEntropyLoss(reduction="mean"))
        self.cockpit = Cockpit(self.parameters(), quantities=configuration(preset))
        self._info: dict[str, Any] = {}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss_function(logits, y)
        optimizer = self.optimizers()
        self._info = {
            "batch_size": x.shape[0],
            "individual_losses": nn.functional.cross_entropy(logits, y, reduction="none"),
            "loss": loss,
            "optimizer": getattr(optimizer, "optimizer", optimizer),
        }
        return loss

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        step = self.global_step
        with self.cockpit(step, info=self._info):
            loss.backward(create_graph=self.cockpit.create_graph(step))


def available_peers() -> dict[str, str | None]:
    """Peer name -> None if it can run here, else why not."""

    def missing(*modules: str) -> str | None:
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"not installed: {', '.join(absent)}" if absent else None

    return {
        "monitor": None,
        "wandb_watch": missing("wandb"),
        "cockpit": missing("cockpit", "backpack"),
        "tb_histograms": missing("tensorboard"),
    }


def build(
    config: str, model: str, steps: int, every: int, workdir: Path
) -> tuple[pl.LightningModule, Any, Callable[[], list[Any]], Callable[[], Any]]:
    """``(module, loader, callbacks factory, trainer logger factory)`` of one configuration, built once."""
    module, loader = model_and_data(model, steps)
    logger: Any = False
    if config == "cockpit":
        module = CockpitClassifier(module.model, lr=0.01)
        module.attach_cockpit("economy")
    if config == "wandb_watch":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        logger = WandbLogger(save_dir=str(workdir), offline=True, project="overhead-peers")
        logger.watch(module, log="all", log_freq=every)
    histograms = TensorBoardHistograms(str(workdir / "tb"), every) if config == "tb_histograms" else None

    def callbacks() -> list[Any]:
        if config == "monitor":
            return [DynamicsMonitor(verbose=False, save_history=False)]
        return [histograms] if histograms is not None else []

    return module, loader, callbacks, lambda: logger


def fit_steps(module: pl.LightningModule, loader: Any, steps: int, callbacks: list[Any], logger: Any) -> list[float]:
    timer = StepTimer()  # last, so the callbacks' batch-end work is inside the timed step
    trainer = quiet_trainer(
        max_epochs=1, limit_train_batches=steps, accelerator="cpu", logger=logger, callbacks=[*callbacks, timer]
    )
    trainer.fit(module, loader)
    return timer.times[2:]  # the first steps of each fit warm caches and allocators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small_cnn", choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=22, help="steps per fit (2 dropped as warm-up)")
    parser.add_argument("--every", type=int, default=10, help="N: histogram interval of wandb.watch and TensorBoard")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Lightning's per-fit notices would bury the table
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    peers = available_peers()
    for name, reason in peers.items():
        if reason is not None:
            print(f"{name}: left out ({reason})")
    configs = ["plain", *[name for name, reason in peers.items() if reason is None]]
    print(
        f"model={args.model} batch={BATCH[args.model]} input=3x32x32 random data, threads={torch.get_num_threads()}, "
        f"rounds={args.rounds}, steps per fit={args.steps} ({args.steps - 2} timed), histograms every {args.every}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        built = {c: build(c, args.model, args.steps, args.every, workdir) for c in configs}
        for module, loader, callbacks, logger in built.values():  # warm-up fit of each
            fit_steps(module, loader, 4, callbacks(), logger())
        means: dict[str, list[float]] = {c: [] for c in configs}
        medians: dict[str, list[float]] = {c: [] for c in configs}
        for r in range(args.rounds):
            for config in configs[r % len(configs) :] + configs[: r % len(configs)]:
                module, loader, callbacks, logger = built[config]
                times = fit_steps(module, loader, args.steps, callbacks(), logger())
                means[config].append(statistics.fmean(times))
                medians[config].append(statistics.median(times))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{c} {1e3 * means[c][-1]:.0f} ms" for c in configs))
        if "wandb_watch" in built:
            import wandb

            wandb.finish()
        if "tb_histograms" in built:
            built["tb_histograms"][2]()[0].close()
    print(
        f"\n{'configuration':<15} {'step ms (mean)':>15} {'overhead (mean)':>16} {'range over rounds':>20} "
        f"{'overhead (median step)':>23}"
    )
    plain_mean, plain_median = means["plain"], medians["plain"]
    for config in configs:
        ratios = [m / p - 1 for m, p in zip(means[config], plain_mean, strict=True)]
        median_ratios = [m / p - 1 for m, p in zip(medians[config], plain_median, strict=True)]
        print(
            f"{config:<15} {1e3 * statistics.median(means[config]):>15.1f} {100 * statistics.median(ratios):>15.1f}% "
            f"{100 * min(ratios):>+9.1f}..{100 * max(ratios):>+7.1f}% {100 * statistics.median(median_ratios):>22.1f}%"
        )


if __name__ == "__main__":
    main()
