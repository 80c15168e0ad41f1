"""Noise floors: bias and spread of every measure versus series length T, on signals with known truth.

Reproduces the tables of docs/method.md section 8b and ``benchmarks/noise_floors.md``, and the reliable
minimum lengths of :data:`lightning_dynamics.functional.reliability.RELIABLE_FROM`.

Each signal family is a batch of histories ``[draws, L, T]`` (L = 16 layers) fed to the package's functional API
with its defaults, as the monitor does (``detrend="diff"``: the measures see the T - 1 differences). T counts
history points. Families and their truths:

- ``fgn_H0.3``, ``fgn_H0.5``, ``fgn_H0.8``: each layer the running sum of exact fractional Gaussian noise
  (Davies & Harte 1987 circulant embedding), independent layers; the differences are fGn, so the DFA exponent
  is H and the integration is ``integration_from_alpha(H)``. ``fgn_H0.5`` is the null of independent random-walk
  layers (differences: white noise). ``..._rho0.9``: layers share a common fGn (correlation 0.9), as real
  layers do; the layer mean then averages little noise away.
- ``walk_increments``, ``fbm_H0.3``, ``fbm_H0.8``: layers whose differences are random walks / fractional
  Brownian motion (DFA exponent H + 1; Higuchi FD of the path 2 - H).
- ``kuramoto_uncoupled`` / ``kuramoto_coupled`` / ``kuramoto_switching``: L noisy phase oscillators
  (Kuramoto 1984), observed as ``cos(theta) + 0.1 noise``; natural periods about 8 points; coupling 0, 1, or
  switched on and off in blocks of 32 points. No closed form: the truth is the mean at ``T_REF`` points.
- ``binomial_cascade``: random-order binomial multiplicative cascade, a = 0.75 (Kantelhardt et al. 2002),
  ``h(q) = 1/q - ln(a^q + (1-a)^q) / (q ln 2)``; its spectrum width on the default q grid is the truth.
- Rosenstein: logistic map r = 4 (lambda = ln 2 per step) and a sine (lambda = 0) with the defaults of
  :func:`lyapunov_rosenstein`; Lorenz (lambda = 0.906 per unit time, Sprott 2003) sampled every 0.1 time units,
  with explicit parameters (reported, not used for the minimum length).

Criterion for the reliable minimum length of a measure (one panel of signals with distinct truths per measure,
``PANELS``): the shortest T of the grid from which on (that T and every longer one in the grid) every signal
of the panel has ``|bias| + 2 sd <= gap / 2``, gap being the distance from its truth to the nearest other
truth of the panel: a single reading then lies nearer its own truth than any other in about 97.7% of draws
(normal approximation). Katz FD has no length-free truth (it grows with T for noise): its panel uses the
means at the same T as truths (bias 0 by construction), i.e. the signals must be separable at that T.

Run (full, about 10-15 CPU-minutes on one thread):
``nice -n 10 .venv/bin/python benchmarks/noise_floors.py`` -> ``benchmarks/results/noise_floors.json`` and
``benchmarks/results/noise_floors_tables.md``. ``--quick`` (3 lengths, 16 draws) is the smoke test's mode.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from lightning_dynamics.functional import (
    InsufficientDataWarning,
    dynamics_measures,
    history_complexity,
    integration_alpha,
    integration_from_alpha,
    lyapunov_rosenstein,
)
from lightning_dynamics.functional.mfdfa import DEFAULT_Q
from lightning_dynamics.functional.stability import combine_stability

LENGTHS = (16, 24, 32, 48, 64, 96, 128, 200, 400, 1000)
QUICK_LENGTHS = (24, 64, 200)
N_LAYERS = 16
PER_LAYER_LAYERS = 4
T_REF = 4000
LOGISTIC_R = 4.0
LORENZ_LAMBDA = 0.906  # per unit time (Sprott 2003, Chaos and Time-Series Analysis, table A.1)
LORENZ_TAU = 0.1
LORENZ_PARAMS = dict(emb_dim=3, lag=1, trajectory_len=20, fit_offset=5)  # covers 0.5-2 time units
CASCADE_A = 0.75
HIGUCHI_KMAX = 10

# Measure -> (families of its panel). Truths must differ within a panel.
PANELS: dict[str, tuple[str, ...]] = {
    "dfa_alpha": ("fgn_H0.3", "fgn_H0.5", "fgn_H0.8", "walk_increments"),
    "integration_alpha": ("fgn_H0.3_rho0.9", "fgn_H0.5_rho0.9", "fgn_H0.8_rho0.9", "walk_increments_rho0.9"),
    "integration": ("fgn_H0.3_rho0.9", "fgn_H0.5_rho0.9", "fgn_H0.8_rho0.9"),
    "metastability": ("kuramoto_uncoupled", "kuramoto_coupled", "kuramoto_switching"),
    "synchrony": ("kuramoto_uncoupled", "kuramoto_coupled", "kuramoto_switching"),
    "phase_integration": ("kuramoto_uncoupled", "kuramoto_coupled", "kuramoto_switching"),
    "stability_index": ("kuramoto_uncoupled", "kuramoto_coupled", "kuramoto_switching"),
    "higuchi_fd": ("fgn_H0.5", "fbm_H0.3", "walk_increments", "fbm_H0.8"),
    "katz_fd": ("fgn_H0.5", "fbm_H0.3", "walk_increments", "fbm_H0.8"),
    "mfdfa_width": ("fgn_H0.5", "binomial_cascade"),
    "lyapunov_rosenstein": ("logistic", "sine"),
}
# The optimistic variant: independent layers, whose layer mean averages the per-layer noise away.
INDEPENDENT_LAYER_PANELS: dict[str, tuple[str, ...]] = {
    "integration_alpha": ("fgn_H0.3", "fgn_H0.5", "fgn_H0.8", "walk_increments"),
    "integration": ("fgn_H0.3", "fgn_H0.5", "fgn_H0.8"),
}
# The keys of RELIABLE_FROM (dfa_alpha is the single-layer exponent, reported for reference).
RELIABILITY_KEYS = tuple(k for k in PANELS if k != "dfa_alpha")
NULL_FAMILY = "fgn_H0.5"  # independent random-walk layers: the differences are white noise


# ----------------------------------------------------------------------------------------------- generators
def fgn(n: int, hurst: float, draws: int, generator: torch.Generator) -> Tensor:
    """Exact fractional Gaussian noise ``[draws, n]`` (unit variance) by circulant embedding (Davies & Harte 1987).

    The circulant ``c = (g_0..g_n, g_{n-1}..g_1)`` of the fGn autocovariance
    ``g_k = (|k+1|^{2H} - 2|k|^{2H} + |k-1|^{2H}) / 2`` has non-negative eigenvalues for every H in (0, 1), so
    the real part of ``FFT(sqrt(lambda / 2n) z)`` with complex standard normal ``z`` has covariance exactly ``g``.
    """
    k = torch.arange(n + 1, dtype=torch.float64)
    gamma = 0.5 * ((k + 1).pow(2 * hurst) - 2 * k.pow(2 * hurst) + (k - 1).abs().pow(2 * hurst))
    circulant = torch.cat([gamma, gamma[1:n].flip(0)])
    eigen = torch.fft.fft(circulant).real.clamp(min=0)
    size = 2 * n
    z = torch.complex(
        torch.randn(draws, size, generator=generator, dtype=torch.float64),
        torch.randn(draws, size, generator=generator, dtype=torch.float64),
    )
    return torch.fft.fft(torch.sqrt(eigen / size) * z).real[:, :n]


def fgn_autocorrelation(k: Tensor, hurst: float) -> Tensor:
    """Autocorrelation of unit fGn at lags ``k``."""
    k = k.to(torch.float64)
    return 0.5 * ((k + 1).pow(2 * hurst) - 2 * k.pow(2 * hurst) + (k - 1).abs().pow(2 * hurst))


def fgn_histories(
    n: int, hurst: float, draws: int, generator: torch.Generator, rho: float = 0.0, integrate: int = 1
) -> Tensor:
    """``[draws, L, n]`` layer histories whose differences are fGn (``integrate=1``) or fBm (``integrate=2``)."""
    noise = fgn(n, hurst, draws * N_LAYERS, generator).reshape(draws, N_LAYERS, n)
    if rho:
        common = fgn(n, hurst, draws, generator)[:, None, :]
        noise = math.sqrt(rho) * common + math.sqrt(1 - rho) * noise
    for _ in range(integrate):
        noise = noise.cumsum(-1)
    return noise


def kuramoto_histories(
    n: int, coupling: str, draws: int, generator: torch.Generator, burn_in: int = 200, substeps: int = 4
) -> Tensor:
    """``[draws, L, n]`` observations ``cos(theta) + 0.1 noise`` of L noisy Kuramoto oscillators.

    ``d theta_l = (omega_l + K(t)/L sum_j sin(theta_j - theta_l)) dt + 0.05 dW`` (Kuramoto 1984), Euler-Maruyama
    with ``substeps`` steps per sample point; ``omega_l``: the L normal quantiles of N(2 pi / 8, (0.1 * 2 pi / 8)^2);
    K = 0 (uncoupled), 1 (coupled, far above the critical 0.13) or switched between 1 and 0 every 32 points
    (switching, from a random phase of the cycle).
    """
    dt = 1.0 / substeps
    omega0 = 2 * math.pi / 8
    # The same frequencies in every draw (normal quantiles): a family then has one truth, not one per draw.
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(
        (torch.arange(N_LAYERS, dtype=torch.float64) + 0.5) / N_LAYERS
    )
    omega = (omega0 * (1 + 0.1 * quantiles)).expand(draws, N_LAYERS)
    theta = 2 * math.pi * torch.rand(draws, N_LAYERS, generator=generator, dtype=torch.float64)
    offset = torch.randint(0, 64, (draws, 1), generator=generator)
    out = torch.empty(draws, N_LAYERS, n, dtype=torch.float64)
    for t in range(-burn_in, n):
        if coupling == "uncoupled":
            k = torch.zeros(draws, 1, dtype=torch.float64)
        elif coupling == "coupled":
            k = torch.ones(draws, 1, dtype=torch.float64)
        else:
            k = (((t + offset) // 32) % 2 == 0).to(torch.float64)
        for _ in range(substeps):
            pull = torch.sin(theta[:, None, :] - theta[:, :, None]).mean(dim=-1)
            noise = torch.randn(draws, N_LAYERS, generator=generator, dtype=torch.float64)
            theta = theta + (omega + k * pull) * dt + 0.05 * math.sqrt(dt) * noise
        if t >= 0:
            out[..., t] = torch.cos(theta)
    return out + 0.1 * torch.randn(draws, N_LAYERS, n, generator=generator, dtype=torch.float64)


def binomial_cascade(n: int, draws: int, generator: torch.Generator, a: float = CASCADE_A) -> Tensor:
    """``[draws, n]`` random-order binomial cascade: each level splits a cell's mass a : 1-a in a random order."""
    levels = max(1, math.ceil(math.log2(n)))
    mass = torch.ones(draws, 1, dtype=torch.float64)
    for _ in range(levels):
        left = torch.where(torch.rand(mass.shape, generator=generator) < 0.5, a, 1 - a).to(torch.float64)
        mass = torch.stack([mass * left, mass * (1 - left)], dim=-1).reshape(draws, -1)
    return mass[:, :n] * 2**levels


def cascade_histories(n: int, draws: int, generator: torch.Generator) -> Tensor:
    """``[draws, L, n]`` histories whose differences are independent binomial cascades."""
    return binomial_cascade(n, draws * N_LAYERS, generator).reshape(draws, N_LAYERS, n).cumsum(-1)


def logistic_map(n: int, draws: int, generator: torch.Generator, r: float = LOGISTIC_R) -> Tensor:
    """``[draws, n]`` orbits of ``x -> r x (1 - x)`` from uniform starts in (0.1, 0.9), after 100 steps."""
    x = 0.1 + 0.8 * torch.rand(draws, generator=generator, dtype=torch.float64)
    out = torch.empty(draws, n, dtype=torch.float64)
    for t in range(-100, n):
        x = r * x * (1 - x)
        if t >= 0:
            out[:, t] = x
    return out


def sine_series(n: int, draws: int, generator: torch.Generator) -> Tensor:
    """``[draws, n]`` sines with random periods in (7, 13) points and random phases (lambda = 0)."""
    period = 7 + 6 * torch.rand(draws, 1, generator=generator, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(draws, 1, generator=generator, dtype=torch.float64)
    t = torch.arange(n, dtype=torch.float64)
    return torch.sin(2 * math.pi * t / period + phase)


def lorenz_x(n: int, draws: int, generator: torch.Generator, tau: float = LORENZ_TAU, dt: float = 0.01) -> Tensor:
    """``[draws, n]`` x-coordinate of the Lorenz system (10, 28, 8/3) every ``tau`` time units (RK4, step ``dt``)."""

    def field(s: Tensor) -> Tensor:
        x, y, z = s.unbind(-1)
        return torch.stack([10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z], dim=-1)

    state = torch.tensor([1.0, 1.0, 20.0], dtype=torch.float64) + torch.randn(
        draws, 3, generator=generator, dtype=torch.float64
    )
    per_sample = round(tau / dt)
    out = torch.empty(draws, n, dtype=torch.float64)
    for t in range(-50 * per_sample, n * per_sample):
        k1 = field(state)
        k2 = field(state + 0.5 * dt * k1)
        k3 = field(state + 0.5 * dt * k2)
        k4 = field(state + dt * k3)
        state = state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if t >= 0 and t % per_sample == 0:
            out[:, t // per_sample] = state[:, 0]
    return out


# ----------------------------------------------------------------------------------------------- truths
def higuchi_truth(hurst: float, kmax: int = HIGUCHI_KMAX) -> float:
    """Large-T Higuchi FD of fGn: slope of ``log(sqrt(1 - rho(k)) / k^2)`` against ``log(1/k)``, k = 1..kmax.

    For large N, ``L(k) -> (N - 1) E|x_{t+k} - x_t| / k^2`` and ``E|x_{t+k} - x_t| = sqrt(4 (1 - rho(k)) / pi)``
    for unit Gaussian noise; white noise (rho = 0) gives exactly 2.
    """
    k = torch.arange(1, kmax + 1, dtype=torch.float64)
    log_length = 0.5 * torch.log(1 - fgn_autocorrelation(k, hurst)) - 2 * torch.log(k)
    x = -torch.log(k)
    return float(((x - x.mean()) * (log_length - log_length.mean())).sum() / (x - x.mean()).square().sum())


def cascade_width_truth(a: float = CASCADE_A) -> float:
    """Spectrum width of the binomial cascade on ``DEFAULT_Q``, with the same finite-difference Legendre transform."""
    q = torch.tensor(DEFAULT_Q, dtype=torch.float64)
    safe = torch.where(q == 0, torch.ones_like(q), q)
    h = torch.where(
        q == 0,
        torch.tensor(0.5 * math.log2(1 / (a * (1 - a))), dtype=torch.float64),  # the q -> 0 limit
        1 / safe - torch.log(a**safe + (1 - a) ** safe) / (safe * math.log(2)),
    )
    alpha = torch.gradient(q * h - 1, spacing=(q,))[0]
    return float(alpha.max() - alpha.min())


def closed_form_truths() -> dict[str, dict[str, float]]:
    """Truth per measure per family where a closed form exists."""
    out: dict[str, dict[str, float]] = {m: {} for m in PANELS}
    for h in (0.3, 0.5, 0.8):
        for fam in (f"fgn_H{h}", f"fgn_H{h}_rho0.9"):
            out["dfa_alpha"][fam] = out["integration_alpha"][fam] = h
            out["integration"][fam] = float(integration_from_alpha(torch.tensor(h, dtype=torch.float64)))
        out["higuchi_fd"][f"fgn_H{h}"] = higuchi_truth(h)
        out["mfdfa_width"][f"fgn_H{h}"] = 0.0
    for fam in ("walk_increments", "walk_increments_rho0.9"):
        out["dfa_alpha"][fam] = out["integration_alpha"][fam] = 1.5
        out["integration"][fam] = float(integration_from_alpha(torch.tensor(1.5, dtype=torch.float64)))
    for h in (0.3, 0.8):  # fBm paths: DFA exponent H + 1, Higuchi FD 2 - H
        out["dfa_alpha"][f"fbm_H{h}"] = h + 1
        out["higuchi_fd"][f"fbm_H{h}"] = 2 - h
    out["higuchi_fd"]["walk_increments"] = 1.5
    out["mfdfa_width"]["binomial_cascade"] = cascade_width_truth()
    out["lyapunov_rosenstein"].update(logistic=math.log(2), sine=0.0, lorenz=LORENZ_LAMBDA)
    return out


# ----------------------------------------------------------------------------------------------- measurement
LAYER_FAMILIES: dict[str, Callable[[int, int, torch.Generator], Tensor]] = {
    "fgn_H0.3": lambda n, d, g: fgn_histories(n, 0.3, d, g),
    "fgn_H0.5": lambda n, d, g: fgn_histories(n, 0.5, d, g),
    "fgn_H0.8": lambda n, d, g: fgn_histories(n, 0.8, d, g),
    "fgn_H0.3_rho0.9": lambda n, d, g: fgn_histories(n, 0.3, d, g, rho=0.9),
    "fgn_H0.5_rho0.9": lambda n, d, g: fgn_histories(n, 0.5, d, g, rho=0.9),
    "fgn_H0.8_rho0.9": lambda n, d, g: fgn_histories(n, 0.8, d, g, rho=0.9),
    "walk_increments": lambda n, d, g: fgn_histories(n, 0.5, d, g, integrate=2),
    "walk_increments_rho0.9": lambda n, d, g: fgn_histories(n, 0.5, d, g, rho=0.9, integrate=2),
    "fbm_H0.3": lambda n, d, g: fgn_histories(n, 0.3, d, g, integrate=2),
    "fbm_H0.8": lambda n, d, g: fgn_histories(n, 0.8, d, g, integrate=2),
    "kuramoto_uncoupled": lambda n, d, g: kuramoto_histories(n, "uncoupled", d, g),
    "kuramoto_coupled": lambda n, d, g: kuramoto_histories(n, "coupled", d, g),
    "kuramoto_switching": lambda n, d, g: kuramoto_histories(n, "switching", d, g),
    "binomial_cascade": cascade_histories,
}
SERIES_FAMILIES: dict[str, Callable[[int, int, torch.Generator], Tensor]] = {
    "logistic": logistic_map,
    "sine": sine_series,
    "lorenz": lorenz_x,
}
CROSS_LAYER = ("integration_alpha", "integration", "metastability", "synchrony", "phase_integration", "stability_index")
PER_LAYER = ("dfa_alpha", "higuchi_fd", "katz_fd", "mfdfa_width")


def layer_measures(x: Tensor, per_layer: bool = True) -> dict[str, Tensor]:
    """Every history measure of ``x: [draws, L, T]``: cross-layer ones ``[draws]``, per-layer ones ``[draws * L]``."""
    m = dynamics_measures(x)
    out = {
        "integration_alpha": m.integration_alpha,
        "integration": m.integration,
        "metastability": m.metastability,
        "synchrony": m.synchrony,
        "phase_integration": m.phase_integration,
        # The index of section 6 over one window spanning the whole series: its window must reach this T.
        "stability_index": combine_stability(m.integration, m.metastability),
    }
    if per_layer:  # the first PER_LAYER_LAYERS layers of each draw, pooled (independent layers: independent values)
        sub = x[:, :PER_LAYER_LAYERS]
        out["dfa_alpha"] = integration_alpha(sub.reshape(-1, 1, x.shape[-1]))
        out.update({k: v.reshape(-1) for k, v in history_complexity(sub).items()})
    return out


def _summary(values: Tensor) -> dict[str, float | int]:
    finite = values[torch.isfinite(values)]
    n = int(finite.numel())
    return {
        "mean": float(finite.mean()) if n else float("nan"),
        "sd": float(finite.std()) if n > 1 else float("nan"),
        "n": n,
        "n_undefined": int(values.numel() - n),
    }


def run(lengths: tuple[int, ...], draws: int, ref_length: int, ref_draws: int, seed: int) -> dict:
    """Measure every family at every length; returns the JSON-ready tables."""
    torch.manual_seed(seed)
    tables: dict[str, dict[str, dict[str, dict]]] = {m: {} for m in PANELS}
    references: dict[str, dict[str, dict]] = {m: {} for m in PANELS}
    timings: dict[str, float] = {}
    longest = max(lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsufficientDataWarning)
        for i, (family, make) in enumerate(LAYER_FAMILIES.items()):
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(seed + 1000 * i)
            x = make(longest, draws, generator)
            for n in lengths:
                values = layer_measures(x[..., :n], per_layer=not family.startswith("kuramoto") and "rho" not in family)
                for measure, v in values.items():
                    tables[measure].setdefault(family, {})[str(n)] = _summary(v)
            if family.startswith("kuramoto"):  # no closed form: the truth is the mean at ref_length points
                ref = make(ref_length, ref_draws, generator)
                for measure, v in layer_measures(ref, per_layer=False).items():
                    references[measure][family] = _summary(v)
            timings[family] = time.perf_counter() - start
        for i, (family, make) in enumerate(SERIES_FAMILIES.items()):
            start = time.perf_counter()
            generator = torch.Generator().manual_seed(seed + 1000 * (i + 100))
            count = max(8, draws // 4) if family == "lorenz" else draws
            x = make(longest, count, generator)
            for n in lengths:
                if family == "lorenz":
                    v = lyapunov_rosenstein(x[:, :n], tau=LORENZ_TAU, **LORENZ_PARAMS)
                else:
                    v = lyapunov_rosenstein(x[:, :n])
                tables["lyapunov_rosenstein"].setdefault(family, {})[str(n)] = _summary(v)
            timings[family] = time.perf_counter() - start
    truths = closed_form_truths()
    for measure, by_family in references.items():
        for family, summary in by_family.items():
            truths[measure][family] = summary["mean"]
    return {
        "lengths": list(lengths),
        "draws": draws,
        "n_layers": N_LAYERS,
        "seed": seed,
        "reference_length": ref_length,
        "reference_draws": ref_draws,
        "lorenz": {"tau": LORENZ_TAU, "params": LORENZ_PARAMS, "draws": max(8, draws // 4)},
        "panels": {k: list(v) for k, v in PANELS.items()},
        "truths": truths,
        "references": references,
        "tables": tables,
        "timings_s": timings,
    }


# ----------------------------------------------------------------------------------------------- criterion
def reliable(summary: dict, truth: float, gap: float) -> bool:
    """``|bias| + 2 sd <= gap / 2``, and every draw defined."""
    if summary["n_undefined"] or not math.isfinite(summary["sd"]):
        return False
    return abs(summary["mean"] - truth) + 2 * summary["sd"] <= gap / 2


def _gaps(truths: dict[str, float]) -> dict[str, float]:
    return {f: min(abs(t - u) for g, u in truths.items() if g != f) for f, t in truths.items()}


def reliable_min_points(
    result: dict, panels: dict[str, list[str]] | None = None, same_length: bool = False
) -> dict[str, int | None]:
    """The criterion of the module docstring applied to ``result`` (the JSON of :func:`run`).

    ``same_length=True`` takes the means at each T as the truths (bias 0): the panel's signals are told apart
    at that length, as when a reading is compared with a null of the same length. None where no length of the
    grid qualifies.
    """
    lengths = result["lengths"]
    out: dict[str, int | None] = {}
    for measure, panel in (panels or result["panels"]).items():
        table = result["tables"][measure]
        ok = []
        for n in lengths:
            if same_length or measure == "katz_fd":  # katz: no length-free truth, separability at this T
                truths = {f: table[f][str(n)]["mean"] for f in panel}
            else:
                truths = {f: result["truths"][measure][f] for f in panel}
            gaps = _gaps(truths)
            ok.append(all(reliable(table[f][str(n)], truths[f], gaps[f]) for f in panel))
        first = None
        for i in range(len(lengths) - 1, -1, -1):
            if not ok[i]:
                break
            first = lengths[i]
        out[measure] = first
    return out


def null_floors(result: dict) -> dict[str, dict[int, tuple[float, float]]]:
    """Mean and sd of every history measure on the null family (independent random-walk layers) per T."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for measure, by_family in result["tables"].items():
        if NULL_FAMILY in by_family:
            out[measure] = {
                int(n): (round(s["mean"], 3), round(s["sd"], 3))
                for n, s in by_family[NULL_FAMILY].items()
                if s["n"] > 1 and not s["n_undefined"]
            }
    return out


# ----------------------------------------------------------------------------------------------- output
def _cell(s: dict) -> str:
    if s["n"] == 0:
        return "NaN"
    text = f"{s['mean']:.3f} ± {s['sd']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"
    return text + (f" ({s['n_undefined']} NaN)" if s["n_undefined"] else "")


def markdown(result: dict) -> str:
    """The tables as markdown: mean ± sd per family and length, truth, and the reliable minimum per measure."""
    lengths = result["lengths"]
    minimum = reliable_min_points(result)
    separable = reliable_min_points(result, same_length=True)
    independent = reliable_min_points(result, {k: list(v) for k, v in INDEPENDENT_LAYER_PANELS.items()})
    lines = [
        f"Draws per cell: {result['draws']} histories of L = {result['n_layers']} layers; per-layer measures "
        f"pool draws x {PER_LAYER_LAYERS} layers of the independent-layer families; Lorenz "
        f"{result['lorenz']['draws']} series; seed {result['seed']}. Kuramoto truths: mean over "
        f"{result['reference_draws']} histories of T = {result['reference_length']}.",
        "",
    ]
    for measure, by_family in result["tables"].items():
        panel = result["panels"][measure]
        extra = f"; independent layers: {independent[measure]}" if measure in independent else ""
        lines.append(
            f"### {measure}  (reliable from T = {minimum[measure]}; separable at the same T from "
            f"{separable[measure]}{extra}; panel: {', '.join(panel)})"
        )
        lines.append("")
        lines.append("| signal | truth | " + " | ".join(f"T={n}" for n in lengths) + " |")
        lines.append("|---|---|" + "---|" * len(lengths))
        for family, cells in by_family.items():
            truth = result["truths"][measure].get(family)
            t = "-" if truth is None else f"{truth:.3f}"
            mark = "**" if family in panel else ""
            row = " | ".join(_cell(cells[str(n)]) for n in lengths)
            lines.append(f"| {mark}{family}{mark} | {t} | {row} |")
        lines.append("")
    return "\n".join(lines)


def compact_markdown(result: dict, lengths: tuple[int, ...] = (16, 24, 32, 48, 64, 128, 200, 400, 1000)) -> str:
    """One table for docs/method.md: bias ± sd of each panel signal (Katz: mean ± sd) and each measure's null."""
    shown = [n for n in lengths if n in result["lengths"]]
    minimum = reliable_min_points(result)
    lines = [
        "| measure (reliable from T) | signal | truth | " + " | ".join(f"T={n}" for n in shown) + " |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    for measure in result["panels"]:
        table, truths = result["tables"][measure], result["truths"][measure]
        rows = list(result["panels"][measure])
        if NULL_FAMILY in table and NULL_FAMILY not in rows:
            rows.append(NULL_FAMILY)
        for i, family in enumerate(rows):
            truth = truths.get(family) if measure != "katz_fd" else None
            cells = []
            for n in shown:
                c = table[family][str(n)]
                if c["n"] < 2 or c["n_undefined"] == c["n"] + c["n_undefined"]:
                    cells.append("NaN")
                    continue
                value = c["mean"] - truth if truth is not None else c["mean"]
                sign = "+" if truth is not None and value >= 0 else ""
                cells.append(f"{sign}{value:.3f} ± {c['sd']:.3f}" + ("*" if c["n_undefined"] else ""))
            name = f"{measure} ({minimum[measure] or 'never'})" if i == 0 else ""
            label = f"{family} (null)" if family == NULL_FAMILY and family not in result["panels"][measure] else family
            t = "-" if truth is None else f"{truth:.3f}"
            lines.append(f"| {name} | {label} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 lengths, 16 draws: the smoke test's mode")
    parser.add_argument("--draws", type=int, default=None, help="histories per cell (default 200; quick 16)")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    draws = args.draws or (16 if args.quick else 200)
    ref_length, ref_draws = (400, 8) if args.quick else (T_REF, 40)
    start = time.perf_counter()
    result = run(lengths, draws, ref_length, ref_draws, args.seed)
    result["reliable_min_points"] = reliable_min_points(result)
    result["separable_min_points"] = reliable_min_points(result, same_length=True)
    result["reliable_min_points_independent_layers"] = reliable_min_points(
        result, {k: list(v) for k, v in INDEPENDENT_LAYER_PANELS.items()}
    )
    result["null_floors"] = {m: {str(n): v for n, v in d.items()} for m, d in null_floors(result).items()}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["command"] = "benchmarks/noise_floors.py" + (" --quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "noise_floors_quick" if args.quick else "noise_floors"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    (args.out / f"{name}_tables.md").write_text(compact_markdown(result) + "\n\n" + markdown(result) + "\n")
    print(markdown(result))
    for key in ("reliable_min_points", "separable_min_points", "reliable_min_points_independent_layers"):
        print(f"{key}:", result[key])
    print(f"wall {result['wall_s']} s")
    return result


if __name__ == "__main__":
    main()
