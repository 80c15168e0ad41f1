"""The maximum Lyapunov exponent of training against the learning rate (docs/method.md section 9).

A small network on scikit-learn's digits (real, offline), plain SGD without momentum (``--momentum`` to change),
one run per learning rate and seed with :class:`~lightning_dynamics.LyapunovMonitor`. For each learning rate:
lambda per optimizer step (the monitor's slope estimate over the whole run), its mean, standard deviation and
95% t-interval over the seeds, the second half's per-epoch estimates, the final validation accuracy and training
loss. Then: does lambda cross 0 upwards between low and high learning rates (a sign change of the seed means,
with a 95% interval below 0 at or below it and one above 0 at or above it), and does that edge of chaos
(arXiv:2506.08523) sit near the best learning rate of the sweep? Draws the loss curves and lambda against the
learning rate (PNG) and writes a JSON summary. Danovski, Soriano & Lacasa, arXiv:2404.05782, report lambda < 0 at
small and lambda > 0 at large learning rates. The duty cycle's cost and error: ``benchmarks/lyapunov_cost.py``.
Results: ``benchmarks/lyapunov.md``.

Run: ``nice -n 10 .venv/bin/python benchmarks/lyapunov_sweep.py [--epochs 20] [--seeds 0 1 2] [--out DIR]``
(runs are cached in ``OUT/runs_*.json``: a second call with more seeds or learning rates only runs the new ones).
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
from scipy import stats

from benchmarks.kit import DigitsDataModule, ImageClassifier, SmallCNN, SmallMLP, quiet_trainer
from lightning_dynamics.callbacks import LyapunovMonitor
from lightning_dynamics.decisions.lyapunov import DEFAULT_D0

DEFAULT_LRS = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0, 4.0)


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


def run(
    lr: float, seed: int, epochs: int, d0: float, model: str = "mlp", momentum: float = 0.0, precision: str = "32-true"
) -> dict[str, Any]:
    pl.seed_everything(seed, verbose=False)
    net = SmallMLP() if model == "mlp" else SmallCNN(channels=8)
    module = ImageClassifier(net, lr=lr, momentum=momentum)
    monitor = LyapunovMonitor(d0=d0)
    recorder = EpochRecorder()
    trainer = quiet_trainer(max_epochs=epochs, accelerator="cpu", callbacks=[monitor, recorder], precision=precision)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=DigitsDataModule(batch_size=64, split_seed=0))
    return {
        "lr": lr,
        "seed": seed,
        "lambda": monitor.exponent,
        "lambda_mean_estimator": monitor.twin.mean_exponent,
        "epoch_lambda": monitor.epoch_exponents,
        "steps_per_epoch": trainer.num_training_batches,
        "restarts": monitor.twin.restarts,
        "curves": recorder.rows,
        "seconds": time.perf_counter() - start,
    }


def interval(values: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, standard deviation (ddof 1) and the two-sided t-interval of the mean over the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, math.nan, math.nan
    mean = statistics.fmean(finite)
    if len(finite) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = statistics.stdev(finite)
    half = float(stats.t.ppf(0.5 + level / 2, len(finite) - 1)) * sd / math.sqrt(len(finite))
    return mean, sd, mean - half, mean + half


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.pstdev(finite) if len(finite) > 1 else 0.0


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for lr in sorted({r["lr"] for r in results}):
        runs = [r for r in results if r["lr"] == lr]
        final_acc = [r["curves"][-1].get("val_acc", math.nan) if r["curves"] else math.nan for r in runs]
        final_loss = [r["curves"][-1].get("train_loss", math.nan) if r["curves"] else math.nan for r in runs]
        lam, lam_sd, lam_lo, lam_hi = interval([r["lambda"] for r in runs])
        late = [_late_mean(r["epoch_lambda"]) for r in runs]
        late_mean, late_sd, _, _ = interval(late)
        acc_mean, acc_sd, _, _ = interval(final_acc)
        rows.append(
            {
                "lr": lr,
                "seeds": [r["seed"] for r in runs],
                "lambda": lam,
                "lambda_std": lam_sd,
                "lambda_ci": (lam_lo, lam_hi),
                "lambda_runs": [r["lambda"] for r in runs],
                "lambda_per_epoch": lam * runs[0]["steps_per_epoch"],
                "lambda_late": late_mean,
                "lambda_late_std": late_sd,
                "val_acc": acc_mean,
                "val_acc_std": acc_sd,
                "train_loss": _mean_std(final_loss)[0],
                "diverged": sum(not math.isfinite(v) for v in final_loss),
                "restarts": sum(r["restarts"] - 1 for r in runs),
            }
        )
    return rows


def _late_mean(epoch_lambda: list[float]) -> float:
    values = [v for v in epoch_lambda[len(epoch_lambda) // 2 :] if math.isfinite(v)]
    return statistics.fmean(values) if values else math.nan


def edge_of_chaos(rows: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Where lambda crosses 0 upwards with confidence: ``(lr, below, above)``; NaNs if it never does.

    ``lr`` interpolates (log-linearly in the learning rate) between the two neighbouring learning rates whose mean
    lambda changes sign from <= 0 to > 0; the crossing counts only if some learning rate at or below the pair has a
    95% interval entirely below 0 (``below``, the largest such) and some learning rate at or above it an interval
    entirely above 0 (``above``, the smallest such).
    """
    for i, (a, b) in enumerate(itertools.pairwise(rows)):
        if not a["lambda"] <= 0 < b["lambda"]:
            continue
        below = [r["lr"] for r in rows[: i + 1] if r["lambda_ci"][1] < 0]
        above = [r["lr"] for r in rows[i + 1 :] if r["lambda_ci"][0] > 0]
        if below and above:
            t = -a["lambda"] / (b["lambda"] - a["lambda"])
            lr = math.exp(math.log(a["lr"]) + t * (math.log(b["lr"]) - math.log(a["lr"])))
            return lr, max(below), min(above)
    return math.nan, math.nan, math.nan


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
    half = [(r["lambda_ci"][1] - r["lambda_ci"][0]) / 2 for r in rows]
    ax.errorbar(lrs, [r["lambda"] for r in rows], yerr=half, marker="o", color="C3")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="learning rate", ylabel="lambda per step (mean, 95% t-interval over seeds), symlog")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title("max Lyapunov exponent vs learning rate")
    twin = ax.twinx()
    twin.plot(lrs, [r["val_acc"] for r in rows], marker="s", color="C0", ls="--")
    twin.set_ylabel("final validation accuracy (%)", color="C0")
    edge = edge_of_chaos(rows)[0]
    if math.isfinite(edge):
        ax.axvline(edge, color="C3", ls=":", label=f"lambda = 0 at lr ~ {edge:.2g}")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--d0", type=float, default=DEFAULT_D0)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument(
        "--precision", choices=("32-true", "64-true"), default="32-true", help="64-true: float64 rounding check"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/lyapunov_sweep"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.model}_m{args.momentum:g}_d0{args.d0:g}_e{args.epochs}" + (
        "_f64" if args.precision == "64-true" else ""
    )
    cache = args.out / f"runs_{tag}.json"
    results: list[dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else []
    done = {(r["lr"], r["seed"]) for r in results}
    for lr in args.lrs:
        for seed in args.seeds:
            if (lr, seed) in done:
                continue
            results.append(run(lr, seed, args.epochs, args.d0, args.model, args.momentum, args.precision))
            cache.write_text(json.dumps(results))
            r = results[-1]
            acc = r["curves"][-1].get("val_acc", math.nan) if r["curves"] else math.nan
            print(
                f"lr={lr:<6g} seed={seed} lambda={r['lambda']:+.5f} val_acc={acc:.1f} ({r['seconds']:.1f} s)",
                flush=True,
            )
    results = [r for r in results if r["lr"] in args.lrs and r["seed"] in args.seeds]
    rows = summarize(results)
    print(
        f"\n{args.model}, SGD momentum {args.momentum:g}, {args.epochs} epochs, seeds {args.seeds}, d0={args.d0:g}, "
        f"precision {args.precision}; "
        f"lambda per optimizer step (x {results[0]['steps_per_epoch']} steps per epoch = per epoch)"
    )
    print(
        f"{'lr':>6}  {'lambda/step mean ± sd':>22}  {'95% interval':>21}  {'2nd half ± sd':>19}  "
        f"{'val acc %':>15}  {'train loss':>10}  diverged"
    )
    for row in rows:
        lo, hi = row["lambda_ci"]
        print(
            f"{row['lr']:>6g}  {row['lambda']:>+11.5f} ± {row['lambda_std']:.5f}  [{lo:+.5f}, {hi:+.5f}]  "
            f"{row['lambda_late']:>+9.5f} ± {row['lambda_late_std']:.5f}  "
            f"{row['val_acc']:>7.2f} ± {row['val_acc_std']:5.2f}  {row['train_loss']:>10.4f}  {row['diverged']}"
        )
    edge, below, above = edge_of_chaos(rows)
    finite = [row for row in rows if math.isfinite(row["val_acc"])]
    best = max(finite, key=lambda row: row["val_acc"]) if finite else None
    if math.isfinite(edge):
        print(
            f"\nedge of chaos: lambda crosses 0 upwards at lr ~ {edge:.3g} (interpolated); 95% intervals below 0 at "
            f"lr {below:g}, above 0 at lr {above:g}"
        )
    else:
        print("\nedge of chaos: lambda does not cross 0 upwards with 95% intervals off 0 on both sides")
    if best is not None:
        print(f"best learning rate of the sweep (final val acc): {best['lr']:g} ({best['val_acc']:.2f}%)")
    summary = args.out / f"summary_{tag}.json"
    summary.write_text(
        json.dumps({"rows": rows, "edge_of_chaos": (edge, below, above), "args": vars(args) | {"out": str(args.out)}})
    )
    png = args.out / f"lyapunov_sweep_{tag}.png"
    plot(results, rows, png)
    print(f"figure: {png}; summary: {summary}")


if __name__ == "__main__":
    main()
