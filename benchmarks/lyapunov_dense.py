"""The twin-trajectory estimate on dense spectra: bias against steps, and the steps it needs.

Reproduces the table in ``benchmarks/lyapunov.md`` ("Dense spectra") and the numbers of docs/method.md section 9.

Quadratic loss ``0.5 sum_i a_i w_i^2`` (float32), plain SGD or SGD with momentum; the exponent is known in closed
form (the log spectral radius of the map). A random starting separation has a share on every mode; the
renormalised log-growth turns towards the leading mode only as fast as the second one dies out relative to it,
i.e. after about ``1 / gap`` steps, ``gap = lambda_1 - lambda_2`` (the two largest log-multipliers). Until then the
estimate is a weighted mean of all the modes' exponents: below the truth, never above it (for real multipliers).
Spectra:

- ``dense_20``: 20 curvatures ``a = logspace(-2, 0, 20)``, lr 0.1: multipliers 0.999 .. 0.9, slowest near 1
  (``lambda = ln 0.999``), gap 2.7e-4 per step;
- ``dense_20_wide``: ``a = logspace(-1, 0, 20)``, lr 0.1: multipliers 0.99 .. 0.9, gap 1.3e-3;
- ``nesterov_close``: ``a = (0.5, 1, 2)``, lr 0.1, Nesterov momentum 0.5 (close complex modes).

For each: the relative error ``(estimate - truth) / |truth|`` (negative: below the truth) of
:attr:`TwinTrajectory.exponent` (slope from the first step) and of the same slope with a warm-up of half the
steps (``warmup = steps // 2``), at several step counts, over seeds 0-2 (the starting direction).

Also: the same MLP run measured in float32 and with its forward under CPU bfloat16 autocast, at ``d0 = 1e-3`` and
``1e-2`` (bfloat16 resolves ``2**-7 = 0.0078``; ``TwinTrajectory`` warns below it).

Run (about 3 CPU-minutes): ``nice -n 10 .venv/bin/python benchmarks/lyapunov_dense.py`` ->
``benchmarks/results/lyapunov_dense.json`` and the markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import torch

from lightning_dynamics.decisions.lyapunov import TwinTrajectory

STEPS = (30, 100, 300, 1000, 3000)
BF16_STEPS = 200
BF16_D0 = (1e-3, 1e-2)
SEEDS = (0, 1, 2)
SPECTRA: dict[str, dict] = {
    "dense_20": {"a": torch.logspace(-2, 0, 20).tolist(), "lr": 0.1, "momentum": 0.0, "nesterov": False},
    "dense_20_wide": {"a": torch.logspace(-1, 0, 20).tolist(), "lr": 0.1, "momentum": 0.0, "nesterov": False},
    "nesterov_close": {"a": [0.5, 1.0, 2.0], "lr": 0.1, "momentum": 0.5, "nesterov": True},
}


def exponents(spec: dict) -> list[float]:
    """Log-moduli of the map's eigenvalues, largest first (SGD: ``ln|1 - lr a|``; momentum: the 2x2 blocks)."""
    out = []
    for a in spec["a"]:
        lr, m = spec["lr"], spec["momentum"]
        if m == 0:
            out.append(math.log(abs(1 - lr * a)))
            continue
        # torch.optim.SGD on the state (w, v), g = a w: v' = m v + g; heavy ball w' = w - lr v', Nesterov
        # w' = w - lr (g + m v').
        if spec["nesterov"]:
            matrix = torch.tensor([[1 - lr * a * (1 + m), -lr * m * m], [a, m]], dtype=torch.float64)
        else:
            matrix = torch.tensor([[1 - lr * a, -lr * m], [a, m]], dtype=torch.float64)
        out.append(float(torch.linalg.eigvals(matrix).abs().log().max()))
    return sorted(out, reverse=True)


def estimate(spec: dict, steps: int, seed: int, warmup: int) -> float:
    """``TwinTrajectory.exponent`` after ``steps`` steps of the quadratic, with ``warmup``."""
    a = torch.tensor(spec["a"])
    w = torch.nn.Parameter(torch.ones(len(spec["a"])))
    optimizer = torch.optim.SGD([w], lr=spec["lr"], momentum=spec["momentum"], nesterov=spec["nesterov"])

    def loss() -> torch.Tensor:
        return 0.5 * (a * w.square()).sum()

    twin = TwinTrajectory(seed=seed, warmup=warmup).attach(torch.nn.Module(), optimizer)
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
        twin.step(loss)
    return twin.exponent


def mlp_exponent(d0: float, autocast: bool, seed: int, steps: int = BF16_STEPS) -> float:
    """``exponent`` of a 2-layer MLP (64-128-10, tanh) trained full-batch on fixed random data, lr 0.5, float32
    weights, the forward under CPU bfloat16 autocast or not: the same run, the twin at ``d0``."""
    torch.manual_seed(seed)
    x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def loss() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x)
        return torch.nn.functional.cross_entropy(out.float(), y)

    twin = TwinTrajectory(d0=d0, seed=seed).attach(model, optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the d0 guard's warning is what this measures
        for _ in range(steps):
            optimizer.zero_grad()
            loss().backward()
            optimizer.step()
            twin.step(loss)
    return twin.exponent


def run_bf16(seeds: tuple[int, ...]) -> dict:
    """``exponent`` per seed: float32, and bfloat16 autocast at each ``d0`` of :data:`BF16_D0`."""
    out: dict[str, list[float]] = {}
    for d0 in BF16_D0:
        out[f"float32, d0={d0:g}"] = [mlp_exponent(d0, False, seed) for seed in seeds]
        out[f"bfloat16 autocast, d0={d0:g}"] = [mlp_exponent(d0, True, seed) for seed in seeds]
    return out


def run(steps: tuple[int, ...], seeds: tuple[int, ...]) -> dict:
    table: dict[str, dict] = {}
    for name, spec in SPECTRA.items():
        lams = exponents(spec)
        truth = lams[0]
        rows: dict[str, dict] = {}
        for n in steps:
            for label, warmup in (("from_start", 0), ("half_warmup", n // 2)):
                errors = [(estimate(spec, n, seed, warmup) - truth) / abs(truth) for seed in seeds]
                rows.setdefault(label, {})[str(n)] = errors
        table[name] = {"truth": truth, "gap": lams[0] - lams[1], "errors": rows}
    return table


def markdown(result: dict) -> str:
    steps = result["steps"]
    lines = [
        "| spectrum | truth (per step) | gap | estimate | " + " | ".join(f"{n} steps" for n in steps) + " |",
        "|---|---|---|---|" + "---|" * len(steps),
    ]
    for name, row in result["table"].items():
        for i, (label, by_steps) in enumerate(row["errors"].items()):
            cells = []
            for n in steps:
                errors = by_steps[str(n)]
                cells.append(f"{100 * min(errors):+.0f}% .. {100 * max(errors):+.0f}%")
            head = f"{name} | {row['truth']:.3g} | {row['gap']:.2g}" if i == 0 else " | | "
            lines.append(f"| {head} | {label.replace('_', ' ')} | " + " | ".join(cells) + " |")
    lines += ["", f"MLP ({BF16_STEPS} full-batch steps, lr 0.5), exponent per step, seeds {result['seeds']}:", ""]
    lines += ["| computation | " + " | ".join(f"seed {seed}" for seed in result["seeds"]) + " |"]
    lines += ["|---|" + "---|" * len(result["seeds"])]
    for label, values in result["bf16"].items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = {"steps": list(STEPS), "seeds": list(SEEDS), "spectra": SPECTRA, "table": run(STEPS, SEEDS)}
    result["bf16"] = run_bf16(SEEDS)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["command"] = "benchmarks/lyapunov_dense.py"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lyapunov_dense.json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"wall {result['wall_s']} s")
    return result


if __name__ == "__main__":
    main()
