"""Train TinyModule with DynamicsMonitor + DynamicsDiagnosis on 2 CPU processes (gloo); save each rank's findings.

Run by tests/callbacks/test_diagnosis.py as ``python diagnosis_ddp_script.py OUT_DIR SCENARIO``:

- ``nan``: from epoch 1 on, only rank 1's inputs hold a NaN; ``stop_on=["nonfinite"]``. The epoch's numbers are
  summed across the ranks before the rules run, so rank 0, whose own data is clean, names it too.
- ``scripted``: from epoch 2 on, only rank 1's diagnoser says stop (a scripted ``should_stop``); the stop must
  still reach rank 0 (``reduce_boolean_decision``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_dynamics import DynamicsDiagnosis, DynamicsMonitor
from tests.helpers import TinyModule, random_classification


class NanOnRankOne(TinyModule):
    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_rank == 1 and self.current_epoch >= 1:
            x = x.clone()
            x[0, 0] = float("nan")
        return super().training_step((x, y), batch_idx)


def main(out_dir: str, scenario: str) -> None:
    pl.seed_everything(0)
    torch.set_num_threads(1)
    monitor = DynamicsMonitor(points_per_epoch=2, null_surrogates=None, verbose=False, log_dashboard=False)
    diagnosis = DynamicsDiagnosis(stop_on=["nonfinite"])
    module = NanOnRankOne() if scenario == "nan" else TinyModule()
    trainer = pl.Trainer(
        max_epochs=5,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        callbacks=[monitor, diagnosis],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out_dir,
    )
    if scenario == "scripted":
        original = diagnosis.diagnoser.should_stop

        def should_stop():
            if trainer.global_rank == 1 and trainer.current_epoch >= 2:
                return True, "scripted stop on rank 1"
            return original()

        diagnosis.diagnoser.should_stop = should_stop
    trainer.fit(module, DataLoader(random_classification(64), batch_size=8))
    torch.save(
        {
            "findings": [f.to_dict() for f in diagnosis.findings],
            "stopped_epoch": diagnosis.stopped_epoch,
            "stop_reason": diagnosis.stop_reason,
            "current_epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "findings_path": None if diagnosis.findings_path is None else str(diagnosis.findings_path),
        },
        Path(out_dir) / f"{scenario}_rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
