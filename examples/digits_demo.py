"""Main demo: train a small CNN on real handwritten digits with DynamicsMonitor and show what it logged.

Run: ``.venv/bin/python examples/digits_demo.py [--epochs 40] [--out runs/digits_demo]``.
Data: scikit-learn's ``load_digits`` (1797 real 8x8 images), shipped with scikit-learn, no download.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.report import epoch_metrics, read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiment kit: benchmarks/kit
from benchmarks.kit import DigitsDataModule, ImageClassifier, SmallCNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/digits_demo"))
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    logger = CSVLogger(args.out, name="")
    monitor = DynamicsMonitor()  # the one line: layers="auto", one sample point per epoch
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=[monitor],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ImageClassifier(SmallCNN(), lr=0.02), DigitsDataModule(batch_size=64))

    per_epoch = epoch_metrics(read_metrics(logger.log_dir))
    keys = [
        "val_acc",
        "dynamics/integration",
        "dynamics/metastability",
        "dynamics/stability_index",
        "dynamics/stability_volatility",
    ]
    print("\nLast epochs (dynamics keys appear once enough epochs exist):")
    print(per_epoch[[k for k in keys if k in per_epoch]].tail(8).to_string(float_format=lambda v: f"{v:.4f}"))
    # The monitor drew the run's one dashboard beside its history at fit end (`lightning-dynamics report` redraws it).
    from lightning_dynamics.callbacks.sinks import dashboard_png_path

    figure = dashboard_png_path(monitor.history_path) if monitor.history_path is not None else None
    figure = figure if figure is not None and figure.is_file() else None
    print(f"\nlayers watched   : {len(monitor.layer_names)} ({', '.join(monitor.layer_names)})")
    print(f"metrics (CSV)    : {Path(logger.log_dir) / 'metrics.csv'}")
    print(f"history [L, T]   : {monitor.history_path}  (load with lightning_dynamics.capture.load_history)")
    if figure is not None:
        print(f"figure           : {figure}")


if __name__ == "__main__":
    main()
