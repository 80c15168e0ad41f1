"""The offline tasks (digits, digit pairs) and the image-classification LightningModule."""

import pytest
import torch

from benchmarks.kit import DigitPairsDataModule, DigitsDataModule, ImageClassifier, SmallCNN


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    data = DigitsDataModule()
    data.setup()
    return data


def test_digits_split_is_unchanged(digits: DigitsDataModule) -> None:
    assert len(digits.train_set) == 1347 and len(digits.val_set) == 450
    from sklearn.datasets import load_digits

    per_class = torch.bincount(torch.as_tensor(load_digits().target))
    assert torch.bincount(digits.val_set.tensors[1]).tolist() == [round(int(n) * 0.25) for n in per_class]
    again = DigitsDataModule(split_seed=0)
    again.setup()
    assert torch.equal(again.val_set.tensors[0], digits.val_set.tensors[0])  # fixed by split_seed


def test_pairs_are_two_digits_of_the_same_split(digits: DigitsDataModule) -> None:
    pairs = DigitPairsDataModule(n_val=300)
    pairs.setup()
    x, y = pairs.train_set.tensors
    assert x.shape == (1347, 1, 8, 16) and pairs.num_classes == 100
    counts = torch.bincount(y, minlength=100)
    assert counts.min() >= 13 and counts.max() <= 14  # balanced: 10x fewer per class than digits
    for (images, labels), (source_images, source_labels) in (
        ((x, y), digits.train_set.tensors),
        (pairs.val_set.tensors, digits.val_set.tensors),
    ):
        flat = source_images.flatten(1)
        for half, digit in ((images[..., :8], labels // 10), (images[..., 8:], labels % 10)):
            match = (half.flatten(1)[:, None, :] == flat[None]).all(-1)  # [n, source]
            assert match.any(1).all()  # every half is an image of that split
            found = source_labels[match.float().argmax(1)]
            assert torch.equal(found, digit)


def test_classifier_by_name_with_adamw_and_cosine() -> None:
    module = ImageClassifier(
        "resnet18",
        num_classes=100,
        in_channels=1,
        image_size=(8, 16),
        optimizer="adamw",
        lr=1e-3,
        schedule="cosine",
        max_epochs=4,
        model_kwargs=dict(channels=(4, 4, 4, 4)),
    )
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert module(torch.zeros(3, 1, 8, 16)).shape == (3, 100)


def test_validation_accuracy_is_over_the_whole_set() -> None:
    module = ImageClassifier(SmallCNN(), num_classes=10)
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value.detach()))  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in (7, 3)]
    correct = sum(int((module(x).argmax(-1) == y).sum()) for x, y in batches)
    for i, batch in enumerate(batches):
        module.validation_step(batch, i)
    module.on_validation_epoch_end()
    assert logged["val_acc"] == pytest.approx(100.0 * correct / 10)


def test_module_errors() -> None:
    with pytest.raises(ValueError, match="`optimizer` must be one of"):
        ImageClassifier(SmallCNN(), optimizer="lbfgs")
    with pytest.raises(ValueError, match="`max_epochs` must be a positive integer"):
        ImageClassifier(SmallCNN(), schedule="cosine")
    with pytest.raises(ValueError, match="`n_val` must be a positive integer"):
        DigitPairsDataModule(n_val=0)


def test_digits_width_16_is_the_same_digits_zero_padded_and_the_test_split_is_disjoint() -> None:
    narrow, wide = DigitsDataModule(), DigitsDataModule(width=16, test_fraction=0.2)
    narrow.setup()
    wide.setup()
    assert torch.equal(wide.val_set.tensors[0][..., :8], narrow.val_set.tensors[0])  # same validation images
    assert torch.equal(wide.val_set.tensors[1], narrow.val_set.tensors[1])
    assert not wide.val_set.tensors[0][..., 8:].any()  # zeros on the right
    assert wide.test_set is not None and narrow.test_set is None
    seen = {tuple(x.flatten().tolist()) for x in wide.train_set.tensors[0]}
    seen_val = {tuple(x.flatten().tolist()) for x in wide.val_set.tensors[0]}
    test = [tuple(x.flatten().tolist()) for x in wide.test_set.tensors[0]]
    assert sum(t in seen or t in seen_val for t in test) <= 5  # load_digits holds a few duplicate images
    total = len(wide.train_set) + len(wide.val_set) + len(wide.test_set)
    assert total == 1797 and abs(len(wide.test_set) - 0.2 * 1797) <= 10
    with pytest.raises(ValueError, match="width"):
        DigitsDataModule(width=12)
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.6)


def test_pairs_width_8_halves_each_digit() -> None:
    from benchmarks.kit.data import _digits_split

    wide, narrow = DigitPairsDataModule(n_train=50, n_val=20), DigitPairsDataModule(n_train=50, n_val=20, width=8)
    wide.setup()
    narrow.setup()
    x_wide, y_wide = wide.train_set.tensors
    x_narrow, y_narrow = narrow.train_set.tensors
    assert x_narrow.shape == (50, 1, 8, 8) and torch.equal(y_wide, y_narrow)  # same draws, same labels
    halved = (x_wide[..., 0::2] + x_wide[..., 1::2]) / 2  # adjacent columns averaged, per digit
    assert torch.allclose(x_narrow, halved)
    train_x, _, _, _ = _digits_split(0.25, 0)
    assert x_wide.max() <= train_x.max()
