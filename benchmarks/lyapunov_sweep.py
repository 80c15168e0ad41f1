"""The maximum Lyapunov exponent of training against the learning rate (docs/method.md section 9).

A small network on scikit-learn's digits (real, offline), plain SGD without momentum, one run per learning rate
and seed with :class:`~lightning_dynamics.LyapunovMonitor`. Prints lambda (per optimizer step, running estimate
over the whole run) with the final validation accuracy and training loss, and draws the loss curves and lambda
against the learning rate (PNG). Then asks whether the edge of chaos (lambda crossing 0) predicts the best
learning rate of the sweep. Danovski, Soriano & Lacasa, arXiv:2404.05782, report lambda < 0 at small and
lambda > 0 at large learning rates.

``--cost`` instead measures the monitor's cost: time per epoch with and without it (alternating runs, the
median of the per-pair ratios) and the memory of the shadow against the parameters.

Run: ``nice -n 10 .venv/bin/python benchmarks/lyapunov_sweep.py [--epochs 15] [--seeds 0 1 2] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from benchmarks.kit import DigitsDataModule, ImageClassifier, SmallCNN, SmallMLP, quiet_trainer
from lightning_dynamics.callbacks import LyapunovMonitor

DEFAULT_LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 2.0, 4.0, 8.0)


class EpochRecorder(pl.Callback):
    """Keeps train_loss, val_loss and val_acc of every epoch.

    Read at the end of the training epoch, after that epoch's validation: a callback's
    ``on_validation_epoch_end`` runs before the module's, which logs ``val_acc``.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.rows.append({k: float(metrics[k]) for k in ("train_loss", "val_loss", "val_acc") if k in metrics})


def run(lr: float, seed: int, epochs: int, d0: float, model: str = "mlp") -> dict[str, Any]:
    pl.seed_everything(seed, verbose=False)
    net = SmallMLP() if model == "mlp" else SmallCNN(channels=8)
    module = ImageClassifier(net, lr=lr, momentum=0.0)
    monitor = LyapunovMonitor(d0=d0)
    recorder = EpochRecorder()
    trainer = quiet_trainer(max_epochs=epochs, accelerator="cpu", callbacks=[monitor, recorder])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=DigitsDataModule(batch_size=64, split_seed=0))
    return {
        "lr": lr,
        "seed": seed,
        "lambda": monitor.exponent,
        "epoch_lambda": monitor.epoch_exponents,
        "curves": recorder.rows,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.pstdev(finite) if len(finite) > 1 else 0.0


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for lr in sorted({r["lr"] for r in results}):
        runs = [r for r in results if r["lr"] == lr]
        final_acc = [r["curves"][-1].get("val_acc", math.nan) for r in runs]
        final_loss = [r["curves"][-1].get("train_loss", math.nan) for r in runs]
        lam_mean, lam_std = _mean_std([r["lambda"] for r in runs])
        late = [statistics.fmean(r["epoch_lambda"][len(r["epoch_lambda"]) // 2 :]) for r in runs]
        late_mean, late_std = _mean_std(late)
        acc_mean, acc_std = _mean_std(final_acc)
        rows.append(
            {
                "lr": lr,
                "lambda": lam_mean,
                "lambda_std": lam_std,
                "lambda_runs": [r["lambda"] for r in runs],
                "lambda_late": late_mean,
                "lambda_late_std": late_std,
                "val_acc": acc_mean,
                "val_acc_std": acc_std,
                "train_loss": _mean_std(final_loss)[0],
                "diverged": sum(not math.isfinite(v) for v in final_loss),
            }
        )
    return rows


def edge_of_chaos(rows: list[dict[str, Any]]) -> float:
    """Learning rate where the mean lambda first crosses 0 (log-linear interpolation); NaN if it never does."""
    for a, b in itertools.pairwise(rows):
        if a["lambda"] <= 0 < b["lambda"]:
            t = -a["lambda"] / (b["lambda"] - a["lambda"])
            return math.exp(math.log(a["lr"]) + t * (math.log(b["lr"]) - math.log(a["lr"])))
    return math.nan


def plot(results: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs = [row["lr"] for row in rows]
    colors = plt.cm.viridis([i / max(1, len(lrs) - 1) for i in range(len(lrs))])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for lr, color in zip(lrs, colors, strict=True):
        for i, r in enumerate(x for x in results if x["lr"] == lr):
            epochs = range(1, len(r["curves"]) + 1)
            label = f"lr={lr:g}" if i == 0 else None
            axes[0].plot(epochs, [c.get("train_loss", math.nan) for c in r["curves"]], color=color, label=label)
            axes[1].plot(epochs, [c.get("val_acc", math.nan) for c in r["curves"]], color=color, label=label)
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss curves (each seed)")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy (%)", ylim=(0, 100), title="validation accuracy")
    axes[0].legend(fontsize=7)
    ax = axes[2]
    ax.errorbar(lrs, [r["lambda"] for r in rows], yerr=[r["lambda_std"] for r in rows], marker="o", color="C3")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="learning rate", ylabel="lambda per step (mean ± std over seeds), symlog")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title("max Lyapunov exponent vs learning rate")
    twin = ax.twinx()
    twin.plot(lrs, [r["val_acc"] for r in rows], marker="s", color="C0", ls="--")
    twin.set_ylabel("final validation accuracy (%)", color="C0")
    edge = edge_of_chaos(rows)
    if math.isfinite(edge):
        ax.axvline(edge, color="C3", ls=":", label=f"lambda = 0 at lr ~ {edge:.2g}")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cost(epochs: int, repeats: int) -> None:
    """Time per epoch with and without the monitor, alternating, and the shadow's memory."""
    for model in ("mlp", "cnn"):
        ratios = []
        for _ in range(repeats):
            times = {}
            for with_monitor in (False, True, True, False):
                pl.seed_everything(0, verbose=False)
                net = SmallMLP() if model == "mlp" else SmallCNN(channels=8)
                module = ImageClassifier(net, lr=0.1, momentum=0.0)
                callbacks = [LyapunovMonitor()] if with_monitor else []
                trainer = quiet_trainer(max_epochs=epochs, accelerator="cpu", callbacks=callbacks, limit_val_batches=0)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    trainer.fit(module, datamodule=DigitsDataModule(batch_size=64))
                times.setdefault(with_monitor, []).append(time.perf_counter() - start)
            ratios.append(sum(times[True]) / sum(times[False]))
        n_params = sum(p.numel() for p in module.parameters())
        param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
        # Memory of the shadow, for SGD (no state), SGD with momentum and AdamW, measured on the twin itself.
        shadow = {}
        for name, opt in (
            ("sgd", torch.optim.SGD(module.parameters(), lr=0.1)),
            ("sgd+momentum", torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)),
            ("adamw", torch.optim.AdamW(module.parameters(), lr=1e-3)),
        ):
            x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
            torch.nn.functional.cross_entropy(module(x), y).backward()
            opt.step()
            from lightning_dynamics.twin_trajectory import TwinTrajectory

            twin = TwinTrajectory().attach(module, opt)
            twin.step(lambda: torch.nn.functional.cross_entropy(module(x), y))  # noqa: B023
            tensors = twin.shadow_params + twin.shadow_buffers
            tensors += [v for s in twin.shadow_state for v in s.values() if isinstance(v, torch.Tensor)]
            shadow[name] = sum(t.numel() * t.element_size() for t in tensors) / param_bytes
        print(
            f"{model}: {n_params} parameters; time with / without monitor, median of {repeats} A-B-B-A ratios: "
            f"{statistics.median(ratios):.2f}x (all: {', '.join(f'{r:.2f}' for r in ratios)}); shadow memory / "
            f"parameter memory: " + ", ".join(f"{k} {v:.2f}x" for k, v in shadow.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--d0", type=float, default=1e-4)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/lyapunov_sweep"))
    parser.add_argument("--cost", action="store_true", help="measure the monitor's time and memory cost instead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cost:
        cost(args.epochs, args.repeats)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / f"runs_{args.model}_d0{args.d0:g}_e{args.epochs}.json"
    results: list[dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else []
    done = {(r["lr"], r["seed"]) for r in results}
    for lr in args.lrs:
        for seed in args.seeds:
            if (lr, seed) in done:
                continue
            start = time.perf_counter()
            results.append(run(lr, seed, args.epochs, args.d0, args.model))
            cache.write_text(json.dumps(results))
            r = results[-1]
            acc = r["curves"][-1].get("val_acc", math.nan)
            seconds = time.perf_counter() - start
            print(f"lr={lr:<6g} seed={seed} lambda={r['lambda']:+.4f} val_acc={acc:.1f} ({seconds:.1f} s)", flush=True)
    results = [r for r in results if r["lr"] in args.lrs and r["seed"] in args.seeds]
    rows = summarize(results)
    print(f"\n{args.model}, plain SGD, {args.epochs} epochs, seeds {args.seeds}, d0={args.d0:g} (relative)")
    print(
        f"{'lr':>6}  {'lambda/step, whole run':>23}  {'lambda/step, 2nd half':>23}  {'val acc %':>15}  "
        f"{'train loss':>10}  diverged"
    )
    for row in rows:
        print(
            f"{row['lr']:>6g}  {row['lambda']:>+13.4f} ± {row['lambda_std']:.4f}  "
            f"{row['lambda_late']:>+13.4f} ± {row['lambda_late_std']:.4f}  "
            f"{row['val_acc']:>7.2f} ± {row['val_acc_std']:5.2f}  {row['train_loss']:>10.4f}  {row['diverged']}"
        )
    edge = edge_of_chaos(rows)
    finite = [row for row in rows if math.isfinite(row["val_acc"])]
    best = max(finite, key=lambda row: row["val_acc"]) if finite else None
    print(f"\nedge of chaos (mean lambda crosses 0): lr ~ {edge:.3g}")
    if best is not None:
        print(f"best learning rate of the sweep (final val acc): {best['lr']:g} ({best['val_acc']:.2f}%)")
    png = args.out / f"lyapunov_sweep_{args.model}.png"
    plot(results, rows, png)
    print(f"figure: {png}")


if __name__ == "__main__":
    main()
