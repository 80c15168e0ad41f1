"""A Trainer for benchmarks and examples: no logger, checkpoints, progress bar or sanity check."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


def quiet_trainer(**overrides: Any) -> pl.Trainer:
    """``pl.Trainer`` on one device with nothing written or printed per step; ``overrides`` win."""
    options: dict[str, Any] = dict(
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(overrides)
    return pl.Trainer(**options)
