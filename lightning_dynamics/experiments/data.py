"""Real data that ships offline: scikit-learn's handwritten digits (1797 8x8 images, 10 classes)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn ``load_digits`` as ``[N, 1, 8, 8]`` float images in ``[0, 1]``, stratified split.

    Args:
        batch_size: training and validation batch size.
        val_fraction: share of images held out for validation (stratified by class, fixed by ``split_seed``).
        split_seed: seed of the split, independent of the training seed.
        num_workers: DataLoader workers.
        shuffle: shuffle the training set each epoch.
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.25,
        split_seed: int = 0,
        num_workers: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction!r}.")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        rng = np.random.default_rng(self.split_seed)
        val_index: list[int] = []
        for label in range(10):
            members = np.flatnonzero(digits.target == label)
            val_index.extend(rng.choice(members, round(len(members) * self.val_fraction), replace=False))
        is_val = np.zeros(len(labels), dtype=bool)
        is_val[val_index] = True
        train, val = torch.from_numpy(~is_val), torch.from_numpy(is_val)
        self.train_set = TensorDataset(images[train], labels[train])
        self.val_set = TensorDataset(images[val], labels[val])

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=self.shuffle, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=256, num_workers=self.num_workers)
