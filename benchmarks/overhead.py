"""Training-step overhead of DynamicsMonitor, measured as a ratio within one interleaved run.

For each model, short ``Trainer.fit`` runs with and without the monitor (default configuration) alternate
on the same model and data; a timing callback records every training step (forward, backward, optimizer
step and all callback hooks), the first steps of each run are dropped as warm-up, and the overhead is
``median(step with monitor) / median(step without) - 1``. The sample-point cost (the measures computed
once per epoch) is reported separately, per epoch and amortised over a CIFAR-sized epoch.

On CUDA, ``--sync-check`` also runs training steps with the monitor under
``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation in the hooks raises.

Run: ``.venv/bin/python benchmarks/overhead.py [--models resnet18 vit_small] [--rounds 4] [--steps 8]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.experiments.models import ImageClassifier
from lightning_dynamics.functional import dynamics_measures, stability_index


def resnet18() -> nn.Module:
    import timm

    return timm.create_model("resnet18", pretrained=False, num_classes=10)


def vit_small() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    # A small ViT for 32x32 inputs: 64 patches of 4x4, width 192, 6 blocks (ViT-Tiny's width, half depth).
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, num_classes=10)


MODELS: dict[str, Callable[[], nn.Module]] = {"resnet18": resnet18, "vit_small": vit_small}


class StepTimer(pl.Callback):
    """Wall time of each training step, from batch start to batch end (device-synchronised on CUDA)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._start)


def _fit(module: pl.LightningModule, loader: DataLoader, steps: int, accelerator: str, monitor: bool) -> list[float]:
    timer = StepTimer()
    callbacks: list[pl.Callback] = [timer] + ([DynamicsMonitor(verbose=False, save_history=False)] if monitor else [])
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(module, loader)
    return timer.times[2:]  # the first steps of each fit warm caches and allocators


def measure_overhead(name: str, batch_size: int, rounds: int, steps: int, accelerator: str) -> dict[str, float]:
    torch.manual_seed(0)
    module = ImageClassifier(MODELS[name](), lr=0.01)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(batch_size * steps, 3, 32, 32, generator=g),
        torch.randint(0, 10, (batch_size * steps,), generator=g),
    )
    loader = DataLoader(data, batch_size=batch_size)
    without: list[float] = []
    with_monitor: list[float] = []
    _fit(module, loader, 3, accelerator, monitor=False)  # warm-up
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)  # alternate which goes first
        for monitor in order:
            (with_monitor if monitor else without).extend(_fit(module, loader, steps, accelerator, monitor))
    base, hooked = statistics.median(without), statistics.median(with_monitor)
    return {
        "step_ms": 1e3 * base,
        "monitor_step_ms": 1e3 * hooked,
        "overhead": hooked / base - 1.0,
        "n": len(without),
    }


def sample_point_cost(n_layers: int, n_points: int, device: str, repeats: int = 5) -> float:
    """Median seconds of one sample point's measures (what the monitor computes once per epoch)."""
    x = torch.randn(n_layers, n_points, device=device).cumsum(-1)

    def once() -> None:
        dynamics_measures(x)
        stability_index(x[:, -16:], window=16)
        if device == "cuda":
            torch.cuda.synchronize()

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sync_check(name: str, batch_size: int, device: str) -> str:
    """Training steps with the monitor's hooks under CUDA sync debug mode "error"."""
    if device != "cuda":
        return "skipped (CUDA only)"
    from lightning_dynamics.capture import ActivationCapture, SummaryAccumulator, select_layers

    model = MODELS[name]().to(device)
    layers = select_layers(model, "auto", 64)
    accumulator = SummaryAccumulator(len(layers), "rms", torch.device(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    with ActivationCapture(layers, accumulator) as capture, capture.capturing():
        for _ in range(2):  # warm-up outside the check
            nn.functional.cross_entropy(model(x), y).backward()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(5):
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return "no host sync in 5 steps"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="steps per fit (2 dropped as warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sync-check", action="store_true")
    args = parser.parse_args()
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} input=3x32x32")
    print(f"{'model':<10} {'layers':>6} {'step ms':>9} {'+monitor ms':>12} {'overhead':>9} {'steps':>6}")
    for name in args.models:
        result = measure_overhead(name, args.batch_size, args.rounds, args.steps, accelerator)
        from lightning_dynamics.capture import select_layers

        n_layers = len(select_layers(MODELS[name](), "auto", 64))
        print(
            f"{name:<10} {n_layers:>6} {result['step_ms']:>9.1f} {result['monitor_step_ms']:>12.1f} "
            f"{100 * result['overhead']:>8.2f}% {int(result['n']):>6}"
        )
        cost = sample_point_cost(n_layers, 50, args.device)
        print(
            f"{'':<10} sample point (L={n_layers}, T=50): {1e3 * cost:.1f} ms per epoch = "
            f"{100 * cost / (391 * result['step_ms'] / 1e3):.3f}% of a 391-step CIFAR epoch"
        )
        if args.sync_check:
            print(f"{'':<10} sync check: {sync_check(name, args.batch_size, args.device)}")


if __name__ == "__main__":
    main()
