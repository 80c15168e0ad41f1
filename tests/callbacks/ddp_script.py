"""Train TinyModule with DynamicsMonitor on 1 or 2 CPU processes and save each rank's history.

Run by tests/callbacks/test_ddp.py as ``python ddp_script.py OUT_DIR DEVICES``; Lightning's DDP launcher
re-runs this script for the other rank.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lightning_dynamics import DynamicsEarlyStopping, DynamicsMonitor
from tests.helpers import ScriptedVolatility, TinyModule, random_classification


class CountingMonitor(DynamicsMonitor):
    """Counts the collectives issued while the monitor processes each sample point."""

    COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list", "reduce")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.collectives: list[int] = []

    def on_train_epoch_end(self, trainer, pl_module):  # the epoch's one sample point (points_per_epoch=1)
        count = [0]
        originals = {name: getattr(torch.distributed, name) for name in self.COLLECTIVES}

        def counting(original):
            def wrapper(*args, **kwargs):
                count[0] += 1
                return original(*args, **kwargs)

            return wrapper

        for name, original in originals.items():
            setattr(torch.distributed, name, counting(original))
        try:
            super().on_train_epoch_end(trainer, pl_module)
        finally:
            for name, original in originals.items():
                setattr(torch.distributed, name, original)
        self.collectives.append(count[0])


def main(out_dir: str, devices: int) -> None:
    pl.seed_everything(0)
    global_batch = 16

    class Data(pl.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            # Lightning's automatic DistributedSampler always shuffles training data; interleave in order
            # instead, so the two ranks' batches together are exactly the single process's batch.
            data = random_classification(64)
            sampler = DistributedSampler(data, self.trainer.world_size, self.trainer.global_rank, shuffle=False)
            return DataLoader(data, batch_size=global_batch // devices, sampler=sampler)

    monitor = CountingMonitor(points_per_epoch=1, verbose=False)
    # Early-stopping agreement: only rank 1 sees its (scripted) key drop, at the last epoch; every rank must stop.
    stopper = DynamicsEarlyStopping(monitor="scripted/volatility", patience=1, strict=False)

    class RankScript(ScriptedVolatility):
        def on_train_epoch_end(self, trainer, pl_module):
            self.series = [0.4] * 5 + ([0.01] if trainer.global_rank == 1 else [0.4])
            super().on_train_epoch_end(trainer, pl_module)

    trainer = pl.Trainer(
        max_epochs=6,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        callbacks=[monitor, RankScript([], key="scripted/volatility"), stopper],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        use_distributed_sampler=False,
    )
    trainer.fit(TinyModule(), datamodule=Data())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "values": monitor.history.values.cpu(),
        "metastability": torch.tensor(monitor.metrics["metastability"]),
        "logged": float(trainer.callback_metrics["dynamics/metastability"]),
        "stopped_epoch": stopper.stopped_epoch,
        "collectives": monitor.collectives,
    }
    torch.save(state, out / f"devices{devices}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
