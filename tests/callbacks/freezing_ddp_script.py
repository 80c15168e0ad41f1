"""Train TinyModule with DynamicsMonitor + DynamicsLayerFreezing on 2 CPU processes (gloo); save each rank's decisions.

Run by tests/callbacks/test_freezing.py as ``python freezing_ddp_script.py OUT_DIR``. The ranks' proposals are
made to differ (RankSkewedFreezer), so only the callback's broadcast from rank 0 makes them agree.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.callbacks.freezing import DynamicsLayerFreezing
from lightning_dynamics.decisions.freezing import LayerFreezer
from tests.helpers import TinyModule, random_classification


class RankSkewedFreezer(LayerFreezer):
    """From the 20th point on, rank 0 proposes freezing the first layer and rank 1 all but the head: only the
    broadcast of rank 0's decision keeps the ranks together (the real histories are identical on both)."""

    rank = 0

    def decide(self, values: torch.Tensor) -> int:
        proposed = super().decide(values)
        if values.shape[-1] < 20:
            return proposed
        return max(proposed, 1) if self.rank == 0 else len(self.layer_names) - 1


class SnapshotAtFreeze(pl.Callback):
    """The frozen parameters right after the first freeze, to check that nothing (DDP, the optimizer) moves them."""

    def __init__(self, freezing: DynamicsLayerFreezing) -> None:
        self.freezing = freezing
        self.snapshot: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.snapshot and self.freezing.n_frozen:
            frozen = set(self.freezing.freezer.frozen_parameter_names())
            self.snapshot = {n: p.detach().clone() for n, p in pl_module.named_parameters() if n in frozen}


def main(out_dir: str) -> None:
    pl.seed_everything(0)

    class Data(pl.LightningDataModule):
        def train_dataloader(self) -> DataLoader:
            data = random_classification(64)
            sampler = DistributedSampler(data, self.trainer.world_size, self.trainer.global_rank, shuffle=False)
            return DataLoader(data, batch_size=8, sampler=sampler)

    freezing = DynamicsLayerFreezing(window=8, lag=2, patience=2, verbose=False)
    freezing.freezer.__class__ = RankSkewedFreezer
    snapshot = SnapshotAtFreeze(freezing)
    trainer = pl.Trainer(
        max_epochs=8,
        accelerator="cpu",
        devices=2,
        strategy="ddp_find_unused_parameters_true",
        logger=False,
        callbacks=[
            DynamicsMonitor(
                points_per_epoch=4,
                null_surrogates=None,
                compute_phase_integration=False,
                verbose=False,
                log_dashboard=False,
            ),
            freezing,
            snapshot,
        ],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        use_distributed_sampler=False,
    )
    RankSkewedFreezer.rank = trainer.global_rank
    module = TinyModule()
    trainer.fit(module, datamodule=Data())
    state = {
        "events": [vars(e) for e in freezing.freezer.events],
        "params": {n: p.detach().clone() for n, p in module.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in module.named_parameters()},
        "snapshot": snapshot.snapshot,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
