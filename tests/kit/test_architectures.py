"""Models by name, adapted to small images, and pretrained weights from a local file (never downloaded)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.kit import build_model
from benchmarks.kit.architectures import _small_image_stem

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

TINY_VIT = dict(patch_size=4, embed_dim=16, depth=1, num_heads=2)


def test_timm_resnet_gets_a_cifar_stem() -> None:
    model = build_model("resnet18", num_classes=7, in_channels=1, channels=(8, 8, 8, 8))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.Identity)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 7)
    unadapted = build_model("resnet18", num_classes=7, channels=(8, 8, 8, 8), adapt=False)
    assert unadapted.conv1.stride == (2, 2) and isinstance(unadapted.maxpool, nn.MaxPool2d)


def test_torchvision_model_by_prefixed_name() -> None:
    model = build_model("torchvision:squeezenet1_1", num_classes=100, in_channels=1)
    stem = model.features[0]
    assert stem.stride == (1, 1) and stem.kernel_size == (3, 3) and stem.in_channels == 1
    assert isinstance(model.features[2], nn.Identity)  # the stem's max-pool; later pools stay
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 2
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 100)


def test_cifar_style_stem_keeps_its_pools() -> None:
    vgg_like = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1))
    first = vgg_like[0].weight.clone()
    adapted = _small_image_stem(vgg_like)
    assert isinstance(adapted[2], nn.MaxPool2d) and torch.equal(adapted[0].weight, first)


def test_pretrained_vit_from_a_local_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=1000, **TINY_VIT)
    path = tmp_path / "vit_tiny.pth"
    torch.save(source.state_dict(), path)
    model = build_model("vit_tiny_patch16_224", num_classes=10, image_size=32, weights_path=path, **TINY_VIT)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(model.patch_embed.proj.weight, source.patch_embed.proj.weight)
    assert model.head.out_features == 10  # the 1000-class head was not loaded
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    fresh = build_model("vit_tiny_patch16_224", num_classes=10, image_size=32, **TINY_VIT)
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_pretrained_weights_resampled_to_another_image_size(tmp_path: Path) -> None:
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10, **TINY_VIT)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model = build_model("vit_tiny_patch16_224", num_classes=10, image_size=16, weights_path=path, **TINY_VIT)
    assert model.pos_embed.shape[1] == 1 + 16  # 4x4 patches (+ class token), resampled from 8x8
    torch.testing.assert_close(model.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)


def test_torchvision_weights_file_loads_matching_tensors(tmp_path: Path) -> None:
    source = torchvision.models.squeezenet1_1(num_classes=1000)
    path = tmp_path / "squeezenet.pth"
    torch.save(source.state_dict(), path)
    model = build_model("torchvision:squeezenet1_1", num_classes=10, weights_path=path)
    torch.testing.assert_close(model.features[3].squeeze.weight, source.features[3].squeeze.weight)
    assert model.classifier[1].out_channels == 10  # the 1000-class classifier was not loaded


def test_errors_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a timm model"):
        build_model("no_such_net")
    with pytest.raises(ValueError, match="prefix must be one of"):
        build_model("keras:resnet18")
    with pytest.raises(FileNotFoundError, match="weights_path"):
        build_model("resnet18", weights_path=tmp_path / "missing.pth")


def test_the_kit_docstring_examples_run() -> None:
    """The kit left the package (and pytest's doctest collection of ``lightning_dynamics``): its examples run here."""
    import doctest
    import importlib

    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for name in ("architectures", "cifar", "data", "models"):
        result = doctest.testmod(importlib.import_module(f"benchmarks.kit.{name}"), optionflags=flags)
        assert result.attempted > 0 and result.failed == 0, name
