"""The monitor on real architectures from timm (random weights; no download)."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamics import DynamicsMonitor
from tests.helpers import TinyModule, forward_hook_count, trainer

timm = pytest.importorskip("timm")


def _images(n: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)),
        batch_size=8,
    )


def test_resnet18(tmp_path: Path) -> None:
    pl.seed_everything(0)
    module = TinyModule(net=timm.create_model("resnet18", pretrained=False, num_classes=10), lr=0.01)
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False)
    trainer(tmp_path, max_epochs=2, callbacks=[monitor]).fit(module, _images())
    names = monitor.layer_names
    assert names[0] == "net.conv1" and names[-1] == "net.fc"
    assert len(names) == 21  # 20 convolutions (incl. downsample) and the classifier
    assert monitor.history.values.shape == (21, 2) and monitor.history.values.isfinite().all()
    assert forward_hook_count(module) == 0


def test_small_vit_includes_attention_blocks(tmp_path: Path) -> None:
    from timm.models.vision_transformer import VisionTransformer

    pl.seed_everything(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    module = TinyModule(net=vit, lr=0.01)
    monitor = DynamicsMonitor(points_per_epoch=1, verbose=False, max_layers=None)
    trainer(tmp_path, max_epochs=2, callbacks=[monitor]).fit(module, _images())
    names = monitor.layer_names
    assert "net.blocks.0.attn" in names and "net.blocks.1.mlp.fc2" in names and names[0] == "net.patch_embed.proj"
    assert monitor.history.values.isfinite().all()
