"""Cost and error of LyapunovMonitor's duty cycle against the always-on estimate (docs/method.md section 9).

SmallMLP on scikit-learn's digits (real, offline), plain SGD, batch 64 (22 optimizer steps per epoch). For each
learning rate and seed: one always-on run and one run per duty cycle (``duty_on`` of every ``duty_period`` steps or
epochs), all from the same initial weights and batches. Reported per configuration:

- cost: the step time while the twin runs over the step time while it does not, *within one duty-cycled run*
  (the median step of each kind; no between-run noise), and the run's mean step time over its own off-steps,
  which is the cost a user pays for that duty cycle;
- error: lambda of the duty-cycled run minus lambda of the always-on run of the same seed, beside the seed-to-seed
  spread of the always-on lambda (the error only matters against that spread).

Also the shadow's memory against the parameters' for SGD, SGD with momentum and AdamW (measured on the twin).

Run: ``nice -n 10 .venv/bin/python benchmarks/lyapunov_cost.py [--epochs 20] [--seeds 0 1 2] [--lrs 0.1 1.0]``.
Results: ``benchmarks/lyapunov.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from benchmarks.kit import DigitsDataModule, ImageClassifier, SmallMLP, quiet_trainer
from lightning_dynamics.callbacks import LyapunovMonitor
from lightning_dynamics.decisions.lyapunov import DEFAULT_D0, TwinTrajectory

# (duty_on, duty_period, duty_unit[, warmup]); None: always on.
Duty = tuple[Any, ...]
DUTY_CYCLES: tuple[Duty | None, ...] = (
    None,
    (22, 88, "step"),  # one epoch's worth of steps in four
    (11, 44, "step"),
    (5, 22, "step"),
    (1, 4, "epoch"),
)


class StepTimer(pl.Callback):
    """Wall time of every training step (forward, backward, optimizer step and, after it in the callback list, the
    monitor's shadow step), and whether the twin ran in it."""

    def __init__(self, monitor: LyapunovMonitor) -> None:
        self.monitor = monitor
        self.steps: list[tuple[float, bool]] = []
        self._start = 0.0
        self._running = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int) -> None:
        self._running = self.monitor.twin.running
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self.steps.append((time.perf_counter() - self._start, self._running))


def run(lr: float, seed: int, epochs: int, duty: Duty | None, d0: float) -> dict[str, Any]:
    pl.seed_everything(seed, verbose=False)
    module = ImageClassifier(SmallMLP(), lr=lr, momentum=0.0)
    if duty is None:
        monitor = LyapunovMonitor(d0=d0)
    else:
        warmup = duty[3] if len(duty) > 3 else 0
        monitor = LyapunovMonitor(d0=d0, duty_on=duty[0], duty_period=duty[1], duty_unit=duty[2], warmup=warmup)
    timer = StepTimer(monitor)
    trainer = quiet_trainer(max_epochs=epochs, accelerator="cpu", callbacks=[monitor, timer], limit_val_batches=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=DigitsDataModule(batch_size=64, split_seed=0))
    on = [t for t, running in timer.steps[1:] if running]  # the first step pays for set-up
    off = [t for t, running in timer.steps[1:] if not running]
    return {
        "lr": lr,
        "seed": seed,
        "duty": duty,
        "lambda": monitor.exponent,
        "twin_steps": monitor.twin.steps,
        "real_steps": monitor.twin.real_steps,
        "median_on_s": statistics.median(on) if on else math.nan,
        "median_off_s": statistics.median(off) if off else math.nan,
        "mean_step_s": statistics.fmean(t for t, _ in timer.steps[1:]),
        "seconds": time.perf_counter() - start,
    }


def shadow_memory() -> dict[str, float]:
    """Shadow bytes / parameter bytes for SGD, SGD with momentum and AdamW, measured on the twin after one step."""
    torch.manual_seed(0)
    out = {}
    for name in ("sgd", "sgd+momentum", "adamw"):
        module = SmallMLP()
        if name == "adamw":
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
        else:
            optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9 if name == "sgd+momentum" else 0.0)
        x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        twin = TwinTrajectory().attach(module, optimizer)
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()
        twin.step(lambda module=module, x=x, y=y: torch.nn.functional.cross_entropy(module(x), y))  # type: ignore[misc]
        tensors = twin.shadow_params + twin.shadow_buffers
        tensors += [v for s in twin.shadow_state for v in s.values() if isinstance(v, torch.Tensor)]
        param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
        out[name] = sum(t.numel() * t.element_size() for t in tensors) / param_bytes
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--d0", type=float, default=DEFAULT_D0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/lyapunov_cost"))
    parser.add_argument(
        "--duty",
        nargs=3,
        action="append",
        metavar=("ON", "PERIOD", "UNIT"),
        help="a duty cycle to run instead of the default ones (repeatable); the always-on run is always included",
    )
    parser.add_argument("--warmup", type=int, default=0, help="warm-up steps of each window of the --duty cycles")
    args = parser.parse_args()
    cycles = DUTY_CYCLES
    if args.duty:
        extra = (args.warmup,) if args.warmup else ()
        cycles = (None, *((int(on), int(period), unit, *extra) for on, period, unit in args.duty))
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / f"runs_e{args.epochs}_d0{args.d0:g}.json"
    results: list[dict[str, Any]] = json.loads(cache.read_text()) if cache.exists() else []
    done = {(r["lr"], r["seed"], tuple(r["duty"]) if r["duty"] else None) for r in results}
    for lr in args.lrs:
        for seed in args.seeds:
            for duty in cycles:
                if (lr, seed, duty) in done:
                    continue
                results.append(run(lr, seed, args.epochs, duty, args.d0))
                cache.write_text(json.dumps(results))
                r = results[-1]
                print(
                    f"lr={lr:g} seed={seed} duty={duty} lambda={r['lambda']:+.5f} twin steps {r['twin_steps']}/"
                    f"{r['real_steps']} ({r['seconds']:.1f} s)",
                    flush=True,
                )
    print(f"\nSmallMLP, plain SGD, {args.epochs} epochs, seeds {args.seeds}, d0={args.d0:g}; lambda per optimizer step")
    print(
        f"{'lr':>5}  {'duty (on/period unit)':>22}  {'twin on':>7}  {'on/off step':>11}  {'run/off step':>12}  "
        f"{'lambda mean ± sd':>19}  {'duty - always-on: mean, max |.|':>31}"
    )
    for lr in args.lrs:
        always = {r["seed"]: r["lambda"] for r in results if r["lr"] == lr and r["duty"] is None}
        spread = statistics.stdev(always.values()) if len(always) > 1 else math.nan
        for duty in cycles:
            runs = [r for r in results if r["lr"] == lr and (tuple(r["duty"]) if r["duty"] else None) == duty]
            runs = [r for r in runs if r["seed"] in args.seeds]
            if not runs:
                continue
            lams = [r["lambda"] for r in runs]
            share = statistics.fmean(r["twin_steps"] / r["real_steps"] for r in runs)
            on_off = statistics.median(r["median_on_s"] / r["median_off_s"] for r in runs)
            run_off = statistics.median(r["mean_step_s"] / r["median_off_s"] for r in runs)
            errors = [r["lambda"] - always[r["seed"]] for r in runs if r["seed"] in always]
            label = "always on" if duty is None else f"{duty[0]}/{duty[1]} {duty[2]}"
            label += f" w{duty[3]}" if duty is not None and len(duty) > 3 else ""
            sd = statistics.stdev(lams) if len(lams) > 1 else math.nan
            print(
                f"{lr:>5g}  {label:>22}  {share:>7.2f}  {on_off:>11.2f}  {run_off:>12.2f}  "
                f"{statistics.fmean(lams):>+10.5f} ± {sd:.5f}  "
                f"{statistics.fmean(errors):>+14.5f}, {max(abs(e) for e in errors):.5f}"
            )
        print(f"{'':>5}  seed-to-seed sd of the always-on lambda at lr {lr:g}: {spread:.5f}")
    memory = shadow_memory()
    print("\nshadow memory / parameter memory: " + ", ".join(f"{k} {v:.2f}x" for k, v in memory.items()))
    (args.out / f"summary_e{args.epochs}_d0{args.d0:g}.json").write_text(
        json.dumps({"runs": results, "memory": memory})
    )


if __name__ == "__main__":
    main()
