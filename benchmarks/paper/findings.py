"""The three findings of arXiv:2604.09716 tested on the runs written by ``run.py``, with seeds and nulls.

Per run (its ``[L, T]`` rms history, ``T`` = epochs), every measure comes with a surrogate z-score
(:func:`~lightning_dynamics.functional.surrogate_test`: phase-randomised layers, same spectra, no cross-layer
coupling; docs/method.md section 7) and, for the DFA exponent, which phase surrogates keep by construction, a
shuffle null (each layer's detrended series permuted in time: white noise with the same values). There is no
per-run interval over layers (resampling layers with replacement duplicates a layer, which is phase-locked with
itself): seeds are the units. Per (architecture, task) cell: mean, sd and Student-t interval over seeds.

1. The task effect, in the 2x2 of input width x classes (``CONTRASTS``): alpha over a matched training phase
   (primary; :func:`phase_window`), alpha and integration over the whole run; per architecture the exact
   permutation test, the interval that inverts it (:func:`shift_interval`), Hedges' g, Holm over the
   architectures; pooled (task labels permuted within architecture), leave-one-architecture-out, and an
   architecture-level sign-flip test (:func:`contrast`). Units: white-noise sd and seed sd.
2. The volatility signal comes before the accuracy plateau: lead = plateau epoch - signal epoch
   (:func:`~lightning_dynamics.decisions.stopping.convergence_signal`), its distribution, a sign test, the
   signal-plateau rank correlation (NaN below 3 runs), and the signal on surrogate histories.
3. Distinct training styles in the integration-metastability plane: each run's trajectory as the monitor
   logs it (measures over the history so far), the spread over sliding 16-epoch windows, and a permutation
   test of architecture separation on the whole-run points (raw and as surrogate z-scores, since
   metastability's floor depends on the number of layers).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_dynamics.capture import load_history
from lightning_dynamics.decisions.stopping import convergence_signal
from lightning_dynamics.functional import (
    detrend,
    integration,
    integration_alpha,
    metastability,
    phase_integration,
    phase_randomized_surrogates,
    rolling_volatility,
    stability_index,
    surrogate_test,
)
from lightning_dynamics.report.analysis import accuracy_plateau_epoch

WINDOW = 16
#: Values of one group: a sequence or a 1-D array.
Values = Sequence[float] | np.ndarray
RNG_SEED = 2604


def load_run(run_dir: Path) -> dict[str, Any]:
    """One run: ``metrics.json`` and its two package history files (:func:`lightning_dynamics.capture.load_history`)."""
    from benchmarks.paper.run import history_file

    record = json.loads((run_dir / "metrics.json").read_text())
    record["x"] = load_history(history_file(run_dir, "dynamics"))["values"].double()
    record["name"] = run_dir.name
    return record


def _shuffle_z(x: Tensor, n: int, generator: torch.Generator) -> float:
    """z of integration_alpha against each layer's detrended series permuted in time (white-noise null)."""
    series = detrend(x, "diff").series
    order = torch.stack([torch.randperm(series.shape[-1], generator=generator) for _ in range(n * series.shape[0])])
    shuffled = series.repeat(n, 1).gather(-1, order).view(n, *series.shape)
    null = integration_alpha(shuffled, detrend=None)
    value = integration_alpha(series, detrend=None)
    return float((value - null.mean()) / null.std())


MEASURES: dict[str, Callable[..., Tensor]] = {
    "integration": integration,
    "integration_alpha": integration_alpha,
    "metastability": metastability,
    "phase_integration": phase_integration,
}


def run_measures(x: Tensor, n_surrogates: int, generator: torch.Generator) -> dict[str, Any]:
    """Whole-history measures with their phase-surrogate z and, for alpha, the shuffle (white-noise) z.

    No per-run interval over layers: resampling layers with replacement duplicates a layer, which is perfectly
    phase-locked with itself, and biases metastability and phase integration upwards. Uncertainty is taken
    over seeds instead (:func:`t_interval`, :func:`shift_interval`).
    """
    out: dict[str, Any] = {}
    for name, measure in MEASURES.items():
        test = surrogate_test(measure, x, n=n_surrogates, generator=generator, alternative="two-sided")
        out[name] = {
            "value": float(measure(x)),
            "surrogate_z": float(test.z),
            "surrogate_p": float(test.p),
            "surrogate_mean": float(test.surrogate_mean),
        }
    out["integration_alpha"]["shuffle_z"] = _shuffle_z(x, n_surrogates, generator)
    return out


def window_trajectory(x: Tensor, window: int = WINDOW) -> tuple[list[float], list[float]]:
    """Integration and metastability of each sliding window ``X[:, t-w+1..t]`` (the stability index's terms)."""
    windows = x.unfold(-1, window, 1).permute(1, 0, 2)  # [n_windows, L, window]
    return integration(windows).tolist(), metastability(windows).tolist()


@functools.lru_cache(maxsize=32)
def _split_masks(n_a: int, n_b: int) -> np.ndarray:
    """Every assignment of ``n_a`` of the ``n_a + n_b`` pooled values to the first group, as a boolean matrix."""
    n = n_a + n_b
    combos = list(itertools.combinations(range(n), n_a))
    masks = np.zeros((len(combos), n), dtype=bool)
    for row, chosen in enumerate(combos):
        masks[row, list(chosen)] = True
    return masks


def permutation_p(a: Values, b: Values, shift: float = 0.0) -> float:
    """Exact two-sided permutation p of ``mean(b) - mean(a) = shift`` (all splits of the pooled values).

    The test of a shift ``shift`` permutes ``a`` with ``b - shift``; NaN when a group has fewer than 2 values
    (a test with one value per group has no power and is not reported).

    Example:
        >>> permutation_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])  # the most extreme split of 3 vs 3: 2 of 20
        0.1
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float) - shift
    if x.size < 2 or y.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    pooled = np.concatenate([x, y])
    masks = _split_masks(x.size, y.size)
    first = (masks * pooled).sum(1) / x.size
    second = (~masks * pooled).sum(1) / y.size
    observed = abs(y.mean() - x.mean())
    scale = max(1.0, float(np.abs(pooled).max()))
    return float(np.mean(np.abs(second - first) >= observed - 1e-12 * scale))


def shift_interval(a: Values, b: Values, level: float = 0.95) -> tuple[float, float]:
    """Interval of ``mean(b) - mean(a)`` from inverting :func:`permutation_p`: the shifts it does not reject.

    By construction the interval holds 0 exactly when ``permutation_p(a, b) > 1 - level``, so an interval and
    its test never disagree. ``(-inf, inf)`` when no shift can be rejected (too few values); NaN as for the test.

    Example:
        >>> a, b = [1.0, 1.2, 0.9, 1.1, 1.0], [2.0, 2.1, 1.9, 2.3, 2.0]
        >>> low, high = shift_interval(a, b)
        >>> bool(0 < low < 1.02 < high), round(permutation_p(a, b), 4)
        (True, 0.0079)
    """
    alpha = 1.0 - level
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    p0 = permutation_p(x, y)
    if math.isnan(p0):
        return math.nan, math.nan
    estimate = float(y.mean() - x.mean())
    span = float(np.ptp(np.concatenate([x, y]))) + 1e-12
    bounds = []
    for direction in (-1.0, 1.0):
        inside, outside = estimate, estimate + direction * span
        for _ in range(8):  # beyond a few spans every split is as extreme as it gets
            if permutation_p(x, y, outside) <= alpha:
                break
            outside += direction * span
        else:  # no shift is rejected at this level (too few values): the bound is infinite
            bounds.append(direction * math.inf)
            continue
        for _ in range(60):  # bisection to 2^-60 of the span
            middle = 0.5 * (inside + outside)
            if permutation_p(x, y, middle) > alpha:
                inside = middle
            else:
                outside = middle
        bounds.append(inside)
    low, high = bounds
    # The acceptance region of a permutation test need not be exactly convex: keep the reported interval
    # consistent with the test at 0, the one claim it is read for.
    if p0 > alpha:
        low, high = min(low, 0.0), max(high, 0.0)
    elif low <= 0.0 <= high:
        low, high = (low, -math.ulp(0.0)) if estimate < 0 else (math.ulp(0.0), high)
    return low, high


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean over seeds; NaN for fewer than 2 finite values.

    Example:
        >>> [round(v, 3) for v in t_interval([1.0, 2.0, 3.0])]
        [-0.484, 4.484]
    """
    from scipy.stats import t

    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if data.size < 2:
        return math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return float(data.mean()) - half, float(data.mean()) + half


def hedges_g(a: Values, b: Values) -> float:
    """Hedges' g of ``b - a`` (pooled-sd standardised difference with the small-sample correction ``J``).

    Example:
        >>> round(hedges_g([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]), 3)  # d = 1, J = 1 - 3 / (4 * 6 - 9) = 0.8
        0.8
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return math.nan
    pooled = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    if pooled == 0:
        return math.nan
    return float((y.mean() - x.mean()) / pooled * (1 - 3 / (4 * (x.size + y.size) - 9)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone); NaN entries stay NaN and do not count as tests.

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, math.nan])]
        [0.03, 0.06, 0.06, nan]
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[index] = running
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Per test, the confidence level at which its inverted-test interval agrees with Holm's step-down at ``alpha``.

    Holm tests the ``k``-th smallest of ``m`` p-values at ``alpha / (m - k)`` (``k`` from 0) while every smaller
    one was rejected; from the first one it keeps, all later ones stay at that first one's level. An interval
    at ``1 -`` that level then excludes 0 exactly when the Holm-adjusted p is at most ``alpha`` (the step-down
    confidence intervals of Strassburger & Bretz, Stat Med 27:4914, 2008, for rejected hypotheses are wider
    still; these are the simple consistent ones). NaN p-values get NaN.

    Example:
        >>> [round(v, 4) for v in holm_levels([0.008, 0.048, 0.77])]
        [0.9833, 0.975, 0.975]
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    levels = [math.nan] * len(p_values)
    m = len(finite)
    kept_at: float | None = None
    for rank, (p, index) in enumerate(finite):
        level = alpha / (m - rank) if kept_at is None else kept_at
        if kept_at is None and p > level:
            kept_at = level
        levels[index] = 1.0 - level
    return levels


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip test of a zero mean over units (e.g. one difference per architecture).

    With ``n`` units the smallest possible p is ``2 / 2**n`` (0.25 for 3 architectures); NaN for no unit.

    Example:
        >>> sign_flip_p([0.1, 0.2, 0.3])
        0.25
    """
    d = np.asarray([v for v in differences if math.isfinite(v)], dtype=float)
    if d.size == 0:
        return math.nan
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    null = np.abs((signs * d).mean(1))
    return float(np.mean(null >= abs(d.mean()) - 1e-12 * max(1.0, float(np.abs(d).max()))))


def effect(a: Values, b: Values) -> dict[str, Any]:
    """``mean(b) - mean(a)`` with its exact permutation p, the inverted-test 95% interval and Hedges' g."""
    n_a, n_b = len(a), len(b)
    return {
        "diff": statistics.fmean(b) - statistics.fmean(a) if n_a and n_b else math.nan,
        "ci": shift_interval(a, b),
        "p": permutation_p(a, b),
        "min_p": (1 if n_a != n_b else 2) / math.comb(n_a + n_b, n_a) if n_a >= 2 and n_b >= 2 else math.nan,
        "g": hedges_g(a, b),
        "n": (n_a, n_b),
    }


def stratified_permutation_p(groups: list[tuple[list[float], list[float]]], n: int, rng: np.random.Generator) -> float:
    """Two-sided p of the mean within-stratum difference, task labels permuted within each stratum."""

    def statistic(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
        return float(np.mean([b.mean() - a.mean() for a, b in pairs]))

    arrays = [(np.asarray(a, float), np.asarray(b, float)) for a, b in groups]
    observed = abs(statistic(arrays))
    hits = 0
    for _ in range(n):
        shuffled = []
        for a, b in arrays:
            pooled = rng.permutation(np.concatenate([a, b]))
            shuffled.append((pooled[: a.size], pooled[a.size :]))
        hits += abs(statistic(shuffled)) >= observed - 1e-12
    return (hits + 1) / (n + 1)


def white_noise_alpha(layers: int, points: int, n: int = 300, seed: int = 0) -> dict[str, float]:
    """Spread of the DFA exponent of white noise at this size: one layer, and the mean over ``layers``."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, layers, points, generator=g, dtype=torch.float64).cumsum(-1)  # diff gives white noise
    alpha = integration_alpha(noise)
    from lightning_dynamics.functional import dfa

    single = dfa(torch.randn(n, points - 1, generator=g, dtype=torch.float64))
    return {
        "single_layer_mean": float(single.mean()),
        "single_layer_sd": float(single.std()),
        "layer_mean_sd": float(alpha.std()),
        "layer_mean_mean": float(alpha.mean()),
    }


def separation_p(points: np.ndarray, labels: list[str], n: int, rng: np.random.Generator) -> tuple[float, float]:
    """Between/within dispersion ratio of labelled 2-D points (standardised) and its permutation p-value."""
    z = (points - points.mean(0)) / np.where(points.std(0) > 0, points.std(0), 1.0)
    labels_array = np.asarray(labels)

    def ratio(lab: np.ndarray) -> float:
        centre = z.mean(0)
        between = within = 0.0
        for group in np.unique(lab):
            members = z[lab == group]
            between += len(members) * float(((members.mean(0) - centre) ** 2).sum())
            within += float(((members - members.mean(0)) ** 2).sum())
        return between / max(within, 1e-12)

    observed = ratio(labels_array)
    hits = sum(ratio(rng.permutation(labels_array)) >= observed - 1e-12 for _ in range(n))
    return observed, (hits + 1) / (n + 1)


#: Stopping-rule settings the lead is measured for: the defaults, and a looser one fixed in advance (not tuned).
SIGNAL_RULES: dict[str, tuple[float, int]] = {"default (ratio 0.25, patience 3)": (0.25, 3), "loose (0.5, 2)": (0.5, 2)}


def _surrogate_volatility(x: Tensor, n: int, generator: torch.Generator) -> list[list[float]]:
    """Volatility series of histories rebuilt from phase-randomised detrended layers (no cross-layer coupling).

    A surrogate has ``T - 1`` points (it is the cumulative sum of the detrended series), so its entry ``i``
    belongs to epoch ``i + 1``: one NaN is prepended.
    """
    detrended = detrend(x, "diff")
    surrogates = phase_randomized_surrogates(detrended.series, n, generator).cumsum(-1)
    volatility = rolling_volatility(stability_index(surrogates))
    return [[math.nan, *series] for series in volatility.tolist()]


def lead_of_run(run: dict[str, Any], n_surrogates: int, generator: torch.Generator) -> dict[str, Any]:
    """Signal, plateau and lead for each rule of :data:`SIGNAL_RULES`, with the signal on surrogates."""
    volatility = run["monitor_metrics"]["dynamics"]["stability_volatility"]
    accuracy = run["epoch_metrics"]["val_acc"]
    epochs = list(range(len(volatility)))
    plateau = accuracy_plateau_epoch(accuracy)
    surrogate_volatility = _surrogate_volatility(run["x"], n_surrogates, generator)
    out: dict[str, Any] = {"plateau": plateau, "best_acc": max(accuracy), "final_acc": accuracy[-1], "rules": {}}
    for name, (ratio, patience) in SIGNAL_RULES.items():
        signal = convergence_signal(volatility, epochs, ratio=ratio, patience=patience)
        surrogate = [convergence_signal(v, epochs, ratio=ratio, patience=patience) for v in surrogate_volatility]
        surrogate_epochs = [len(epochs) if e is None else e for e in surrogate]  # never fired: the budget
        observed = len(epochs) if signal is None else signal
        spread = statistics.pstdev(surrogate_epochs)
        out["rules"][name] = {
            "signal": signal,
            "lead": None if signal is None else plateau - signal,
            "surrogate_fired": sum(e is not None for e in surrogate) / len(surrogate),
            "surrogate_signal_mean": statistics.mean(surrogate_epochs),
            "surrogate_signal_z": (observed - statistics.mean(surrogate_epochs)) / spread if spread > 0 else math.nan,
        }
    return out


def _spearman(a: Values, b: Values) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "nan"
    return ("-inf" if value < 0 else "inf") if math.isinf(value) else f"{value:.{digits}f}"


def contrast(
    label: str,
    values: dict[str, tuple[list[float], list[float]]],
    white_noise_sd: dict[str, float] | None,
    n_permutations: int,
    rng: np.random.Generator,
) -> tuple[dict[str, Any], list[str]]:
    """One endpoint's contrast ``b - a`` per architecture and pooled; its result and its markdown table rows.

    Per architecture: :func:`effect` (difference, exact p, inverted-test interval, Hedges' g), the Holm-adjusted
    p over the architectures, the difference in seed sd (pooled within the two cells) and in ``white_noise_sd``.
    Pooled: task labels permuted within architecture; leave-one-architecture-out; an exact sign-flip test over
    the architectures' differences (the architectures as units).
    """

    def sd(v: Sequence[float]) -> float:
        return statistics.stdev(v) if len(v) > 1 else math.nan

    per_arch: dict[str, Any] = {}
    groups = []
    for arch, (a, b) in values.items():
        if not a or not b:
            continue
        res = effect(a, b)
        seed_sd = math.sqrt((sd(a) ** 2 + sd(b) ** 2) / 2) if len(a) > 1 and len(b) > 1 else math.nan
        wn = math.nan if white_noise_sd is None else white_noise_sd[arch]
        res["in_seed_sd"] = res["diff"] / seed_sd if seed_sd > 0 else math.nan
        res["in_white_noise_sd"] = res["diff"] / wn if wn > 0 else math.nan
        per_arch[arch] = res
        if len(a) > 1 and len(b) > 1:
            groups.append((arch, a, b))
    for arch, adjusted in zip(per_arch, holm([r["p"] for r in per_arch.values()]), strict=True):
        per_arch[arch]["holm_p"] = adjusted
    # Intervals at the level Holm tests each architecture at, so that an interval excludes 0 exactly when the
    # Holm p is <= 0.05; the unadjusted 95% interval is kept beside it in the JSON.
    for arch, level in zip(per_arch, holm_levels([r["p"] for r in per_arch.values()]), strict=True):
        a, b = values[arch]
        per_arch[arch]["ci_unadjusted"] = per_arch[arch]["ci"]
        per_arch[arch]["ci_level"] = level
        per_arch[arch]["ci"] = shift_interval(a, b, level) if math.isfinite(level) else (math.nan, math.nan)
    pooled = stratified_permutation_p([(a, b) for _, a, b in groups], n_permutations, rng) if groups else math.nan
    loao = {
        left_out: stratified_permutation_p([(a, b) for arch, a, b in groups if arch != left_out], n_permutations, rng)
        for left_out, _, _ in groups
        if len(groups) > 1
    }
    arch_level = sign_flip_p([r["diff"] for r in per_arch.values()]) if len(per_arch) > 1 else math.nan
    rows = [
        f"| {label} | {arch} | {r['n'][0]} vs {r['n'][1]} | {_fmt(r['diff'])} [{_fmt(r['ci'][0])}, "
        f"{_fmt(r['ci'][1])}] | {_fmt(r['p'], 3)} | {_fmt(r['holm_p'], 3)} | {_fmt(r['g'], 2)} | "
        f"{_fmt(r['in_white_noise_sd'], 2)} | {_fmt(r['in_seed_sd'], 2)} |"
        for arch, r in per_arch.items()
    ]
    pooled_label = "pooled" + (
        " (LOAO: "
        + ", ".join(f"without {k} {_fmt(v, 4)}" for k, v in loao.items())
        + f"; architecture-level sign-flip p {_fmt(arch_level, 2)})"
        if loao
        else ""
    )
    rows.append(f"| {label} | {pooled_label} | | | {_fmt(pooled, 4)} | | | | |")
    return {"archs": per_arch, "pooled_p": pooled, "loao_p": loao, "arch_level_p": arch_level}, rows


CONTRAST_HEADER = [
    "| endpoint | arch | seeds | difference [Holm-level CI] | p | Holm p | g | in white-noise sd | in seed sd |",
    "|---|---|---|---|---|---|---|---|---|",
]


def reanalyse(summary_path: Path, n_permutations: int = 20000) -> list[str]:
    """Finding 1 of an earlier ``summary.json`` (tasks digits and pairs) with the current statistics.

    Reads only the per-run values stored there (whole-run alpha and integration), so no run is retrained.
    """
    summary = json.loads(Path(summary_path).read_text())
    runs = summary["runs"]
    rng = np.random.default_rng(RNG_SEED)
    parsed = [(name.rsplit("_seed", 1)[0].rsplit("_", 1), name) for name in runs]
    archs = list(dict.fromkeys(arch for (arch, _), _ in parsed))
    lines = [
        f"# Finding 1 of `{Path(summary_path).parent.name}` with the current statistics (pairs - digits)",
        "",
        "Recomputed from the per-run values in its summary.json by `python -m benchmarks.paper.findings "
        f"--reanalyse {summary_path}`: exact permutation p, the interval that inverts it, Holm over the "
        f"architectures, Hedges' g, pooled / leave-one-architecture-out ({n_permutations} permutations) and "
        "architecture-level tests. The contrast mixes input width (8x8 vs 8x16) with the number of classes.",
        "",
        *CONTRAST_HEADER,
    ]
    result = {}
    for key, label in (("integration_alpha", "alpha, whole run"), ("integration", "integration, whole run")):

        def of(arch: str, task: str, measure: str = key) -> list[float]:
            return [float(runs[n]["measures"][measure]["value"]) for (a, t), n in parsed if a == arch and t == task]

        values = {arch: (of(arch, "digits"), of(arch, "pairs")) for arch in archs}
        layers = {arch: next(runs[n]["layers"] for (a, _), n in parsed if a == arch) for arch in archs}
        points = next(iter(runs.values()))["points"]
        wn = {arch: white_noise_alpha(layers[arch], points)["layer_mean_sd"] for arch in archs}
        result[key], rows = contrast(label, values, wn if key != "integration" else None, n_permutations, rng)
        lines += rows
    return lines


def design_floor(n_a: int = 5, n_b: int = 5, tests: int = 3) -> tuple[float, float]:
    """The smallest exact two-sided p of an ``n_a`` vs ``n_b`` permutation test, and the smallest Holm p over
    ``tests`` of them (all at that floor, the smallest is multiplied by ``tests``).

    Example:
        >>> [round(v, 4) for v in design_floor()]
        [0.0079, 0.0238]
    """
    floor = (1 if n_a != n_b else 2) / math.comb(n_a + n_b, n_a)
    return floor, min(1.0, tests * floor)


def reanalyse_2x2(summary_path: Path, n_permutations: int = 2000) -> list[str]:
    """The 2x2 contrasts of a ``summary.json`` (per-run ``endpoints``) with the current statistics, no retraining.

    Per architecture: exact p, Holm p and the Holm-level interval (:func:`holm_levels`), beside the unadjusted
    95% interval; the per-run matched-phase windows, to show where the phase is not matched.
    """
    summary = json.loads(Path(summary_path).read_text())
    runs = summary["runs"]
    rng = np.random.default_rng(RNG_SEED)
    parsed = {name: name.rsplit("_seed", 1)[0].rsplit("_", 1) for name in runs}
    archs = list(dict.fromkeys(arch for arch, _ in parsed.values()))
    floor, holm_floor = design_floor()
    lines = [
        f"# The 2x2 contrasts of `{Path(summary_path).parent.name}` with Holm-level intervals",
        "",
        f"`python -m benchmarks.paper.findings --reanalyse-2x2 {summary_path}` (per-run endpoints of its summary.json; "
        "no retraining). Interval: the inverted exact permutation test at the level Holm tests that architecture at, "
        "so it excludes 0 exactly when Holm p <= 0.05; the unadjusted 95% interval beside it. Design floor: with 5 vs "
        f"5 seeds the smallest exact p is {floor:.4f} (2/252) and the smallest Holm p over 3 architectures "
        f"{holm_floor:.4f}.",
        "",
        "| contrast | endpoint | arch | difference | Holm-level CI (level) | unadjusted 95% CI | p | Holm p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    result: dict[str, Any] = {}
    for contrast_name, (base, other) in CONTRASTS.items():
        for key, label in ENDPOINTS.items():

            def of(arch: str, task: str, measure: str = key) -> list[float]:
                return [
                    float(runs[n]["endpoints"][measure])
                    for n, (a, t) in sorted(parsed.items(), key=lambda item: item[0])
                    if a == arch and t == task
                ]

            values = {arch: (of(arch, base), of(arch, other)) for arch in archs}
            res, _ = contrast(label, values, None, n_permutations, rng)
            result[f"{contrast_name} / {key}"] = res
            for arch, r in res["archs"].items():
                lines.append(
                    f"| {contrast_name} | {label} | {arch} | {_fmt(r['diff'])} | [{_fmt(r['ci'][0], 2)}, "
                    f"{_fmt(r['ci'][1], 2)}] ({r['ci_level']:.3f}) | [{_fmt(r['ci_unadjusted'][0], 2)}, "
                    f"{_fmt(r['ci_unadjusted'][1], 2)}] | {_fmt(r['p'], 3)} | {_fmt(r['holm_p'], 3)} |"
                )
    windows = {
        task: sorted(runs[n]["phase_window"][0] for n, (a, t) in parsed.items() if a == "vit" and t == task)
        for task in ("digits", "pairs8", "digits16", "pairs")
    }
    lines += [
        "",
        "Matched-phase window starts of the ViT runs (epoch of half the accuracy gain, clamped so that the 24-epoch "
        "window ends at the budget of 40): " + "; ".join(f"{task} {starts}" for task, starts in windows.items()) + ".",
    ]
    return lines


#: Epochs in the matched-phase window (see :func:`phase_window`).
PHASE_WINDOW = 24

#: The contrasts of the 2x2 of input width x classes: name -> (baseline task, compared task). Computed for every
#: pair of tasks present in the runs.
CONTRASTS: dict[str, tuple[str, str]] = {
    "classes at 8x8 (pairs8 - digits)": ("digits", "pairs8"),
    "classes at 8x16 (pairs - digits16)": ("digits16", "pairs"),
    "width at 10 classes (digits16 - digits)": ("digits", "digits16"),
    "width at 100 classes (pairs - pairs8)": ("pairs8", "pairs"),
    "the first study's contrast, classes and width together (pairs - digits)": ("digits", "pairs"),
}

#: Endpoints, primary first: alpha over the matched-phase window, alpha over the whole run, integration.
ENDPOINTS: dict[str, str] = {
    "alpha_phase": "alpha, matched phase (primary)",
    "alpha": "alpha, whole run",
    "integration": "integration, whole run (secondary)",
}


def phase_window(accuracy: Sequence[float], width: int = PHASE_WINDOW) -> tuple[int, int]:
    """Epochs ``[start, start + width)`` from the first epoch that has made half of the run's accuracy gain.

    The gain is from epoch 0 to the best validation accuracy; a window that would pass the budget is moved
    back to end at it (a run still learning at the end is then compared over its last ``width`` epochs).

    Example:
        >>> phase_window([10.0, 30.0, 60.0, 80.0, 90.0, 90.0, 91.0, 90.0], width=4)
        (2, 6)
    """
    acc = np.asarray(accuracy, dtype=float)
    if acc.size < width:
        raise ValueError(f"`accuracy` has {acc.size} epochs, fewer than the window width={width}.")
    half = acc[0] + 0.5 * (np.nanmax(acc) - acc[0])
    start = int(np.flatnonzero(acc >= half)[0]) if np.nanmax(acc) > acc[0] else 0
    start = min(start, acc.size - width)
    return start, start + width


def _endpoint_values(run: dict[str, Any]) -> dict[str, float]:
    start, stop = phase_window(run["epoch_metrics"]["val_acc"], min(PHASE_WINDOW, run["x"].shape[1]))
    return {
        "alpha_phase": float(integration_alpha(run["x"][:, start:stop])),
        "alpha": run["measures"]["integration_alpha"]["value"],
        "integration": run["measures"]["integration"]["value"],
    }


def analyse(
    out: Path,
    names: list[str],
    tasks: Sequence[str],
    n_surrogates: int = 20,
    n_permutations: int = 2000,
    stopping: tuple[list[str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``summary.md``, ``summary.json`` and the figures under ``out``; return the summary.

    ``stopping``: the lines and result of the early-stopping study (``stopping.run_study``), appended.
    """
    torch.manual_seed(RNG_SEED)
    generator = torch.Generator().manual_seed(RNG_SEED)
    rng = np.random.default_rng(RNG_SEED)
    runs = [load_run(out / "runs" / n) for n in names if (out / "runs" / n / "metrics.json").is_file()]
    diverged = [r["name"] for r in runs if not bool(r["x"].isfinite().all())]
    runs = [r for r in runs if r["name"] not in diverged]
    if not runs:
        raise FileNotFoundError(f"no finished run with a finite history under {out / 'runs'}.")
    missing = [n for n in names if not (out / "runs" / n / "metrics.json").is_file()]
    lines = [f"# Paper findings: {len(runs)} runs under {out}", ""]
    if missing:
        listed = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        lines += [f"Not (yet) trained, left out: {len(missing)} runs ({listed}).", ""]
    if diverged:
        lines += [f"Excluded (non-finite history: training diverged): {', '.join(diverged)}.", ""]
    summary: dict[str, Any] = {"runs": {}, "diverged": diverged, "missing": missing}
    archs = list(dict.fromkeys(r["arch"] for r in runs))
    tasks = [t for t in tasks if any(r["task"] == t for r in runs)]
    for run in runs:
        run["measures"] = run_measures(run["x"], n_surrogates, generator)
        run["endpoints"] = _endpoint_values(run)
        run["lead"] = lead_of_run(run, n_surrogates, generator)
        logged = run["monitor_metrics"]["dynamics"]
        pairs = [
            (i, m) for i, m in zip(logged["integration"], logged["metastability"], strict=True) if i == i and m == m
        ]
        run["trajectory"] = ([p[0] for p in pairs], [p[1] for p in pairs])
        window_integration, window_meta = window_trajectory(run["x"])
        run["window_sd"] = (float(np.nanstd(window_integration)), float(np.nanstd(window_meta)))
        summary["runs"][run["name"]] = {
            "measures": run["measures"],
            "endpoints": run["endpoints"],
            "phase_window": phase_window(run["epoch_metrics"]["val_acc"], min(PHASE_WINDOW, run["x"].shape[1])),
            "lead": run["lead"],
            "layers": run["x"].shape[0],
            "points": run["x"].shape[1],
            "seconds": run["seconds"],
            "window16_sd": run["window_sd"],
        }
    points = int(runs[0]["x"].shape[1])
    noise = {
        arch: {
            "whole": white_noise_alpha(int(layers), points),
            "phase": white_noise_alpha(int(layers), min(PHASE_WINDOW, points)),
        }
        for arch, layers in {r["arch"]: r["x"].shape[0] for r in runs}.items()
    }
    summary["white_noise_alpha"] = noise

    # Finding 1
    lines += ["## Finding 1: does the task change alpha (and integration)? The 2x2 of input width x classes", ""]
    lines += [
        "Tasks: digits (8x8, 10 classes), digits16 (the same digits zero-padded to 8x16), pairs8 (two real "
        "digits each halved in width, 8x8, 100 classes), pairs (two digits side by side, 8x16, 100 classes). "
        f"Primary endpoint: the mean DFA exponent alpha over a matched training phase, the {PHASE_WINDOW} epochs "
        "from the first epoch that made half of the run's accuracy gain (moved back to end at the budget if "
        "needed). Secondary: alpha and integration over the whole run. Units: the sd of the same endpoint "
        "computed on white noise of the same size (L layers, T points), and the seed sd (pooled within cells).",
        "",
        "White-noise reference (mean ± sd of alpha over L independent white-noise layers): "
        + "; ".join(
            f"{arch} (L={summary['runs'][next(r['name'] for r in runs if r['arch'] == arch)]['layers']}): "
            f"whole run {_fmt(v['whole']['layer_mean_mean'], 3)} ± {_fmt(v['whole']['layer_mean_sd'], 3)}, "
            f"phase window {_fmt(v['phase']['layer_mean_mean'], 3)} ± {_fmt(v['phase']['layer_mean_sd'], 3)}"
            for arch, v in noise.items()
        )
        + ".",
        "",
        "| arch | task | L | final / best val acc % | phase window start (mean) | alpha, matched phase "
        "(mean ± sd) [95% t CI] | alpha, whole run | integration, whole run | alpha shuffle z | metastability "
        "| metastability surrogate z |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        cell.setdefault((run["arch"], run["task"]), []).append(run)
    finding1: dict[str, Any] = {"cells": {}, "contrasts": {}}

    def sd(values: Sequence[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else math.nan

    for arch in archs:
        for task in tasks:
            members = sorted(cell.get((arch, task), []), key=lambda r: r["seed"])
            if not members:
                continue
            ends = {k: [m["endpoints"][k] for m in members] for k in ENDPOINTS}
            row: dict[str, Any] = {
                **{f"{k}_mean": statistics.fmean(v) for k, v in ends.items()},
                **{f"{k}_sd": sd(v) for k, v in ends.items()},
                **{f"{k}_ci": t_interval(v) for k, v in ends.items()},
                "final_acc": statistics.fmean(m["epoch_metrics"]["val_acc"][-1] for m in members),
                "best_acc": statistics.fmean(max(m["epoch_metrics"]["val_acc"]) for m in members),
                "seeds": [m["seed"] for m in members],
            }
            finding1["cells"][f"{arch}/{task}"] = row
            starts = [summary["runs"][m["name"]]["phase_window"][0] for m in members]
            ci = row["alpha_phase_ci"]
            lines.append(
                f"| {arch} | {task} | {members[0]['x'].shape[0]} | {row['final_acc']:.1f} / {row['best_acc']:.1f} | "
                f"{statistics.fmean(starts):.1f} | {_fmt(row['alpha_phase_mean'])} ± {_fmt(row['alpha_phase_sd'])} "
                f"[{_fmt(ci[0])}, {_fmt(ci[1])}] | {_fmt(row['alpha_mean'])} ± {_fmt(row['alpha_sd'])} | "
                f"{_fmt(row['integration_mean'])} ± {_fmt(row['integration_sd'])} | "
                f"{_fmt(statistics.fmean(m['measures']['integration_alpha']['shuffle_z'] for m in members), 1)} | "
                f"{_fmt(statistics.fmean(m['measures']['metastability']['value'] for m in members))} | "
                f"{_fmt(statistics.fmean(m['measures']['metastability']['surrogate_z'] for m in members), 1)} |"
            )
    lines += [
        "",
        "Contrasts, per architecture: difference of seed means, exact permutation p (two-sided), its Holm "
        "adjustment over the architectures, the interval that inverts the same test at the level Holm tests that "
        "architecture at (`holm_levels`: 1 - 0.05/3, 1 - 0.05/2, 0.95 in step-down order), so it excludes 0 exactly "
        "when the Holm p <= 0.05 (infinite when no shift can be rejected with so few seeds), Hedges' g, and the "
        "difference "
        "in white-noise sd and in seed sd. Pooled: task labels permuted within architecture; "
        "leave-one-architecture-out (LOAO) pooled p; architecture-level: exact sign-flip test over the "
        "architectures' differences (the architectures as units: with 3 the smallest possible p is 0.25).",
        "",
    ]
    for contrast_name, (base, other) in CONTRASTS.items():
        if base not in tasks or other not in tasks:
            continue
        result: dict[str, Any] = {}
        lines += [
            f"### {contrast_name}",
            "",
            *CONTRAST_HEADER,
        ]
        for key, label in ENDPOINTS.items():
            values = {
                arch: (
                    [m["endpoints"][key] for m in cell.get((arch, base), [])],
                    [m["endpoints"][key] for m in cell.get((arch, other), [])],
                )
                for arch in archs
            }
            wn = {arch: noise[arch]["phase" if key == "alpha_phase" else "whole"]["layer_mean_sd"] for arch in archs}
            result[key], rows = contrast(label, values, wn if key != "integration" else None, n_permutations, rng)
            lines += rows
        finding1["contrasts"][contrast_name] = result
        lines.append("")
    summary["finding1"] = finding1
    lines.append("")

    # Finding 2
    lines += ["## Finding 2: does the volatility signal come before the accuracy plateau?", ""]
    lines += [
        "Signal: DynamicsEarlyStopping's rule replayed on the logged volatility, at the defaults and at a looser "
        "setting fixed in advance; plateau: first epoch within 0.5 points of the run's best validation accuracy; "
        f"lead = plateau - signal. Surrogate: the same rule on {n_surrogates} histories rebuilt from phase-randomised "
        "layers "
        "(share of surrogates that fire; z of the signal epoch, a never-firing signal counted as the budget).",
        "",
        "| run | plateau | " + " | ".join(f"{n}: signal / lead / surr. fired / z" for n in SIGNAL_RULES) + " |",
        "|---|---|" + "---|" * len(SIGNAL_RULES),
    ]
    for run in runs:
        lead = run["lead"]
        cells = [
            f"{r['signal']} / {r['lead']} / {r['surrogate_fired']:.0%} / {_fmt(r['surrogate_signal_z'], 1)}"
            for r in lead["rules"].values()
        ]
        lines.append(f"| {run['name']} | {lead['plateau']} | " + " | ".join(cells) + " |")
    finding2: dict[str, Any] = {}
    from scipy.stats import binomtest

    for rule in SIGNAL_RULES:
        fired = [(r["lead"]["rules"][rule], r["lead"]["plateau"]) for r in runs]
        fired = [(f, plateau) for f, plateau in fired if f["lead"] is not None]
        stats: dict[str, Any] = {"fired": len(fired), "runs": len(runs)}
        finding2[rule] = stats
        if not fired:
            lines += ["", f"{rule}: the signal fired in none of the {len(runs)} runs."]
            continue
        values_ = [float(f["lead"]) for f, _ in fired]
        positive = sum(v > 0 for v in values_)
        nonzero = sum(v != 0 for v in values_)
        sign_p = binomtest(positive, nonzero, 0.5).pvalue if nonzero else math.nan
        signals, plateaus = [f["signal"] for f, _ in fired], [p for _, p in fired]
        rho = _spearman(signals, plateaus)
        null = [_spearman(rng.permutation(signals), plateaus) for _ in range(n_permutations)]
        rho_p = (  # undefined (NaN) for fewer than 3 runs or a constant series: no test is reported
            (1 + sum(abs(v) >= abs(rho) - 1e-12 for v in null if math.isfinite(v))) / (1 + len(null))
            if len(signals) >= 3 and math.isfinite(rho)
            else math.nan
        )
        stats.update(
            leads=values_,
            median=statistics.median(values_),
            mean_ci=t_interval(values_),
            positive=positive,
            sign_p=sign_p,
            spearman=rho,
            spearman_p=rho_p,
        )
        lines += [
            "",
            f"{rule}: fired in {len(fired)}/{len(runs)} runs. Leads: {sorted(int(v) for v in values_)}; median "
            f"{statistics.median(values_):.1f}, mean {statistics.mean(values_):.1f} [95% t CI "
            f"{_fmt(stats['mean_ci'][0], 1)}, {_fmt(stats['mean_ci'][1], 1)}]; signal first in "
            f"{positive}/{len(values_)} (sign test p = {_fmt(sign_p, 3)}); Spearman(signal, plateau) = "
            f"{_fmt(rho, 2)} (permutation p = {_fmt(rho_p, 3)}).",
        ]
    summary["finding2"] = finding2
    lines += ["", "![leads](leads.png)", ""]

    # Finding 3
    lines += ["## Finding 3: distinct training styles in the integration-metastability plane?", ""]
    finding3: dict[str, Any] = {}
    for task in tasks:
        task_runs = [r for r in runs if r["task"] == task]
        if len({r["arch"] for r in task_runs}) < 2:
            continue
        labels = [r["arch"] for r in task_runs]
        raw = np.array(
            [[r["measures"]["integration"]["value"], r["measures"]["metastability"]["value"]] for r in task_runs]
        )
        zs = np.array(
            [
                [r["measures"]["integration_alpha"]["shuffle_z"], r["measures"]["metastability"]["surrogate_z"]]
                for r in task_runs
            ]
        )
        ratio_raw, p_raw = separation_p(raw, labels, n_permutations, rng)
        ratio_z, p_z = separation_p(zs, labels, n_permutations, rng)
        finding3[task] = {"raw": (ratio_raw, p_raw), "z": (ratio_z, p_z)}
        lines.append(
            f"- {task}: architectures separate in (integration, metastability): between/within ratio "
            f"{ratio_raw:.2f}, permutation p = {p_raw:.3f}; in (alpha shuffle z, metastability surrogate z): "
            f"{ratio_z:.2f}, p = {p_z:.3f}."
        )
    summary["finding3"] = finding3
    sds = np.array([r["window_sd"] for r in runs])
    lines += [
        "",
        f"Trajectories in the figure are the monitor's logged values (measures over the history so far, from the "
        f"epoch they are defined). Over sliding windows of {WINDOW} epochs (the stability index's terms) a run's "
        f"integration has a within-run sd of {sds[:, 0].mean():.2f} and metastability {sds[:, 1].mean():.3f} "
        "(mean over runs): window-level positions in the plane are mostly estimation noise at this length.",
    ]
    lines += ["", "![plane](plane.png)", ""]
    _plot_plane(runs, tasks, archs, out / "plane.png")
    _plot_leads(runs, out / "leads.png")

    # Early stopping
    if stopping is not None:
        lines += [line.replace("](pareto.png)", "](stopping/pareto.png)") for line in stopping[0]]
        summary["early_stopping"] = stopping[1]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print("\n".join(lines))
    return summary


def _plot_plane(runs: list[dict[str, Any]], tasks: Sequence[str], archs: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(archs, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.6), squeeze=False, sharex=True, sharey=True)
    for ax, task in zip(axes[0], tasks, strict=True):
        for run in (r for r in runs if r["task"] == task):
            integ, meta = run["trajectory"]
            colour = colours[run["arch"]]
            ax.plot(integ, meta, "-", color=colour, alpha=0.55, lw=1)
            ax.plot(integ[0], meta[0], "o", color=colour, ms=3, alpha=0.7)
            ax.plot(integ[-1], meta[-1], ">", color=colour, ms=6)
            whole = run["measures"]
            ax.plot(whole["integration"]["value"], whole["metastability"]["value"], "*", color=colour, ms=12, mec="k")
            ax.plot(
                whole["integration"]["surrogate_mean"],
                whole["metastability"]["surrogate_mean"],
                "x",
                color="0.5",
                ms=6,
            )
        ax.set_title(f"{task}: logged trajectories (o first defined epoch, > last), * whole run, x surrogate mean")
        ax.title.set_fontsize(8)
        ax.set_xlabel("integration")
        ax.set_ylabel("metastability")
    handles = [plt.Line2D([], [], color=c, label=a) for a, c in colours.items()]
    axes[0][-1].legend(handles=handles, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_leads(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(runs, key=lambda r: (r["arch"], r["task"], r["seed"]))
    fig, ax = plt.subplots(figsize=(8.5, 0.28 * len(ordered) + 1.4))
    markers = ["o", "^"]
    budget = max(len(r["epoch_metrics"]["val_acc"]) for r in ordered)
    for i, run in enumerate(ordered):
        lead = run["lead"]
        ax.plot(lead["plateau"], i, "|", color="k", ms=12, mew=2)
        for j, (name, rule) in enumerate(lead["rules"].items()):
            epoch = budget if rule["signal"] is None else rule["signal"]
            face = f"C{j}" if rule["signal"] is not None else "none"
            ax.plot(epoch, i, markers[j % 2], color=f"C{j}", mfc=face, ms=6, label=name if i == 0 else None)
    ax.plot([], [], "|", color="k", ms=12, mew=2, label="accuracy plateau")
    ax.set_yticks(range(len(ordered)), [r["name"] for r in ordered], fontsize=7)
    ax.set_xlabel(f"epoch (open marker at {budget}: the signal never fired)")
    ax.set_title("signal epoch vs accuracy-plateau epoch per run (signal left of | : signal first)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Re-analyse an earlier summary.json with the current statistics.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--reanalyse", type=Path, help="a summary.json with digits and pairs runs")
    group.add_argument("--reanalyse-2x2", type=Path, help="a summary.json of the 2x2 (per-run endpoints)")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    args = parser.parse_args(argv)
    lines = reanalyse(args.reanalyse) if args.reanalyse else reanalyse_2x2(args.reanalyse_2x2)
    text = "\n".join(lines) + "\n"
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
