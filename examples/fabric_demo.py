"""The measures in a Lightning Fabric loop: ``DynamicsFabricMonitor`` through ``Fabric(callbacks=[...])``.

Run: ``python examples/fabric_demo.py [--epochs 30] [--out runs/fabric]``.
Data: scikit-learn's ``load_digits`` (1797 real 8x8 images), no download.

Five ``fabric.call`` lines drive the monitor: ``on_train_start``, ``on_train_epoch_start`` (with the epoch's
length), ``on_train_batch_end`` (closes the sub-epoch sample points), ``on_train_epoch_end`` (the epoch's last
point and the measures) and ``on_train_end``.
Values are logged with ``fabric.log_dict`` to Fabric's loggers (here a CSVLogger) and the history is saved in
the logger's directory. Under ``Fabric(strategy="ddp", devices=N)`` the per-layer sums are all-reduced with
``fabric.all_reduce`` in one collective per sample point.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from digits import DigitsDataModule, SmallCNN
from lightning.fabric import Fabric
from lightning.fabric.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_dynamics import DynamicsFabricMonitor


def train(
    epochs: int = 30, out: Path = Path("runs/fabric"), seed: int = 0, lr: float = 0.02
) -> tuple[DynamicsFabricMonitor, Fabric]:
    """Train a small CNN on digits under Fabric with a DynamicsFabricMonitor."""
    monitor = DynamicsFabricMonitor()
    fabric = Fabric(accelerator="cpu", devices=1, callbacks=[monitor], loggers=CSVLogger(out, name="fabric"))
    fabric.seed_everything(seed)
    data = DigitsDataModule(batch_size=64, shuffle=False)
    data.setup()
    assert data.train_set is not None
    train_loader = fabric.setup_dataloaders(
        DataLoader(data.train_set, batch_size=64, shuffle=False), use_distributed_sampler=False
    )
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model, optimizer = fabric.setup(model, optimizer)

    fabric.call("on_train_start", fabric=fabric, model=model)
    step = 0
    for epoch in range(epochs):
        fabric.call("on_train_epoch_start", fabric=fabric, epoch=epoch, step=step, n_batches=len(train_loader))
        model.train()
        for batch_idx, (x, y) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            step += 1
            fabric.call("on_train_batch_end", fabric=fabric, epoch=epoch, step=step, batch_idx=batch_idx)
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, step=step)
    fabric.call("on_train_end", fabric=fabric)
    return monitor, fabric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/fabric"))
    args = parser.parse_args()
    monitor, fabric = train(args.epochs, args.out)
    metrics = monitor.tracker.metrics
    print(f"layers: {monitor.tracker.layer_names}")
    for key in ("relative_change", "relative_change_null_lo", "relative_change_null_hi", "metastability"):
        print(f"{key:>22}: {metrics[key][-1]:.4f}")
    print(f"metrics (CSV): {fabric.logger.log_dir}\nhistory: {monitor.history_path}")


if __name__ == "__main__":
    main()
