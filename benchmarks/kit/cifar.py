"""CIFAR-10 and CIFAR-100 from torchvision's on-disk layout, never downloaded.

The files are the python pickles of Krizhevsky, "Learning Multiple Layers of Features from Tiny Images"
(2009), as torchvision's ``CIFAR10``/``CIFAR100`` unpack them under ``root``:
``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}`` (each a pickle of a dict with ``b"data"`` ``[N, 3072]`` uint8 and
``b"labels"`` or ``b"fine_labels"``). They are read directly (no checksum, so a subset in the same format
works too).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

#: Per-dataset folder, training files, test files and label key.
CIFAR_LAYOUT: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], bytes]] = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels"),
    "cifar100": ("cifar-100-python", ("train",), ("test",), b"fine_labels"),
}
_MEAN = (0.4914, 0.4822, 0.4465)
_STD = (0.2470, 0.2435, 0.2616)


def read_cifar(root: str | Path, name: str = "cifar10", train: bool = True) -> tuple[Tensor, Tensor]:
    """Images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` from torchvision's CIFAR folder under ``root``.

    Raises:
        FileNotFoundError: naming every missing file and where to put it.
    """
    if name not in CIFAR_LAYOUT:
        raise ValueError(f"`name` must be one of {tuple(CIFAR_LAYOUT)}, got {name!r}.")
    folder, train_files, test_files, label_key = CIFAR_LAYOUT[name]
    files = [Path(root) / folder / f for f in (train_files if train else test_files)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        url = f"https://www.cs.toronto.edu/~kriz/{'cifar-10' if name == 'cifar10' else 'cifar-100'}-python.tar.gz"
        raise FileNotFoundError(
            f"{name} not found under root={str(root)!r}: missing {missing}. Nothing is downloaded: extract {url} "
            f"(or run torchvision.datasets.{'CIFAR10' if name == 'cifar10' else 'CIFAR100'}(root, download=True) on "
            f"a machine with network access) so that {Path(root) / folder} holds {[*train_files, *test_files]}."
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    for path in files:
        with open(path, "rb") as handle:
            entry: dict[bytes, Any] = pickle.load(handle, encoding="bytes")
        images.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(y) for y in entry[label_key])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)


class _ImageDataset(Dataset):
    """uint8 images normalised per channel, with optional random crop (padding 4) and horizontal flip."""

    def __init__(self, images: Tensor, labels: Tensor, augment: bool) -> None:
        self.images = images
        self.labels = labels
        self.augment = augment
        self.mean = torch.tensor(_MEAN).view(3, 1, 1)
        self.std = torch.tensor(_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = (self.images[index].float() / 255.0 - self.mean) / self.std
        if self.augment:
            padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
            top, left = (int(v) for v in torch.randint(0, 9, (2,)))
            x = padded[:, top : top + 32, left : left + 32]
            if bool(torch.rand(()) < 0.5):
                x = x.flip(-1)
        return x, self.labels[index]


class CIFARDataModule(pl.LightningDataModule):
    """CIFAR-10 or CIFAR-100 (train / test split) from disk, normalised, with the standard augmentation.

    Args:
        root: the folder holding ``cifar-10-batches-py`` or ``cifar-100-python`` (torchvision's ``root``).
        name: ``"cifar10"`` or ``"cifar100"``.
        batch_size: training batch size (validation uses 512).
        augment: random crop with 4-pixel padding and horizontal flip on the training set.
        num_workers: DataLoader workers.
        limit_train: keep only the first ``limit_train`` training images (quick runs); None keeps all.

    Example:
        >>> CIFARDataModule("/nonexistent", "cifar100").setup()  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: cifar100 not found under root='/nonexistent': ...
    """

    def __init__(
        self,
        root: str | Path,
        name: str = "cifar10",
        batch_size: int = 128,
        augment: bool = True,
        num_workers: int = 0,
        limit_train: int | None = None,
    ) -> None:
        super().__init__()
        if name not in CIFAR_LAYOUT:
            raise ValueError(f"`name` must be one of {tuple(CIFAR_LAYOUT)}, got {name!r}.")
        self.root = Path(root)
        self.dataset = name
        self.num_classes = 10 if name == "cifar10" else 100
        self.batch_size = batch_size
        self.augment = augment
        self.num_workers = num_workers
        self.limit_train = limit_train
        self.train_set: _ImageDataset | None = None
        self.val_set: _ImageDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        train_x, train_y = read_cifar(self.root, self.dataset, train=True)
        if self.limit_train is not None:
            train_x, train_y = train_x[: self.limit_train], train_y[: self.limit_train]
        val_x, val_y = read_cifar(self.root, self.dataset, train=False)
        self.train_set = _ImageDataset(train_x, train_y, self.augment)
        self.val_set = _ImageDataset(val_x, val_y, augment=False)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=512, num_workers=self.num_workers)
