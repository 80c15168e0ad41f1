"""The three findings of arXiv:2604.09716 tested on the runs written by ``run.py``, with seeds and nulls.

Per run (its ``[L, T]`` rms history, ``T`` = epochs), every measure comes with
- a surrogate z-score: :func:`~lightning_dynamics.functional.surrogate_test` (phase-randomised layers:
  same spectra, no cross-layer coupling; docs/method.md section 7) and, for the DFA exponent, which phase
  surrogates keep by construction, a shuffle null (each layer's detrended series permuted in time: white
  noise with the same values);
- a bootstrap interval over layers (layers resampled with replacement, the measure recomputed).
Per (architecture, task) cell: mean and sd over seeds and a bootstrap interval of the seed mean.

1. Integration separates the tasks: per architecture and pooled (task labels permuted within architecture),
   exact / Monte-Carlo permutation tests of the difference of seed means.
2. The volatility signal comes before the accuracy plateau: lead = plateau epoch - signal epoch
   (:mod:`lightning_dynamics.analysis`, :func:`~lightning_dynamics.convergence.convergence_signal`), its
   distribution, a sign test, the signal-plateau rank correlation, and the signal on surrogate histories.
3. Distinct training styles in the integration-metastability plane: each run's trajectory as the monitor
   logs it (measures over the history so far), the spread over sliding 16-epoch windows, and a permutation
   test of architecture separation on the whole-run points (raw and as surrogate z-scores, since
   metastability's floor depends on the number of layers).
"""

from __future__ import annotations

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

from lightning_dynamics.convergence import convergence_signal
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
RNG_SEED = 2604


def load_run(run_dir: Path) -> dict[str, Any]:
    record = json.loads((run_dir / "metrics.json").read_text())
    histories = torch.load(run_dir / "history.pt", weights_only=True)
    record["x"] = histories["dynamics"]["values"].double()
    record["act_std"] = histories["act_std"]["values"].double()
    record["name"] = run_dir.name
    return record


def _percentiles(values: Tensor) -> tuple[float, float]:
    finite = values[values.isfinite()].numpy()
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


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


def run_measures(x: Tensor, n_surrogates: int, n_bootstrap: int, generator: torch.Generator) -> dict[str, Any]:
    """Whole-history measures with surrogate z, shuffle z (alpha) and layer-bootstrap 95% intervals."""
    out: dict[str, Any] = {}
    layers = x.shape[0]
    index = torch.randint(0, layers, (n_bootstrap, layers), generator=generator)
    for name, measure in MEASURES.items():
        value = float(measure(x))
        test = surrogate_test(measure, x, n=n_surrogates, generator=generator, alternative="two-sided")
        boot = measure(x[index])
        out[name] = {
            "value": value,
            "surrogate_z": float(test.z),
            "surrogate_p": float(test.p),
            "surrogate_mean": float(test.surrogate_mean),
            "bootstrap_95": _percentiles(boot),
        }
    out["integration_alpha"]["shuffle_z"] = _shuffle_z(x, n_surrogates, generator)
    return out


def window_trajectory(x: Tensor, window: int = WINDOW) -> tuple[list[float], list[float]]:
    """Integration and metastability of each sliding window ``X[:, t-w+1..t]`` (the stability index's terms)."""
    windows = x.unfold(-1, window, 1).permute(1, 0, 2)  # [n_windows, L, window]
    return integration(windows).tolist(), metastability(windows).tolist()


def _bootstrap_mean(values: Sequence[float], n: int, rng: np.random.Generator) -> tuple[float, float]:
    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if data.size < 2:
        return math.nan, math.nan
    means = rng.choice(data, (n, data.size)).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided permutation p-value of the difference of means (all splits of the pooled values).

    Example:
        >>> permutation_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])  # the most extreme split of 3 vs 3: 2 of 20
        0.1
    """
    pooled = [*a, *b]
    observed = abs(statistics.mean(a) - statistics.mean(b))
    count = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        first = [pooled[i] for i in chosen]
        second = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        total += 1
        count += abs(statistics.mean(first) - statistics.mean(second)) >= observed - 1e-12
    return count / total


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


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def analyse(
    out: Path,
    names: list[str],
    tasks: Sequence[str],
    tune_seeds: Sequence[int],
    n_surrogates: int = 20,
    n_bootstrap: int = 500,
    n_permutations: int = 2000,
) -> dict[str, Any]:
    """Write ``summary.md``, ``summary.json`` and the figures under ``out``; return the summary."""
    from benchmarks.paper.stopping import early_stopping_study

    torch.manual_seed(RNG_SEED)
    generator = torch.Generator().manual_seed(RNG_SEED)
    rng = np.random.default_rng(RNG_SEED)
    runs = [load_run(out / "runs" / n) for n in names if (out / "runs" / n / "metrics.json").is_file()]
    diverged = [r["name"] for r in runs if not bool(r["x"].isfinite().all())]
    runs = [r for r in runs if r["name"] not in diverged]
    if not runs:
        raise FileNotFoundError(f"no finished run with a finite history under {out / 'runs'}.")
    lines = [f"# Paper findings: {len(runs)} runs under {out}", ""]
    if diverged:
        lines += [f"Excluded (non-finite history: training diverged): {', '.join(diverged)}.", ""]
    summary: dict[str, Any] = {"runs": {}, "diverged": diverged}
    archs = list(dict.fromkeys(r["arch"] for r in runs))
    tasks = [t for t in tasks if any(r["task"] == t for r in runs)]
    for run in runs:
        run["measures"] = run_measures(run["x"], n_surrogates, n_bootstrap, generator)
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
            "lead": run["lead"],
            "layers": run["x"].shape[0],
            "points": run["x"].shape[1],
            "seconds": run["seconds"],
            "window16_sd": run["window_sd"],
        }
    layers, points = runs[0]["x"].shape
    noise = white_noise_alpha(int(layers), int(points), n=max(50, n_bootstrap // 2))
    summary["white_noise_alpha"] = noise

    # Finding 1
    lines += ["## Finding 1: does integration separate the easy and the hard task?", ""]
    lines += [
        f"White-noise reference at T={points}: one layer's DFA exponent {_fmt(noise['single_layer_mean'], 2)} ± "
        f"{_fmt(noise['single_layer_sd'], 2)} (sd); the mean over L={layers} independent layers ± "
        f"{_fmt(noise['layer_mean_sd'], 3)}.",
        "",
        "| arch | task | L | final val acc % | integration (mean ± sd over seeds) [95% CI of mean] | alpha (mean ± sd) "
        "| alpha layer-bootstrap CI (mean width) | alpha shuffle z | integration surrogate z | metastability "
        "| metastability surrogate z |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        cell.setdefault((run["arch"], run["task"]), []).append(run)
    finding1: dict[str, Any] = {"cells": {}, "tests": {}}
    for arch in archs:
        for task in tasks:
            members = cell.get((arch, task), [])
            if not members:
                continue

            def values(measure: str, key: str = "value", group: list[dict[str, Any]] = members) -> list[float]:
                return [m["measures"][measure][key] for m in group]

            integ, alpha = values("integration"), values("integration_alpha")
            widths = [m["measures"]["integration_alpha"]["bootstrap_95"] for m in members]
            sd = statistics.stdev if len(members) > 1 else (lambda v: math.nan)
            ci = _bootstrap_mean(integ, n_bootstrap, rng)
            row = {
                "integration_mean": statistics.mean(integ),
                "integration_sd": sd(integ),
                "integration_ci": ci,
                "alpha_mean": statistics.mean(alpha),
                "alpha_sd": sd(alpha),
                "acc": statistics.mean(m["lead"]["final_acc"] for m in members),
            }
            finding1["cells"][f"{arch}/{task}"] = row
            lines.append(
                f"| {arch} | {task} | {members[0]['x'].shape[0]} | {row['acc']:.1f} | "
                f"{_fmt(row['integration_mean'])} ± {_fmt(row['integration_sd'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] | "
                f"{_fmt(row['alpha_mean'])} ± {_fmt(row['alpha_sd'])} | "
                f"{_fmt(statistics.mean(w[1] - w[0] for w in widths))} | "
                f"{_fmt(statistics.mean(values('integration_alpha', 'shuffle_z')), 1)} | "
                f"{_fmt(statistics.mean(values('integration', 'surrogate_z')), 1)} | "
                f"{_fmt(statistics.mean(values('metastability')))} | "
                f"{_fmt(statistics.mean(values('metastability', 'surrogate_z')), 1)} |"
            )
    lines.append("")
    if len(tasks) == 2:
        easy, hard = tasks
        groups = {}
        lines += [f"Difference {hard} - {easy} (exact permutation test over seeds, two-sided):", ""]
        lines += ["| arch | d integration [95% bootstrap CI] | p | d alpha | p (alpha) |", "|---|---|---|---|---|"]
        for measure in ("integration", "integration_alpha"):
            groups[measure] = []
        for arch in archs:
            a_runs, b_runs = cell.get((arch, easy), []), cell.get((arch, hard), [])
            if len(a_runs) < 2 or len(b_runs) < 2:
                continue
            res = {}
            for measure in ("integration", "integration_alpha"):
                a = [m["measures"][measure]["value"] for m in a_runs]
                b = [m["measures"][measure]["value"] for m in b_runs]
                groups[measure].append((a, b))
                diffs = rng.choice(b, (n_bootstrap, len(b))).mean(1) - rng.choice(a, (n_bootstrap, len(a))).mean(1)
                res[measure] = {
                    "diff": statistics.mean(b) - statistics.mean(a),
                    "ci": tuple(float(v) for v in np.percentile(diffs, [2.5, 97.5])),
                    "p": permutation_p(a, b),
                    "min_p": 2 / math.comb(len(a) + len(b), len(a)),
                }
            finding1["tests"][arch] = res
            i, al = res["integration"], res["integration_alpha"]
            lines.append(
                f"| {arch} | {_fmt(i['diff'])} [{_fmt(i['ci'][0])}, {_fmt(i['ci'][1])}] | {_fmt(i['p'], 2)} "
                f"(smallest possible {_fmt(i['min_p'], 2)}) | {_fmt(al['diff'])} | {_fmt(al['p'], 2)} |"
            )
        if groups["integration"]:
            pooled = {m: stratified_permutation_p(g, n_permutations, rng) for m, g in groups.items()}
            finding1["pooled_p"] = pooled
            lines += [
                "",
                f"Pooled over architectures (task labels permuted within architecture, {n_permutations} permutations): "
                f"p = {_fmt(pooled['integration'], 4)} (integration), {_fmt(pooled['integration_alpha'], 4)} (alpha).",
            ]
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
        rho_p = (1 + sum(abs(v) >= abs(rho) - 1e-12 for v in null if math.isfinite(v))) / (1 + len(null))
        stats.update(
            leads=values_,
            median=statistics.median(values_),
            mean_ci=_bootstrap_mean(values_, n_bootstrap, rng),
            positive=positive,
            sign_p=sign_p,
            spearman=rho,
            spearman_p=rho_p,
        )
        lines += [
            "",
            f"{rule}: fired in {len(fired)}/{len(runs)} runs. Leads: {sorted(int(v) for v in values_)}; median "
            f"{statistics.median(values_):.1f}, mean {statistics.mean(values_):.1f} [95% bootstrap CI "
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
    stopping_lines, stopping = early_stopping_study(runs, tune_seeds, out / "pareto.png")
    lines += stopping_lines
    summary["early_stopping"] = stopping
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
