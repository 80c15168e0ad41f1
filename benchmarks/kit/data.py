"""Real data that ships offline: scikit-learn's handwritten digits (1797 8x8 images, 10 classes) and digit pairs."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn ``load_digits`` as ``[N, 1, 8, 8]`` float images in ``[0, 1]``, stratified split.

    Args:
        batch_size: training and validation batch size.
        val_fraction: share of images held out for validation (stratified by class, fixed by ``split_seed``).
        split_seed: seed of the split, independent of the training seed.
        num_workers: DataLoader workers.
        shuffle: shuffle the training set each epoch.
        width: 8 (the images as they are) or 16 (zero-padded on the right to ``[1, 8, 16]``, the width of a
            digit pair: the same 10-class task at the pairs' input width).
        test_fraction: share of images held out as a test set (stratified, disjoint from training and
            validation; ``test_set`` is None at 0). The validation split then drives stopping and checkpoint
            choice and the test split measures the result.

    Example:
        >>> data = DigitsDataModule(width=16, test_fraction=0.2)
        >>> data.setup()
        >>> tuple(data.train_set.tensors[0].shape[1:]), len(data.train_set), len(data.val_set), len(data.test_set)
        ((1, 8, 16), 988, 450, 359)
    """

    num_classes = 10

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.25,
        split_seed: int = 0,
        num_workers: int = 0,
        shuffle: bool = True,
        width: int = 8,
        test_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction!r}.")
        if not 0.0 <= test_fraction < 1.0 - val_fraction:
            raise ValueError(f"`test_fraction` must be in [0, 1 - val_fraction), got {test_fraction!r}.")
        if width not in (8, 16):
            raise ValueError(f"`width` must be 8 or 16, got {width!r}.")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.width = width
        self.test_fraction = test_fraction
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        train_x, train_y, val_x, val_y, test_x, test_y = _digits_split3(
            self.val_fraction, self.test_fraction, self.split_seed
        )
        pad = (0, self.width - 8)  # zeros on the right: the digit sits where a pair's left digit sits
        self.train_set = TensorDataset(_zero_pad(train_x, pad), train_y)
        self.val_set = TensorDataset(_zero_pad(val_x, pad), val_y)
        if self.test_fraction > 0:
            self.test_set = TensorDataset(_zero_pad(test_x, pad), test_y)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=self.shuffle, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=256, num_workers=self.num_workers)


def _zero_pad(x: Tensor, pad: tuple[int, int]) -> Tensor:
    """Zero-pad the last dimension (a no-op for ``(0, 0)``)."""
    return torch.nn.functional.pad(x, pad) if any(pad) else x


def _digits_split(val_fraction: float, split_seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Digits images ``[N, 1, 8, 8]`` in ``[0, 1]`` and labels, split per class: (train x, train y, val x, val y)."""
    return _digits_split3(val_fraction, 0.0, split_seed)[:4]


def _digits_split3(
    val_fraction: float, test_fraction: float, split_seed: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Digits split per class into train, validation and test (empty at ``test_fraction=0``): x and y of each.

    The validation indices are those of :func:`_digits_split` whatever ``test_fraction`` is (the test images
    are drawn after them from the rest), so adding a test split leaves the validation set unchanged.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    rng = np.random.default_rng(split_seed)
    val_index: list[int] = []
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        val_index.extend(rng.choice(members, round(len(members) * val_fraction), replace=False))
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val_index] = True
    is_test = np.zeros(len(labels), dtype=bool)
    if test_fraction > 0:
        test_rng = np.random.default_rng(split_seed + 10_000)
        for label in range(10):
            members = np.flatnonzero((digits.target == label) & ~is_val)
            count = round(np.sum(digits.target == label) * test_fraction)
            is_test[test_rng.choice(members, count, replace=False)] = True
    train = torch.from_numpy(~is_val & ~is_test)
    val, test = torch.from_numpy(is_val), torch.from_numpy(is_test)
    return images[train], labels[train], images[val], labels[val], images[test], labels[test]


def _pairs(images: Tensor, labels: Tensor, n: int, rng: np.random.Generator, width: int = 16) -> tuple[Tensor, Tensor]:
    """``n`` images ``[n, 1, 8, width]``: two digits side by side, label ``10 * left + right``, classes balanced.

    At ``width=8`` each digit is first halved in width (the mean of adjacent pixel columns, ``8x8 -> 8x4``).
    """
    by_class = [np.flatnonzero(labels.numpy() == c) for c in range(10)]
    pair_labels = np.resize(np.arange(100), n)
    rng.shuffle(pair_labels)
    left = np.array([rng.choice(by_class[y // 10]) for y in pair_labels])
    right = np.array([rng.choice(by_class[y % 10]) for y in pair_labels])
    halves = [images[torch.from_numpy(left)], images[torch.from_numpy(right)]]
    if width == 8:
        halves = [h.unflatten(-1, (4, 2)).mean(-1) for h in halves]
    pictures = torch.cat(halves, dim=-1)
    return pictures, torch.from_numpy(pair_labels).long()


class DigitPairsDataModule(pl.LightningDataModule):
    """A 100-class task from the same real digit images: two digits side by side, label ``10 * left + right``.

    The offline stand-in for CIFAR-100 next to :class:`DigitsDataModule` for CIFAR-10. CIFAR-100 differs
    from CIFAR-10 by having the same kind of images and the same number of training images spread over 10x
    the classes (500 instead of 5000 per class). Here every picture is made of the digit images themselves
    (so pixel statistics, strokes and noise are those of the 10-class task), there are 10x the classes, and by
    default as many training pictures as the digits task has images, i.e. 10x fewer per class (about 13).
    Left and right digits of a training picture come only from the digits' training split and those of a
    validation picture only from its validation split, so no digit image is shared between the two.
    What differs: pictures are ``[1, 8, 16]`` (twice as wide), and the classes have a product structure
    (a network can solve it by recognising each half), which CIFAR-100's classes do not have. ``width=8``
    removes the first difference: each digit is halved in width (adjacent pixel columns averaged, 8x8 -> 8x4)
    and the pair is an 8x8 picture, the digits task's input size.

    Args:
        n_train: training pictures (default: as many as the digits training split, 1347).
        n_val: validation pictures.
        batch_size, val_fraction, split_seed, num_workers, shuffle: as :class:`DigitsDataModule`; the digits
            split is the same for the same ``val_fraction`` and ``split_seed``.
        width: 16 (two 8x8 digits side by side) or 8 (two digits halved in width).

    Example:
        >>> data = DigitPairsDataModule(n_val=200)
        >>> data.setup()
        >>> x, y = data.train_set.tensors
        >>> tuple(x.shape), int(y.max()) < 100, len(data.val_set)
        ((1347, 1, 8, 16), True, 200)
    """

    num_classes = 100

    def __init__(
        self,
        n_train: int | None = None,
        n_val: int = 1000,
        batch_size: int = 64,
        val_fraction: float = 0.25,
        split_seed: int = 0,
        num_workers: int = 0,
        shuffle: bool = True,
        width: int = 16,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction!r}.")
        if width not in (8, 16):
            raise ValueError(f"`width` must be 8 or 16, got {width!r}.")
        self.width = width
        for name, value in (("n_train", n_train), ("n_val", n_val)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        self.n_train = n_train
        self.n_val = n_val
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        train_x, train_y, val_x, val_y = _digits_split(self.val_fraction, self.split_seed)
        rng = np.random.default_rng(self.split_seed + 1)
        n_train = len(train_y) if self.n_train is None else self.n_train
        self.train_set = TensorDataset(*_pairs(train_x, train_y, n_train, rng, self.width))
        self.val_set = TensorDataset(*_pairs(val_x, val_y, self.n_val, rng, self.width))

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=self.shuffle, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        return DataLoader(self.val_set, batch_size=256, num_workers=self.num_workers)
