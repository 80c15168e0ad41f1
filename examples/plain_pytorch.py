"""The measures in a plain PyTorch training loop, without Lightning: ``DynamicsTracker``.

Run: ``.venv/bin/python examples/plain_pytorch.py [--epochs 30] [--out runs/plain]``.
Data: scikit-learn's ``load_digits`` (1797 real 8x8 images), no download.

Four lines of the loop belong to the tracker: ``attach``, ``sample`` at the end of each epoch, ``save`` and
``detach``. It records the model's forward calls in training mode; the validation pass (eval mode) is not
recorded.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_dynamics import DynamicsTracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the experiment kit: benchmarks/kit
from benchmarks.kit import DigitsDataModule, SmallCNN


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

    tracker = DynamicsTracker().attach(model)  # 1: hooks on the compute layers
    tracker.claim_history_path(out)
    rows = []
    step = 0
    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x).argmax(-1) == y).sum()) for x, y in val_loader)
        val_acc = 100.0 * correct / len(data.val_set)
        values = tracker.sample(epoch=epoch, step=step, logged={"val_acc": val_acc})  # 2: one sample point
        rows.append({"epoch": epoch, "val_acc": val_acc, **values})
    tracker.save()  # 3: the history file (values, every measure, val_acc)
    tracker.detach()  # 4: hooks removed
    return tracker, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/plain"))
    args = parser.parse_args()
    tracker, rows = train(args.epochs, args.out)
    keys = ("val_acc", "integration", "metastability", "stability_index", "stability_volatility")
    print("epoch  " + "  ".join(f"{k:>20}" for k in keys))
    for row in rows[-8:]:
        cells = ("nan" if math.isnan(row[k]) else f"{row[k]:.4f}" for k in keys)
        print(f"{row['epoch']:5d}  " + "  ".join(f"{c:>20}" for c in cells))
    print(f"\nlayers: {tracker.layer_names}\nhistory: {tracker.history_path}")


if __name__ == "__main__":
    main()
