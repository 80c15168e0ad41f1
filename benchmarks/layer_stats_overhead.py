"""Per-step cost of the per-layer statistics: a paired measurement, the tracker with and without ``layer_stats``.

The same plain training loop (a small CNN or MLP on digits-sized batches, SGD with momentum, CPU, one thread) runs
in alternating blocks of ``--steps`` steps with ``DynamicsTracker(layer_stats=False)`` and ``layer_stats=True``; the
median over blocks of the paired difference per step is the overhead (pairs cancel the drift of a shared machine).
Sampling is by epoch with 32 points per epoch, so the gradient read and weight copy happen at 32 of the steps of an
epoch and the unit counts at every step.

    python benchmarks/layer_stats_overhead.py --model cnn --blocks 10 --steps 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere: `benchmarks` imports
from lightning_dynamics import DynamicsConfig, DynamicsTracker


def model_for(name: str) -> nn.Module:
    if name == "cnn":
        from benchmarks.diagnosis import cnn

        return cnn(nn.ReLU, depth=4, channels=32)
    from benchmarks.diagnosis import mlp

    return mlp(nn.Tanh, depth=4, hidden=256)


def block(model: nn.Module, layer_stats: bool, steps: int, batch: int, seed: int) -> float:
    """Seconds per step of ``steps`` training steps with a fresh tracker."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    config = DynamicsConfig(points_per_epoch=32, null_surrogates=None, compute_phase_integration=False)
    tracker = DynamicsTracker(config=config, layer_stats=layer_stats, save_history=False, verbose=False)
    tracker.begin_fit(model)
    x, y = torch.randn(batch, 1, 8, 8), torch.randint(0, 10, (batch,))
    tracker.epoch_start(0, 0, n_batches=steps)
    start = time.perf_counter()
    for step in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        tracker.before_optimizer_step()
        optimizer.step()
        tracker.batch_end(0, step + 1, step)
    elapsed = time.perf_counter() - start
    tracker.end_fit()
    return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = model_for(args.model)
    block(model, True, 5, args.batch, 0)  # warm-up
    pairs = []
    for index in range(args.blocks):
        order = (False, True) if index % 2 == 0 else (True, False)
        times = {flag: block(model, flag, args.steps, args.batch, index) for flag in order}
        pairs.append((times[False], times[True]))
    off = statistics.median(p[0] for p in pairs)
    diffs = [on - off_ for off_, on in pairs]
    print(
        f"{args.model}: step without layer_stats {off * 1e3:.2f} ms (median of {args.blocks} blocks of {args.steps}); "
        f"paired overhead median {statistics.median(diffs) * 1e3:+.3f} ms/step "
        f"({statistics.median(diffs) / off:+.1%}), quartiles "
        f"{statistics.quantiles(diffs, n=4)[0] * 1e3:+.3f} / {statistics.quantiles(diffs, n=4)[2] * 1e3:+.3f} ms"
    )


if __name__ == "__main__":
    main()
