"""Batched torch fractal measures against per-series loops of the reference packages.

For B series of length T (float64, CPU), times one batched call of :func:`higuchi_fd`, :func:`katz_fd`,
:func:`lyapunov_rosenstein` and :func:`mfdfa` against a Python loop of ``antropy.higuchi_fd``,
``antropy.katz_fd``, ``nolds.lyap_r(fit="poly")`` and the ``MFDFA`` package (``MFDFA.MFDFA`` plus a polyfit
of log F_q against log s per q), on the same parameters, and checks that both give the same numbers. Then the
cost of :func:`history_complexity` (the per-layer descriptors for the monitor) at L = 64, T = 100 and 1000.

Timings share 2 CPU cores with other work unless the machine is idle: read the ratios within one run.
Run: ``nice -n 10 .venv/bin/python benchmarks/fractal.py --threads 1`` (with 2 threads on busy cores the small
batched matmuls of MF-DFA spin in OpenMP and the torch timings grow ~10-40x).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from lightning_dynamics.functional import (
    higuchi_fd,
    history_complexity,
    katz_fd,
    lyapunov_rosenstein,
    mfdfa,
)


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _mfdfa_package_h(x: np.ndarray, scales: list[int], q: np.ndarray) -> np.ndarray:
    from MFDFA import MFDFA

    lags, f = MFDFA(x, lag=np.array(scales), q=q, order=1)
    return np.polyfit(np.log(lags), np.log(f), 1)[0]


def compare(batch: int, length: int, repeats: int) -> list[tuple[str, float, float, float]]:
    import antropy
    import nolds

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, length)).cumsum(-1) * 0.1 + rng.standard_normal((batch, length))
    xt = torch.tensor(x)
    scales = [10, 16, 25, 40, 63, 100]
    q = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    lyap = dict(emb_dim=4, lag=1, min_tsep=10, trajectory_len=10)
    cases: list[tuple[str, Callable[[], np.ndarray], Callable[[], np.ndarray]]] = [
        (
            "higuchi_fd (kmax=10)",
            lambda: higuchi_fd(xt, 10).numpy(),
            lambda: np.array([antropy.higuchi_fd(r, kmax=10) for r in x]),
        ),
        ("katz_fd", lambda: katz_fd(xt).numpy(), lambda: np.array([antropy.katz_fd(r) for r in x])),
        (
            "mfdfa h(q), 6 q x 6 scales",
            lambda: mfdfa(xt, q=q, scales=scales, both_ends=True).h.numpy(),
            lambda: np.stack([_mfdfa_package_h(r, scales, q) for r in x]),
        ),
    ]
    if length <= 2000:
        cases.append(
            (
                "lyapunov_rosenstein",
                lambda: lyapunov_rosenstein(xt, **lyap).numpy(),
                lambda: np.array([nolds.lyap_r(r, fit="poly", **lyap) for r in x]),
            )
        )
    rows = []
    for name, ours, reference in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            diff = float(np.max(np.abs(ours() - reference())))
            t_ours = _median_time(ours, repeats)
            t_ref = _median_time(reference, max(1, repeats // 2))
        rows.append((name, t_ours, t_ref, diff))
    return rows


def complexity_cost(repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    for length in (100, 1000):
        history = torch.randn(64, length, generator=g).cumsum(-1)
        history_complexity(history)  # warm the shape caches
        t = _median_time(lambda h=history: history_complexity(h), repeats)
        print(f"history_complexity, L=64, T={length} (float32): {t * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    header = f"{'B x T':>10}  {'measure':<28} {'torch batched':>14} {'reference loop':>15} {'speed-up':>9}"
    print(f"{header} {'max |diff|':>11}")
    for batch, length in ((64, 1000), (16, 10000)):
        for name, t_ours, t_ref, diff in compare(batch, length, args.repeats):
            print(
                f"{f'{batch} x {length}':>10}  {name:<28} {t_ours * 1e3:>11.1f} ms {t_ref * 1e3:>12.1f} ms "
                f"{t_ref / t_ours:>8.1f}x {diff:>11.1e}"
            )
    complexity_cost(args.repeats)


if __name__ == "__main__":
    main()
