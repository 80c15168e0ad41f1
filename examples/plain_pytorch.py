"""The measures in a plain PyTorch training loop, without Lightning: ``DynamicsTracker``.

Run: ``python examples/plain_pytorch.py [--epochs 30] [--out runs/plain]``.
Data: scikit-learn's ``load_digits`` (1797 real 8x8 images), no download.

Five lines of the loop belong to the tracker: ``begin_fit``, ``epoch_start``, ``batch_end`` (which closes the
epoch's sub-epoch sample points), ``epoch_end`` (the epoch's last point and the measures) and ``end_fit`` (hooks
removed, history saved). It records the model's forward calls in training mode; the validation pass (eval mode) is
not recorded.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from digits import DigitsDataModule, SmallCNN
from torch import nn
from torch.utils.data import DataLoader

from lightning_dynamics import DynamicsTracker


def train(
    epochs: int = 30, out: Path = Path("runs/plain"), seed: int = 0, lr: float = 0.02
) -> tuple[DynamicsTracker, list[dict[str, float]]]:
    """Train a small CNN on digits with a DynamicsTracker; return the tracker and the per-epoch values."""
    torch.manual_seed(seed)
    data = DigitsDataModule(batch_size=64, shuffle=False)
    data.setup()
    assert data.train_set is not None and data.val_set is not None
    train_loader = DataLoader(data.train_set, batch_size=64, shuffle=False)
    val_loader = DataLoader(data.val_set, batch_size=256)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    tracker = DynamicsTracker().begin_fit(model, history_dir=out)  # 1: hooks on the compute layers, file claimed
    rows = []
    step = 0
    for epoch in range(epochs):
        tracker.epoch_start(epoch, step, n_batches=len(train_loader))  # 2
        model.train()
        for batch_idx, (x, y) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
            tracker.batch_end(epoch, step, batch_idx, n_batches=len(train_loader))  # 3: sub-epoch sample points
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x).argmax(-1) == y).sum()) for x, y in val_loader)
        val_acc = 100.0 * correct / len(data.val_set)
        point = tracker.epoch_end(epoch, step, logged={"val_acc": val_acc})  # 4: the epoch's measures
        assert point is not None
        rows.append({"epoch": epoch, "val_acc": val_acc, **{k.split("/", 1)[1]: v for k, v in point.values.items()}})
    tracker.end_fit()  # 5: hooks removed, the history file written (values, every measure, val_acc)
    return tracker, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/plain"))
    args = parser.parse_args()
    tracker, rows = train(args.epochs, args.out)
    keys = ("val_acc", "relative_change", "relative_change_null_lo", "relative_change_null_hi")
    print("epoch  " + "  ".join(f"{k:>20}" for k in keys))
    for row in rows[-8:]:
        cells = ("nan" if math.isnan(row.get(k, math.nan)) else f"{row[k]:.4f}" for k in keys)
        print(f"{row['epoch']:5d}  " + "  ".join(f"{c:>20}" for c in cells))
    print(f"\nlayers: {tracker.layer_names}\nhistory: {tracker.history_path}")


if __name__ == "__main__":
    main()
