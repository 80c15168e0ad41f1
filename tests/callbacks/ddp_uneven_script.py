"""Two CPU processes (gloo) that run different numbers of batches per epoch: the monitor must fail loudly.

Run by tests/callbacks/test_ddp_uneven.py as ``python ddp_uneven_script.py MODE ROOT_DIR`` with MODE:

* ``sized``: a map-style loader per process, 5 batches on rank 0 and 4 on rank 1 (Lightning's sampler off);
* ``iterable``: iterables of 5 and 4 batches (no length, so only the sample point can notice);
* ``fabric``: the iterable case in a Fabric loop with DynamicsFabricMonitor.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning.pytorch as pl
import torch
from lightning.fabric import Fabric
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, Subset

from lightning_dynamics import DynamicsFabricMonitor, DynamicsMonitor
from tests.helpers import TinyModule, TinyNet, random_classification


class Stream(IterableDataset):
    def __init__(self, n: int) -> None:
        self.n = n
        self.data = random_classification(64)

    def __iter__(self):
        for i in range(self.n):
            yield self.data[i]


def samples(rank: int) -> int:
    return 40 if rank == 0 else 32  # 5 or 4 batches of 8


def trainer_run(mode: str, root: str) -> None:
    class Data(pl.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            n = samples(self.trainer.global_rank)
            data = Subset(random_classification(64), range(n)) if mode == "sized" else Stream(n)
            return DataLoader(data, batch_size=8)

    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        default_root_dir=root,
        logger=False,
        callbacks=[DynamicsMonitor(points_per_epoch=1, verbose=False, ddp_timeout=3.0)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(TinyModule(), datamodule=Data())


def fabric_run(root: str) -> None:
    monitor = DynamicsFabricMonitor(ddp_timeout=3.0, history_dir=root)
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp", callbacks=[monitor])
    fabric.launch()
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)
    loader = DataLoader(Stream(samples(fabric.global_rank)), batch_size=8)
    fabric.call("on_train_start", fabric=fabric, model=model)
    step = 0
    for epoch in range(2):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            step += 1
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, step=step)
    fabric.call("on_train_end", fabric=fabric)


if __name__ == "__main__":
    if sys.argv[1] == "fabric":
        fabric_run(sys.argv[2])
    else:
        trainer_run(sys.argv[1], sys.argv[2])
