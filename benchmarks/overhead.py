"""Cost of DynamicsMonitor: training-step overhead, sample-point cost at scale, and memory.

1. Step overhead, as a ratio within one interleaved run: for each model, short ``Trainer.fit`` runs
   without the monitor and with each monitor configuration (default; all leaf layers; sampling every 10
   steps; probe source) rotate on the same model and data; a timing callback, placed after the monitor,
   records every training step (forward, backward, optimizer step, the monitor's hooks and any sample
   point it computes inside the step); the first two steps of each fit are dropped;
   overhead = median(step with monitor) / median(step without) - 1.
2. Sample-point cost: what the monitor computes once per epoch (every cross-layer measure over the whole
   history, the stability index of the last window) for L layers and T sample points.
3. Memory: the monitor's own tensors (history buffer and accumulators) next to the model's parameters;
   on CUDA also peak allocated memory with and without the monitor.

On CUDA, ``--sync-check`` runs training steps with the monitor's hooks under
``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation in the hooks raises.

4. ``--memory`` (CPU): peak resident memory of fresh processes running short fits with and without the
   monitor, and the peak memory one sample point adds at each L x T (its transient working set).

Run: ``.venv/bin/python benchmarks/overhead.py`` (about 15 minutes on 2 CPU cores), or pick parts with
``--models``, ``--configs``, ``--skip-scale``, ``--scale-only``, ``--paired N``, ``--memory``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.kit import ImageClassifier, quiet_trainer
from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.capture import ActivationCapture, SummaryAccumulator, select_layers
from lightning_dynamics.functional import dynamics_measures, stability_index


def resnet18() -> nn.Module:
    import timm

    return timm.create_model("resnet18", pretrained=False, num_classes=10)


def densenet121() -> nn.Module:
    import timm

    return timm.create_model("densenet121", pretrained=False, num_classes=10)


def resnet101() -> nn.Module:
    import timm

    return timm.create_model("resnet101", pretrained=False, num_classes=10)  # 104 convolutions + fc


def vit_small() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    # A small ViT for 32x32 inputs: 64 patches of 4x4, width 192, 6 blocks (ViT-Tiny's width, half depth).
    return VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, num_classes=10)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": resnet18,
    "vit_small": vit_small,
    "densenet121": densenet121,
    "resnet101": resnet101,
}
BATCH = {"resnet18": 128, "vit_small": 128, "densenet121": 32, "resnet101": 32}
CONFIGS: dict[str, dict] = {
    "default": {},
    "all_leaves": {"layers": "all", "max_layers": None},
    "every_10_steps": {"every_n_steps": 10},
    "probe": {"source": "probe"},
}


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


def _fit(
    module: pl.LightningModule, loader: DataLoader, steps: int, accelerator: str, config: dict | None
) -> tuple[list[float], DynamicsMonitor | None]:
    monitor = None if config is None else DynamicsMonitor(verbose=False, save_history=False, **config)
    timer = StepTimer()  # last: its batch-end runs after the monitor's, so in-step sample points count
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=steps,
        accelerator=accelerator,
        callbacks=[c for c in (monitor, timer) if c is not None],
    )
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, loader)
    return timer.times[2:], monitor  # the first steps of each fit warm caches and allocators


def model_and_data(name: str, steps: int) -> tuple[ImageClassifier, DataLoader]:
    """A freshly initialised ``name`` (seed 0) and ``steps`` batches of random 3x32x32 images."""
    torch.manual_seed(0)
    batch = BATCH[name]
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(batch * steps, 3, 32, 32, generator=g), torch.randint(0, 10, (batch * steps,), generator=g)
    )
    return ImageClassifier(MODELS[name](), lr=0.01), DataLoader(data, batch_size=batch)


def measure_model(name: str, configs: list[str], rounds: int, steps: int, accelerator: str) -> list[dict]:
    module, loader = model_and_data(name, steps)
    batch = BATCH[name]
    times: dict[str | None, list[float]] = {None: [], **{c: [] for c in configs}}
    peaks: dict[str | None, int] = {}
    monitors: dict[str, DynamicsMonitor] = {}
    _fit(module, loader, 3, accelerator, None)  # warm-up
    order: list[str | None] = [None, *configs]
    for r in range(rounds):
        for key in order[r % len(order) :] + order[: r % len(order)]:  # rotate who goes first
            step_times, monitor = _fit(module, loader, steps, accelerator, None if key is None else CONFIGS[key])
            times[key].extend(step_times)
            if accelerator == "gpu":
                peaks[key] = max(peaks.get(key, 0), torch.cuda.max_memory_allocated())
            if monitor is not None and key is not None:
                monitors[key] = monitor
    base = statistics.median(times[None])
    parameters = sum(p.numel() * p.element_size() for p in module.parameters())
    rows = []
    for key in configs:
        monitor = monitors[key]
        own = monitor_nbytes(monitor)
        rows.append(
            {
                "model": name,
                "config": key,
                "layers": len(monitor.layer_names),
                "batch": batch,
                "step_ms": 1e3 * base,
                "monitor_ms": 1e3 * statistics.median(times[key]),
                "overhead": statistics.median(times[key]) / base - 1.0,
                "steps": len(times[key]),
                "monitor_kib": own / 1024,
                "params_mib": parameters / 2**20,
                "peak_mib": peaks.get(key, 0) / 2**20,
                "peak_base_mib": peaks.get(None, 0) / 2**20,
            }
        )
    return rows


def monitor_nbytes(monitor: DynamicsMonitor) -> int:
    """Device bytes the monitor keeps: its history buffer and its accumulator's sums and shift."""
    history, accumulator = monitor.history, monitor.tracker.accumulator
    return (0 if history is None else history.nbytes) + (0 if accumulator is None else accumulator.nbytes)


# Hooks on (True) or off in each step: A-B-B-A, so that neither state always comes first in its pair.
_PAIRED_PATTERN = (True, False, False, True)


class AlternateHooks(pl.Callback):
    """Placed after the monitor: enables its hooks in half of the steps (A-B-B-A), so one fit times both."""

    def __init__(self, monitor: DynamicsMonitor) -> None:
        self.monitor = monitor

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.monitor.tracker.capture_enabled = _PAIRED_PATTERN[batch_idx % len(_PAIRED_PATTERN)]


def measure_paired(name: str, config: str, steps: int, accelerator: str) -> dict:
    """Hook cost within one fit: adjacent steps with the hooks enabled and disabled (A-B-B-A order).

    One epoch of ``steps`` batches, so no sample point falls between the timed steps: this isolates the
    per-step cost of the hooks (a disabled hook still costs one Python call). Each pair of adjacent steps
    shares the model state, caches and machine load; overhead = median over pairs of on/off - 1, with the
    interquartile range of the pair ratios as the noise.
    """
    module, loader = model_and_data(name, steps)
    monitor = DynamicsMonitor(verbose=False, save_history=False, **CONFIGS[config])
    timer = StepTimer()
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=steps,
        accelerator=accelerator,
        callbacks=[monitor, AlternateHooks(monitor), timer],
    )
    trainer.fit(module, loader)
    pairs = []
    for i in range(4, len(timer.times) - 1, 2):  # the first two pairs warm caches and allocators
        enabled = _PAIRED_PATTERN[i % len(_PAIRED_PATTERN)]
        on, off = (timer.times[i], timer.times[i + 1]) if enabled else (timer.times[i + 1], timer.times[i])
        pairs.append((on, off))
    ratios = sorted(on / off for on, off in pairs)
    quartiles = statistics.quantiles(ratios, n=4)
    return {
        "model": name,
        "config": config,
        "layers": len(monitor.layer_names),
        "off_ms": 1e3 * statistics.median(off for _, off in pairs),
        "on_ms": 1e3 * statistics.median(on for on, _ in pairs),
        "overhead": statistics.median(ratios) - 1.0,
        "q1": quartiles[0] - 1.0,
        "q3": quartiles[2] - 1.0,
        "pairs": len(pairs),
    }


def sample_point_cost(n_layers: int, n_points: int, device: str, repeats: int = 3) -> float:
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


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: list[str]) -> dict:
    """Run one memory cell in a fresh interpreter, so that peaks of other cells do not mask it."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_sample_point_peak(n_layers: int, n_points: int) -> dict:
    """Peak memory added by one sample point's measures over a float32 history of L x T (fresh process)."""
    x = torch.randn(n_layers, n_points).cumsum(-1)
    dynamics_measures(torch.randn(4, 40).cumsum(-1))  # one-time costs (FFT and BLAS set-up) are not per point
    before = peak_rss_mib()
    dynamics_measures(x)
    stability_index(x[:, -16:], window=16)
    return {"history_mib": x.numel() * 4 / 2**20, "extra_mib": peak_rss_mib() - before}


def child_fit_peak(name: str, config: str, steps: int) -> dict:
    """Peak resident memory of a short fit of ``name``, with ``config`` or without a monitor ("off")."""
    module, loader = model_and_data(name, steps)
    callbacks = [] if config == "off" else [DynamicsMonitor(verbose=False, save_history=False, **CONFIGS[config])]
    quiet_trainer(max_epochs=2, limit_train_batches=steps, callbacks=callbacks).fit(module, loader)
    return {"peak_mib": peak_rss_mib()}


def memory_tables(models: list[str], configs: list[str], steps: int) -> None:
    """CPU peak memory: short fits with and without the monitor, and one sample point at scale."""
    print(f"\npeak resident memory of a fresh process: 2 epochs x {steps} steps, MiB (CPU)")
    print(f"{'model':<12} {'off':>8} " + " ".join(f"{c:>15}" for c in configs))
    for name in models:
        off = _child(["fit", name, "off", str(steps)])["peak_mib"]
        cells = [_child(["fit", name, c, str(steps)])["peak_mib"] - off for c in configs]
        print(f"{name:<12} {off:>8.0f} " + " ".join(f"{c:>+14.0f}M" for c in cells), flush=True)
    print("\npeak memory added by one sample point (fresh process), MiB; the float32 history itself in brackets")
    lengths = (100, 1000, 10000)
    print(f"{'L':>6} " + " ".join(f"{'T=' + str(t):>16}" for t in lengths))
    for n_layers in (64, 256, 1000):
        cells = [_child(["sample", str(n_layers), str(t)]) for t in lengths]
        print(
            f"{n_layers:>6} " + " ".join(f"{c['extra_mib']:>7.1f} [{c['history_mib']:>6.2f}]" for c in cells),
            flush=True,
        )


def sync_check(name: str, batch_size: int, device: str) -> str:
    """Training steps with the monitor's hooks under CUDA sync debug mode "error"."""
    if device != "cuda":
        return "skipped (CUDA only)"
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
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="steps per fit (2 dropped as warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sync-check", action="store_true")
    parser.add_argument("--skip-scale", action="store_true", help="skip the sample-point cost table")
    parser.add_argument("--scale-only", action="store_true", help="only the sample-point cost table")
    parser.add_argument(
        "--paired", type=int, default=0, metavar="STEPS", help="also time hooks on/off in alternate steps of one fit"
    )
    parser.add_argument("--memory", action="store_true", help="also the CPU peak-memory tables (fresh processes)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "fit":
            result = child_fit_peak(rest[0], rest[1], int(rest[2]))
        else:
            result = child_sample_point_peak(int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    print(f"device={args.device} threads={torch.get_num_threads()} input=3x32x32, random data")
    header = (
        f"{'model':<12} {'config':<15} {'layers':>6} {'batch':>5} {'step ms':>9} {'+monitor ms':>12} "
        f"{'overhead':>9} {'steps':>6} {'monitor KiB':>12} {'params MiB':>11}"
    )
    if args.device == "cuda":
        header += f" {'peak MiB':>9} {'peak w/o':>9}"
    print(header)
    for name in [] if (args.scale_only or args.paired) else args.models:
        for row in measure_model(name, args.configs, args.rounds, args.steps, accelerator):
            line = (
                f"{row['model']:<12} {row['config']:<15} {row['layers']:>6} {row['batch']:>5} {row['step_ms']:>9.1f} "
                f"{row['monitor_ms']:>12.1f} {100 * row['overhead']:>8.2f}% {row['steps']:>6} "
                f"{row['monitor_kib']:>12.1f} {row['params_mib']:>11.1f}"
            )
            if args.device == "cuda":
                line += f" {row['peak_mib']:>9.0f} {row['peak_base_mib']:>9.0f}"
            print(line, flush=True)
        if args.sync_check:
            print(f"{name}: sync check: {sync_check(name, BATCH[name], args.device)}", flush=True)
    if args.paired:
        print(f"\npaired: hooks on/off in adjacent steps (A-B-B-A) of one epoch of {args.paired} steps")
        print(
            f"{'model':<12} {'config':<12} {'layers':>6} {'off ms':>9} {'on ms':>9} {'overhead':>9} "
            f"{'IQR of pairs':>17} {'pairs':>6}"
        )
        for name in args.models:
            for config in [c for c in args.configs if c in ("default", "all_leaves")]:
                r = measure_paired(name, config, args.paired, accelerator)
                print(
                    f"{r['model']:<12} {r['config']:<12} {r['layers']:>6} {r['off_ms']:>9.1f} {r['on_ms']:>9.1f} "
                    f"{100 * r['overhead']:>8.2f}% {100 * r['q1']:>+7.2f}..{100 * r['q3']:>+6.2f}% {r['pairs']:>6}",
                    flush=True,
                )
    if args.memory and args.device == "cpu":
        memory_tables(args.models, [c for c in args.configs if c in ("default", "all_leaves")], args.steps)
    if args.skip_scale:
        return
    print("\nsample-point cost (dynamics_measures over the history + last-window stability index), seconds")
    lengths = (100, 1000, 10000)
    print(f"{'L':>6} " + " ".join(f"{'T=' + str(t):>10}" for t in lengths))
    for n_layers in (64, 256, 1000):
        cells = [sample_point_cost(n_layers, t, args.device) for t in lengths]
        print(f"{n_layers:>6} " + " ".join(f"{c:>10.3f}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
