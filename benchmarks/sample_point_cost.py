"""Cost of the default sampling outside the training step, for a timm resnet18 (21 default layers).

A sub-epoch sample point (pack, reduce, summarise, append; no measures) and an epoch-end computation (every
measure and its noise floor, 39 surrogates per kind) at T = 65, 257 and 1025 points (the ``history_window`` cap).

Run: ``nice -n 10 .venv/bin/python benchmarks/sample_point_cost.py`` (about a minute). Results: overhead.md.
"""

from __future__ import annotations

import time

import timm
import torch

from lightning_dynamics import DynamicsTracker


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = timm.create_model("resnet18", num_classes=10)  # training mode: the tracker records its forwards
    tracker = DynamicsTracker(verbose=False).attach(model)
    x = torch.randn(8, 3, 32, 32)
    costs = []
    for i in range(64):
        model(x)
        start = time.perf_counter()
        tracker.sample(0, i + 1, compute=False)
        costs.append(time.perf_counter() - start)
    costs.sort()
    print(f"layers {len(tracker.layer_names)}: sub-epoch point median {1e3 * costs[len(costs) // 2]:.2f} ms")
    for points in (64, 256, 1024):
        while tracker.n_samples < points:
            model(x)
            tracker.sample(0, tracker.n_samples + 1, compute=False)
        model(x)
        start = time.perf_counter()
        tracker.sample(0, tracker.n_samples + 1, compute=True)
        print(f"T={tracker.n_samples}: epoch-end computation with noise floors {time.perf_counter() - start:.2f} s")
    tracker.detach()


if __name__ == "__main__":
    main()
