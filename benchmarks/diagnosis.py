"""Injected pathologies on scikit-learn digits: does DynamicsDiagnosis name each one, and stay quiet when healthy?

Each condition injects one problem into a small, otherwise healthy run (an MLP or a small CNN, SGD with momentum)
and records the findings of :class:`~lightning_dynamics.DynamicsDiagnosis`. The default thresholds of
:class:`~lightning_dynamics.DiagnosisThresholds` were tuned on these runs with ``--archs mlp cnn --seeds 100`` (101 is
the second tuning seed);
other architectures and seeds are held out to judge them (``--archs resnet vit``: timm ResNet-18 at small width and
a small ViT, both through ``benchmarks.kit.build_model``).

    python benchmarks/diagnosis.py --archs mlp cnn --seeds 100 101 --out benchmarks/results/diagnosis_tuning.json

The tests (``tests/callbacks/test_diagnosis.py``) run the smallest of these cases.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.kit import quiet_trainer
from benchmarks.kit.data import _digits_split
from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.callbacks.diagnosis import DynamicsDiagnosis

#: The condition each kind is injected by, and the kind it should be named as (``None``: healthy).
CONDITIONS: dict[str, str | None] = {
    "healthy": None,
    "lr_high": "lr_too_high",
    "lr_low": "lr_too_low",
    "deep_sigmoid": "vanishing_gradients",
    "large_init": "exploding_gradients",
    "negative_bias": "dying_relu",
    "tanh_large_init": "saturation",
    "noisy_labels": "label_noise",
    "raw_inputs": "data_bug",
    "repeated_batch": "data_bug",
    "softmax_output": "wrong_output",
    "frozen": "not_training",
    "head_only_optimizer": "not_training",
    "weight_decay": "weight_decay_too_strong",
    "nan_input": "nonfinite",
}


class DiagnosisModule(pl.LightningModule):
    """Cross-entropy on a model; logs ``val_loss``; the optimizer is built by ``optimizer``."""

    def __init__(self, model: nn.Module, optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
        super().__init__()
        self.model = model
        self.make_optimizer = optimizer

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.model)


def mlp(act: type[nn.Module] = nn.ReLU, depth: int = 2, hidden: int = 64, features: int = 64) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def cnn(act: type[nn.Module] = nn.ReLU, depth: int = 3, channels: int = 16) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 1
    for index in range(depth):
        layers += [nn.Conv2d(width, channels, 3, padding=1), act()]
        if index == 1:
            layers.append(nn.MaxPool2d(2))
        width = channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def timm_model(name: str, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    from benchmarks.kit import build_model

    if name == "resnet":
        return build_model("resnet18", 10, 1, 8, channels=(8, 16, 32, 64))
    return build_model("vit_tiny_patch16_224", 10, 1, 8, patch_size=2, embed_dim=48, depth=4, num_heads=3)


def build(arch: str, act: type[nn.Module] = nn.ReLU, depth: int | None = None) -> nn.Module:
    if arch == "mlp":
        return mlp(act, depth or 2)
    if arch == "cnn":
        return cnn(act, depth or 3)
    return timm_model(arch, act)


def _scale_weights(model: nn.Module, gain: float) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.mul_(gain)
    return model


def _set_hidden_bias(model: nn.Module, value: float) -> nn.Module:
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for module in layers[:-1]:
            if module.bias is not None:
                module.bias.fill_(value)
    return model


def sgd(lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 0.0) -> Callable[[nn.Module], Any]:
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


@dataclass
class Run:
    """One run's setting."""

    model: nn.Module
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    epochs: int = 6
    train: tuple[Tensor, Tensor] | None = None
    repeat_batch: bool = False
    nan_batch: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


def setting(condition: str, arch: str, seed: int) -> Run:
    """The model, optimizer and data changes of one condition (module docstring)."""
    torch.manual_seed(seed)
    if condition == "deep_sigmoid":
        return Run(build(arch, nn.Sigmoid, depth=8), sgd(0.05))
    if condition == "large_init":
        return Run(_scale_weights(build(arch, nn.ReLU, depth=6), 6.0), sgd(1e-4, 0.0))
    if condition == "tanh_large_init":
        return Run(_scale_weights(build(arch, nn.Tanh), 12.0), sgd(0.01))
    if condition == "negative_bias":
        return Run(_set_hidden_bias(build(arch), -4.0), sgd(0.05))
    model = build(arch)
    if condition == "lr_high":
        return Run(model, sgd(3.0))
    if condition == "lr_low":
        return Run(model, sgd(1e-5, 0.0))
    if condition == "weight_decay":
        return Run(model, sgd(0.05, 0.9, weight_decay=0.5))
    if condition == "softmax_output":
        return Run(nn.Sequential(model, nn.Softmax(dim=-1)), sgd(0.05))
    if condition == "frozen":
        first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
        first.requires_grad_(False)
        return Run(model, lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05))
    if condition == "head_only_optimizer":
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        return Run(model, lambda m: torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9))
    if condition == "noisy_labels":
        x, y = _digits_split(0.25, 0)[:2]
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(y), generator=g)[:300]
        x, y = x[keep], y[keep].clone()
        flip = torch.rand(len(y), generator=g) < 0.6
        y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
        wide = mlp(nn.ReLU, 2, 256) if arch == "mlp" else cnn(nn.ReLU, 3, 32)
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=3e-3)  # noqa: E731
        return Run(wide, adam, epochs=30, train=(x, y))
    if condition == "raw_inputs":
        x, y = _digits_split(0.25, 0)[:2]
        return Run(model, sgd(0.05), train=(x * 16.0, y))
    if condition == "repeated_batch":
        return Run(model, sgd(0.05), repeat_batch=True)
    if condition == "nan_input":
        return Run(model, sgd(0.05), nan_batch=True)
    if condition != "healthy":
        raise ValueError(f"`condition` must be one of {sorted(CONDITIONS)}, got {condition!r}.")
    return Run(model, sgd(0.05))


class _NanAt(torch.utils.data.Dataset):
    """The digits, with a NaN pixel in every image from ``start`` on (a corrupt shard)."""

    def __init__(self, x: Tensor, y: Tensor, start: int) -> None:
        self.x, self.y, self.start = x, y, start

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = self.x[index]
        if index >= self.start:
            x = x.clone()
            x[0, 0, 0] = math.nan
        return x, self.y[index]


def loaders(run: Run, seed: int, batch_size: int = 64) -> tuple[Any, DataLoader]:
    train_x, train_y, val_x, val_y = _digits_split(0.25, 0)
    if run.train is not None:
        train_x, train_y = run.train
    val = DataLoader(TensorDataset(val_x, val_y), batch_size=256)
    g = torch.Generator().manual_seed(seed)
    if run.repeat_batch:  # a loader bug: every step gets the same first batch
        steps = len(train_y) // batch_size
        x, y = train_x[:batch_size].repeat(steps, 1, 1, 1), train_y[:batch_size].repeat(steps)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False), val
    if run.nan_batch:
        dataset: Any = _NanAt(train_x, train_y, start=len(train_y) // 2)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False), val
    return DataLoader(TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True, generator=g), val


def run_condition(
    condition: str, arch: str = "mlp", seed: int = 100, epochs: int | None = None, **diagnosis: Any
) -> DynamicsDiagnosis:
    """Train one condition with a monitor and a diagnosis; the diagnosis (its ``findings``) after the fit."""
    torch.set_num_threads(1)
    pl.seed_everything(seed, verbose=False)
    run = setting(condition, arch, seed)
    train, val = loaders(run, seed)
    monitor = DynamicsMonitor(
        points_per_epoch=4,
        null_surrogates=None,
        compute_phase_integration=False,
        save_history=False,
        verbose=False,
        log_dashboard=False,
    )
    diagnosis_callback = DynamicsDiagnosis(**diagnosis)
    trainer = quiet_trainer(
        max_epochs=epochs or run.epochs,
        accelerator="cpu",
        callbacks=[monitor, diagnosis_callback],
        limit_val_batches=None,
    )
    trainer.fit(DiagnosisModule(run.model, run.optimizer), train_dataloaders=train, val_dataloaders=val)
    return diagnosis_callback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[100, 101])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for arch in args.archs:
        for seed in args.seeds:
            for condition in args.conditions:
                start = time.perf_counter()
                found = run_condition(condition, arch, seed).findings
                kinds = [f.kind for f in found]
                expected = CONDITIONS[condition]
                row = {
                    "arch": arch,
                    "seed": seed,
                    "condition": condition,
                    "expected": expected,
                    "named": expected in kinds if expected else not kinds,
                    "first": kinds[0] if kinds else None,
                    "kinds": kinds,
                    "findings": [str(f) for f in found],
                    "seconds": round(time.perf_counter() - start, 1),
                }
                rows.append(row)
                print(f"{arch:5s} {seed} {condition:20s} expected {expected!s:24s} got {kinds}", flush=True)
    named = sum(r["named"] for r in rows)
    print(f"named (or quiet when healthy): {named}/{len(rows)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
