"""Main demo: train a small CNN on real handwritten digits with DynamicsMonitor and read what it says.

Run: ``python examples/digits_demo.py [--epochs 40] [--lr 0.02] [--out runs/digits_demo]``.
Data: scikit-learn's ``load_digits`` (1797 real 8x8 images), shipped with scikit-learn, no download. Needs only an
installed ``lightning-dynamics[examples]``: the task lives beside this file (``digits.py``).

Try ``--lr 0.4`` (20x the learning rate) and compare what the relative change says with the default run.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import lightning.pytorch as pl
from digits import DigitsDataModule, ImageClassifier, SmallCNN
from lightning.pytorch.loggers import CSVLogger

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.report import epoch_metrics, read_metrics, relative_change_reading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/digits_demo"))
    args = parser.parse_args()

    pl.seed_everything(args.seed, verbose=False)
    logger = CSVLogger(args.out, name="")
    # The one line: layers="auto", 32 sample points per epoch, the measures and noise floors at each epoch's end.
    monitor = DynamicsMonitor()
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(ImageClassifier(SmallCNN(), lr=args.lr), DigitsDataModule(batch_size=64))

    per_epoch = epoch_metrics(read_metrics(logger.log_dir))
    change = "dynamics/relative_change"
    print("\nThe key to watch, dynamics/relative_change: each layer's recent change over its change in the first")
    print("half of the run (median over layers), beside its noise floor [lo, hi] and validation accuracy.\n")
    print(f"{'epoch':>5}  {'val_acc':>7}  {'relative_change':>15}  {'noise floor':>17}")
    for epoch, row in per_epoch.tail(10).iterrows():
        value = row.get(change, math.nan)
        lo, hi = row.get(f"{change}_null_lo", math.nan), row.get(f"{change}_null_hi", math.nan)
        band = f"[{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else "-"
        print(f"{int(epoch):>5}  {row.get('val_acc', math.nan):>7.2f}  {value:>15.4g}  {band:>17}")
    last = per_epoch[change].dropna() if change in per_epoch else None
    if last is not None and len(last):
        print(f"\nWhat it says at the end: {relative_change_reading(float(last.iloc[-1]))[1]}.")
    print("How to read every key, and what to change in training: docs/reading_the_dashboard.md\n")

    from lightning_dynamics.callbacks.sinks import dashboard_png_path

    figure = dashboard_png_path(monitor.history_path) if monitor.history_path is not None else None
    print(f"layers watched : {len(monitor.layer_names)} ({', '.join(monitor.layer_names)})")
    print(f"metrics (CSV)  : {Path(logger.log_dir) / 'metrics.csv'}")
    print(f"history [L, T] : {monitor.history_path}  (lightning_dynamics.capture.load_history)")
    if figure is not None and figure.is_file():
        print(f"dashboard      : {figure}  (redraw: lightning-dynamics report {Path(logger.log_dir)})")


if __name__ == "__main__":
    main()
