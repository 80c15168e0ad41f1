"""Calibration of the time-shuffle noise floors: false-alarm rates on correlated layers, power, settled layers.

Reproduces the tables of ``benchmarks/null_calibration.md`` and docs/method.md section 8c.

A noise floor (``lightning_dynamics.measures.registry.null_bands``) is a two-sided rank test: with 39 surrogates
its edges are the smallest and largest surrogate values, so a value exchangeable with the surrogates falls outside
with probability 2/40 = 5%. The time-shuffle null of alpha, integration, the stability index and the relative
change says "the layers' changes have no memory"; real layers are strongly correlated with each other. This script
measures, on histories of L = 8 layers whose changes are memoryless but correlated (``d_l(t) = sqrt(rho) c(t) +
sqrt(1 - rho) e_l(t)``, ``x = cumsum d``), how often each measure lands outside its band, for two ways of making
the surrogates:

- ``per_layer``: each layer's increments permuted on its own (the noise floors before this change; it removes
  the correlation between layers, so the spread of a cross-layer mean shrinks);
- ``shared``: one permutation for all layers (``time_shuffle_surrogates`` now; keeps the correlation).

Power (share outside the band) with the shared shuffle and the old one, on histories that are not memoryless:

- ``persistent``: increments are fractional Gaussian noise with H = 0.8 (Davies & Harte 1987), correlated as above:
  alpha should be above its band;
- ``converging``: each layer approaches its level exponentially (time constant T / 8) plus a memoryless walk of
  small steps (0.01 of the first step): the relative change should be below its band;
- ``anti_persistent``: increments are fGn with H = 0.3 (anti-persistent dynamics: the path still wanders).

Settled layers (``level``): each layer's summary jitters around a fixed level, ``x_l(t) = sqrt(rho) c(t) +
sqrt(1 - rho) e_l(t)`` (white). Its differences are anti-persistent (over-differenced white noise), so alpha falls
below its band; ``measures.readings`` then compares alpha with a second band, the same measure on histories whose
*values* (not increments) are shuffled by one shared permutation (``level_bands``): inside or below it reads
"settled around a level", above it "anti-persistent changes". The script reports how often each reading is given
on ``level`` and on ``anti_persistent`` histories.

Every rate is a share of ``R`` independent histories with its binomial standard error ``sqrt(p (1 - p) / R)``.

Run (about 8 CPU-minutes on one thread at the default 200 histories per cell):
``nice -n 10 .venv/bin/python benchmarks/null_calibration.py`` -> ``benchmarks/results/null_calibration.json``
and ``benchmarks/results/null_calibration.md``. ``--quick`` (T = 64 only, 40 histories) is the smoke test's mode.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.noise_floors import fgn
from lightning_dynamics.functional import InsufficientDataWarning, surrogate_histories
from lightning_dynamics.functional.detrend import detrend as detrend_series
from lightning_dynamics.measures import DynamicsConfig, MeasureContext
from lightning_dynamics.measures.readings import level_bands
from lightning_dynamics.measures.registry import NULL_LEVEL, compute_measures

N_LAYERS = 8
LENGTHS = (64, 160, 320)
RHOS = (0.0, 0.7, 0.9)
N_SURROGATES = 39
SHUFFLE_MEASURES = ("integration_alpha", "integration", "stability_index", "relative_change")
# Phase integration does not enter the shuffle measures; leaving it out only saves time.
CONFIG = DynamicsConfig(compute_phase_integration=False, history_window=None)


# ----------------------------------------------------------------------------------------------- histories
def correlated(noise: Tensor, common: Tensor, rho: float) -> Tensor:
    """``sqrt(rho) common + sqrt(1 - rho) noise``: unit-variance series correlated at ``rho`` across layers."""
    return math.sqrt(rho) * common + math.sqrt(1 - rho) * noise


def histories(family: str, draws: int, length: int, rho: float, generator: torch.Generator) -> Tensor:
    """``[draws, N_LAYERS, length]`` histories of one family (module docstring)."""
    shape = (draws, N_LAYERS, length)
    if family in ("memoryless", "level", "converging"):
        noise = torch.randn(shape, generator=generator, dtype=torch.float64)
        common = torch.randn((draws, 1, length), generator=generator, dtype=torch.float64)
        steps = correlated(noise, common, rho)
        if family == "level":
            return steps
        if family == "memoryless":
            return steps.cumsum(-1)
        t = torch.arange(length, dtype=torch.float64)
        scale = 1.0 + torch.rand((draws, N_LAYERS, 1), generator=generator, dtype=torch.float64)
        tau = length / 8
        first_step = 1 - math.exp(-1 / tau)
        return scale * (1 - torch.exp(-t / tau)) + 0.01 * first_step * steps.cumsum(-1)
    hurst = {"persistent": 0.8, "anti_persistent": 0.3}[family]
    noise = fgn(length, hurst, draws * N_LAYERS, generator).reshape(shape)
    common = fgn(length, hurst, draws, generator)[:, None, :]
    return correlated(noise, common, rho).cumsum(-1)


# ----------------------------------------------------------------------------------------------- bands
def per_layer_shuffle(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """The surrogates before this change: each layer's increments permuted on its own, summed back."""
    detrended = detrend_series(x, CONFIG.detrend)
    series = detrended.series
    order = torch.rand((n, *series.shape), generator=generator, dtype=torch.float64).argsort(dim=-1)
    shuffled = torch.gather(series.expand(n, *series.shape), -1, order)
    shuffled = torch.where(detrended.valid.unsqueeze(-1), shuffled, torch.zeros_like(shuffled))
    zero = torch.zeros((*shuffled.shape[:-1], 1), dtype=shuffled.dtype)
    return torch.cat([zero, shuffled.cumsum(-1)], dim=-1)


def bands(surrogates: Tensor, names: tuple[str, ...]) -> dict[str, tuple[Tensor, Tensor]]:
    """The rank band of each measure over ``surrogates: [n, draws, L, T]`` (as ``null_bands``): ``(lo, hi)``."""
    n = surrogates.shape[0]
    k = max(1, int(NULL_LEVEL / 2 * (n + 1)))
    values = compute_measures(MeasureContext(surrogates, CONFIG), names)
    out = {}
    for name, batch in values.items():
        ordered = batch.sort(dim=0).values
        out[name] = (ordered[k - 1], ordered[n - k])
    return out


def rate(hits: Tensor) -> dict[str, float]:
    """Share of ``True`` in ``hits`` and its binomial standard error."""
    count = int(hits.numel())
    p = float(hits.to(torch.float64).mean())
    return {"rate": p, "se": math.sqrt(p * (1 - p) / count), "n": count}


def measure_cell(x: Tensor, generator: torch.Generator, with_levels: bool) -> dict[str, dict]:
    """Outside-band rates of every shuffle measure under both surrogates, and the settled readings of alpha."""
    values = compute_measures(MeasureContext(x, CONFIG), SHUFFLE_MEASURES)
    makers = {
        "shared": lambda: surrogate_histories(x, N_SURROGATES, "shuffle", CONFIG.detrend, generator),
        "per_layer": lambda: per_layer_shuffle(x, N_SURROGATES, generator),
    }
    out: dict[str, dict] = {}
    for kind, make in makers.items():
        banded = bands(make(), SHUFFLE_MEASURES)
        for name, (lo, hi) in banded.items():
            value = values[name]
            out.setdefault(name, {})[kind] = {
                "outside": rate(~((lo <= value) & (value <= hi))),
                "below": rate(value < lo),
                "above": rate(value > hi),
            }
        if kind == "shared":  # the readings use the shipped (shared) noise floor
            alpha_lo = banded["integration_alpha"][0]
            stability_lo, stability_hi = banded["stability_index"]
    if with_levels:
        alpha = values["integration_alpha"]
        level = level_bands(x, CONFIG, ("integration_alpha",), N_SURROGATES, generator)
        level_lo, level_hi = level["integration_alpha"]
        below = alpha < alpha_lo
        out["alpha_reading"] = {
            "settled": rate(below & (alpha <= level_hi)),
            "anti_persistent": rate(below & (alpha > level_hi)),
            "inside_level_band": rate((level_lo <= alpha) & (alpha <= level_hi)),
        }
        stability = values["stability_index"]
        s_hi = level_bands(x, CONFIG, ("stability_index",), N_SURROGATES, generator)["stability_index"][1]
        below = stability < stability_lo
        out["stability_reading"] = {
            "outside": rate(below | (stability > stability_hi)),
            "settled": rate(below & (stability <= s_hi)),
            "anti_persistent": rate(below & (stability > s_hi)),
        }
    return out


FAMILIES = ("memoryless", "persistent", "converging", "level", "anti_persistent")


def run(lengths: tuple[int, ...], rhos: tuple[float, ...], draws: int, seed: int, chunk: int) -> dict:
    """Every family x rho x T cell; ``chunk`` histories per batched pass (memory)."""
    table: dict[str, dict] = {}
    timings: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        for f, family in enumerate(FAMILIES):
            start = time.perf_counter()
            for r, rho in enumerate(rhos):
                for length in lengths:
                    generator = torch.Generator().manual_seed(seed + 10_000 * f + 100 * r + length)
                    parts = []
                    for first in range(0, draws, chunk):
                        x = histories(family, min(chunk, draws - first), length, rho, generator)
                        parts.append(_hits(x, generator, family in ("level", "anti_persistent")))
                    table.setdefault(family, {}).setdefault(str(rho), {})[str(length)] = _pool(parts, draws)
            timings[family] = round(time.perf_counter() - start, 1)
    return {"table": table, "timings_s": timings}


def _hits(x: Tensor, generator: torch.Generator, with_levels: bool) -> dict:
    """One chunk's results with the counts kept, so chunks pool exactly."""
    cell = measure_cell(x, generator, with_levels)
    return json.loads(json.dumps(cell))


def _pool(parts: list[dict], draws: int) -> dict:
    def merge(items: list) -> dict:
        if "rate" in items[0]:
            count = sum(item["n"] for item in items)
            p = sum(item["rate"] * item["n"] for item in items) / count
            return {"rate": p, "se": math.sqrt(p * (1 - p) / count), "n": count}
        return {key: merge([item[key] for item in items]) for key in items[0]}

    return merge(parts)


# ----------------------------------------------------------------------------------------------- output
def _pct(cell: dict) -> str:
    return f"{100 * cell['rate']:.1f} ± {100 * cell['se']:.1f}"


def markdown(result: dict) -> str:
    """The tables: false alarms (memoryless), power, and the readings of settled and anti-persistent layers."""
    table, lengths, rhos = result["table"], result["lengths"], result["rhos"]
    cols = [(rho, n) for rho in rhos for n in lengths]
    header = "| measure | surrogates | " + " | ".join(f"ρ={rho}, T={n}" for rho, n in cols) + " |"
    rule = "|---|---|" + "---|" * len(cols)
    lines = [
        f"{result['draws']} histories of L = {result['n_layers']} layers per cell, {result['n_surrogates']} "
        f"surrogates per band (nominal 5%), seed {result['seed']}; rates in % ± binomial standard error.",
        "",
        "**False alarms** (memoryless correlated increments): % of histories outside the band.",
        "",
        header,
        rule,
    ]
    for name in SHUFFLE_MEASURES:
        for kind in ("shared", "per_layer"):
            cells = [_pct(table["memoryless"][str(rho)][str(n)][name][kind]["outside"]) for rho, n in cols]
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    lines += ["", "**Power**: % of histories on the expected side of the band.", "", header, rule]
    for family, name, side in (
        ("persistent", "integration_alpha", "above"),
        ("converging", "relative_change", "below"),
        ("anti_persistent", "integration_alpha", "below"),
    ):
        for kind in ("shared", "per_layer"):
            cells = [_pct(table[family][str(rho)][str(n)][name][kind][side]) for rho, n in cols]
            lines.append(f"| {family}: {name} {side} | {kind} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Settled layers** (`level`) against anti-persistent dynamics (`anti_persistent`, fGn H = 0.3): % of "
        "histories whose reading (`measures.readings`) says each: settled = below the noise floor and at or below "
        "the settled-level band's top; anti-persistent = below the noise floor and above that band.",
        "",
        "| family | reading | " + " | ".join(f"ρ={rho}, T={n}" for rho, n in cols) + " |",
        rule,
    ]
    for family in ("level", "anti_persistent"):
        for key in ("settled", "anti_persistent"):
            cells = [_pct(table[family][str(rho)][str(n)]["alpha_reading"][key]) for rho, n in cols]
            lines.append(f"| {family} | alpha: {key.replace('_', '-')} | " + " | ".join(cells) + " |")
        for key in ("outside", "settled", "anti_persistent"):
            cells = [_pct(table[family][str(rho)][str(n)]["stability_reading"][key]) for rho, n in cols]
            label = "outside its band" if key == "outside" else key.replace("_", "-")
            lines.append(f"| {family} | stability index: {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 64 only, 40 histories: the smoke test's mode")
    parser.add_argument("--draws", type=int, default=None, help="histories per cell (default 200; quick 40)")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--chunk", type=int, default=100, help="histories per batched pass")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lengths = (64,) if args.quick else LENGTHS
    draws = args.draws or (40 if args.quick else 200)
    start = time.perf_counter()
    result = {
        "lengths": list(lengths),
        "rhos": list(RHOS),
        "draws": draws,
        "n_layers": N_LAYERS,
        "n_surrogates": N_SURROGATES,
        "seed": args.seed,
    }
    result.update(run(lengths, RHOS, draws, args.seed, args.chunk))
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["command"] = "benchmarks/null_calibration.py" + (" --quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "null_calibration_quick" if args.quick else "null_calibration"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    print(f"wall {result['wall_s']} s")
    return result


if __name__ == "__main__":
    main()
