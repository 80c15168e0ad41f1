"""Train TinyModule with LyapunovMonitor on 1 or 2 CPU processes and save each rank's estimate.

Run by tests/callbacks/test_lyapunov.py as ``python lyapunov_ddp_script.py OUT_DIR DEVICES``; Lightning's DDP
launcher re-runs this script for the other rank.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lightning_dynamics.callbacks import LyapunovMonitor
from tests.helpers import TinyModule, random_classification


def main(out_dir: str, devices: int) -> None:
    pl.seed_everything(0)
    # float64: in float32 the summation order of DDP's averaged gradients alone moves the weights by ~1e-7
    # relative, a tenth of d0; the comparison with one process would measure rounding, not the averaging.
    torch.set_default_dtype(torch.float64)
    global_batch = 16

    class Data(pl.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            # Interleave in order, so the two ranks' batches together are exactly the single process's batch.
            data = random_classification(64)
            sampler = DistributedSampler(data, self.trainer.world_size, self.trainer.global_rank, shuffle=False)
            return DataLoader(data, batch_size=global_batch // devices, sampler=sampler)

    monitor = LyapunovMonitor(renorm_every=2)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        callbacks=[monitor],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        use_distributed_sampler=False,
    )
    trainer.fit(TinyModule(lr=0.5), datamodule=Data())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "log_growth": monitor.twin.log_growth,
        "logged": float(trainer.callback_metrics["dynamics/lyapunov"]),
    }
    torch.save(state, out / f"devices{devices}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
