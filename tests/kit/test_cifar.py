"""CIFAR-10/100 from a tiny directory in torchvision's real on-disk pickle layout."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.kit import CIFARDataModule, read_cifar


def _write(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(entry, handle)


def _batch(n: int, classes: int, label_key: bytes, seed: int) -> tuple[dict, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, n)]
    return {b"batch_label": b"tiny", label_key: labels, b"data": data, b"filenames": [b"x.png"] * n}, data, labels


def make_cifar10(root: Path, per_batch: int = 4) -> tuple[np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    all_data, all_labels = [], []
    for i in range(1, 6):
        entry, data, labels = _batch(per_batch, 10, b"labels", i)
        _write(folder / f"data_batch_{i}", entry)
        all_data.append(data)
        all_labels += labels
    _write(folder / "test_batch", _batch(3, 10, b"labels", 99)[0])
    _write(folder / "batches.meta", {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch})
    return np.concatenate(all_data), all_labels


def make_cifar100(root: Path) -> tuple[np.ndarray, list[int]]:
    folder = root / "cifar-100-python"
    entry, data, labels = _batch(6, 100, b"fine_labels", 1)
    entry[b"coarse_labels"] = [y // 5 for y in labels]
    _write(folder / "train", entry)
    _write(folder / "test", {**_batch(2, 100, b"fine_labels", 2)[0], b"coarse_labels": [0, 0]})
    _write(folder / "meta", {b"fine_label_names": [b"apple"] * 100, b"coarse_label_names": [b"fish"] * 20})
    return data, labels


def test_cifar10_reads_every_training_batch_in_order(tmp_path: Path) -> None:
    data, labels = make_cifar10(tmp_path)
    images, targets = read_cifar(tmp_path, "cifar10", train=True)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert targets.tolist() == labels
    # channel-major rows: the first 1024 bytes are the red plane
    torch.testing.assert_close(images[0, 0].flatten(), torch.from_numpy(data[0, :1024]))
    test_images, _ = read_cifar(tmp_path, "cifar10", train=False)
    assert test_images.shape == (3, 3, 32, 32)


def test_cifar100_datamodule_normalises_and_augments(tmp_path: Path) -> None:
    data, labels = make_cifar100(tmp_path)
    module = CIFARDataModule(tmp_path, "cifar100", batch_size=4, augment=False)
    module.setup()
    assert module.num_classes == 100
    x, y = next(iter(module.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and set(y.tolist()) <= set(labels)
    plain = module.train_set[0][0]
    expected = (
        torch.from_numpy(data[0]).view(3, 32, 32).float() / 255 - torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    ) / torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    torch.testing.assert_close(plain, expected)
    augmented = CIFARDataModule(tmp_path, "cifar100", augment=True)
    augmented.setup()
    torch.manual_seed(0)
    crops = torch.stack([augmented.train_set[0][0] for _ in range(8)])
    assert crops.shape == (8, 3, 32, 32) and not all(torch.equal(c, plain) for c in crops)
    assert len(module.val_set) == 2 and not module.val_set.augment


def test_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3.*cifar-10-python\.tar\.gz.*cifar-10-batches-py"):
        CIFARDataModule(tmp_path, "cifar10").setup()
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        read_cifar(tmp_path, "cifar100")
    with pytest.raises(ValueError, match="`name` must be one of"):
        CIFARDataModule(tmp_path, "cifar1000")
