"""Early stopping at the paper's scale: Pareto curves (epochs used vs accuracy lost) over each rule's knob.

Rules, each replayed exactly over the per-epoch series a run logged (a rule reads only values up to the
epoch it decides at, and training is deterministic, so stopping cannot change earlier epochs; the replay
of the first two is checked against the real callbacks in ``benchmarks/early_stopping.py``):

- ``dynamics``: :class:`~lightning_dynamics.DynamicsEarlyStopping` (``ratio`` x ``patience``), by
  :func:`~lightning_dynamics.convergence.convergence_signal` on the logged ``stability_volatility``;
- ``val_loss``: Lightning's ``EarlyStopping(monitor="val_loss", patience=p)``, p = 3..20, by
  :func:`~lightning_dynamics.analysis.val_loss_stop_epoch`;
- ``act_std``: the validation-free rule of Ahmad, Trahan & Islam (arXiv:2403.02473) as we read it: stop once
  the per-layer standard deviation of activations stops changing, i.e. the mean over layers of
  ``|s_l(t) - s_l(t-1)| / s_l(t-1)`` stays below ``tol`` for 3 consecutive epochs; ``s_l`` is the history
  of a second monitor, ``DynamicsMonitor(summary="std", prefix="act_std")``.

Outcome of a stop at epoch ``e`` (0-based) in a run of ``E`` epochs: epochs used ``(e + 1) / E`` and
accuracy lost ``acc(E - 1) - acc(e)`` (validation accuracy of the model training ends with; no checkpoint
restore). Knobs are chosen on the tuning seeds (fewest epochs with a mean loss <= 0.5 points) and all
curves are reported on the held-out seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning_dynamics.convergence import convergence_signal
from lightning_dynamics.report.analysis import val_loss_stop_epoch

MAX_LOSS = 0.5  # percentage points: the tolerance a chosen knob must meet on the tuning seeds


def act_std_stop_epoch(std: Sequence[Sequence[float]], tol: float, patience: int = 3) -> int | None:
    """First epoch at which the mean relative change of per-layer activation std stayed <= ``tol``.

    ``std``: ``[L][T]`` per-layer std per epoch. Returns None if it never stops.

    Example:
        >>> act_std_stop_epoch([[1.0, 2.0, 2.1, 2.1, 2.1, 2.1]], tol=0.01, patience=3)
        5
    """
    layers = [list(row) for row in std]
    wait = 0
    for t in range(1, len(layers[0])):
        changes = [abs(row[t] - row[t - 1]) / abs(row[t - 1]) for row in layers if row[t - 1] != 0]
        change = statistics.mean(changes) if changes else math.inf
        wait = wait + 1 if change <= tol else 0
        if wait >= patience:
            return t
    return None


def _rules() -> dict[str, list[tuple[str, Callable[[dict[str, Any]], int | None]]]]:
    def dynamics(ratio: float, patience: int) -> Callable[[dict[str, Any]], int | None]:
        return lambda run: convergence_signal(
            run["monitor_metrics"]["dynamics"]["stability_volatility"], ratio=ratio, patience=patience
        )

    def val_loss(patience: int) -> Callable[[dict[str, Any]], int | None]:
        return lambda run: val_loss_stop_epoch(run["epoch_metrics"]["val_loss"], patience=patience)

    def act_std(tol: float) -> Callable[[dict[str, Any]], int | None]:
        return lambda run: act_std_stop_epoch(run["act_std"].tolist(), tol)

    return {
        "dynamics": [
            (f"ratio={r},patience={p}", dynamics(r, p)) for r in (0.1, 0.25, 0.4, 0.6, 0.8) for p in (1, 2, 3, 5)
        ],
        "val_loss": [(f"patience={p}", val_loss(p)) for p in (3, 4, 5, 6, 8, 10, 12, 15, 20)],
        "act_std": [(f"tol={t}", act_std(t)) for t in (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)],
    }


def _outcome(run: dict[str, Any], stop: int | None) -> tuple[float, float]:
    accuracy = run["epoch_metrics"]["val_acc"]
    last = len(accuracy) - 1 if stop is None else stop
    return (last + 1) / len(accuracy), accuracy[-1] - accuracy[last]


def _score(runs: list[dict[str, Any]], rule: Callable[[dict[str, Any]], int | None]) -> tuple[float, float, int]:
    outcomes = [_outcome(run, rule(run)) for run in runs]
    stopped = sum(1 for run in runs if rule(run) is not None)
    return statistics.mean(o[0] for o in outcomes), statistics.mean(o[1] for o in outcomes), stopped


def early_stopping_study(
    runs: list[dict[str, Any]], tune_seeds: Sequence[int], path: Path
) -> tuple[list[str], dict[str, Any]]:
    """Pareto points per rule on the held-out runs, knobs chosen on the tuning runs; writes the figure."""
    tune = [r for r in runs if r["seed"] in tune_seeds]
    held = [r for r in runs if r["seed"] not in tune_seeds] or runs
    rules = _rules()
    result: dict[str, Any] = {"points": {}, "chosen": {}}
    lines = [
        "## Early stopping: epochs used vs accuracy lost (held-out seeds)",
        "",
        f"Tuning seeds {sorted(set(tune_seeds))} ({len(tune)} runs); held-out runs: {len(held)}. Chosen knob: "
        f"fewest epochs with mean accuracy loss <= {MAX_LOSS} points on the tuning runs.",
        "",
        "| rule | chosen knob | epochs used (held-out) | accuracy lost, points (held-out) | runs stopped |",
        "|---|---|---|---|---|",
    ]
    for name, knobs in rules.items():
        points = [(label, *_score(held, rule)) for label, rule in knobs]
        result["points"][name] = points
        chosen_label = None
        if tune:
            scored = [(label, *_score(tune, rule)) for label, rule in knobs]
            passing = [s for s in scored if s[2] <= MAX_LOSS]
            if passing:
                chosen_label = min(passing, key=lambda s: (s[1], s[2]))[0]
        chosen = next((p for p in points if p[0] == chosen_label), None)
        result["chosen"][name] = chosen
        if chosen is None:
            lines.append(f"| {name} | none meets the tolerance | - | - | - |")
        else:
            lines.append(f"| {name} | {chosen[0]} | {chosen[1]:.0%} | {chosen[2]:.2f} | {chosen[3]}/{len(held)} |")
    lines += ["", "Every knob value on the held-out runs (epochs used / accuracy lost in points):", ""]
    for name, points in result["points"].items():
        lines.append(f"- {name}: " + "; ".join(f"{label} {used:.0%} / {lost:.2f}" for label, used, lost, _ in points))
    frontier = _pareto([(name, *p) for name, points in result["points"].items() for p in points])
    result["frontier"] = frontier
    lines += ["", "Pareto-optimal points over all rules (held-out runs; epochs used, accuracy lost):", ""]
    lines += [f"- {rule} {label}: {used:.0%}, {lost:.2f}" for rule, label, used, lost, _ in frontier]
    lines += ["", "![pareto](pareto.png)", ""]
    _plot(result["points"], result["chosen"], path)
    return lines, result


def _pareto(points: list[tuple[str, str, float, float, int]]) -> list[tuple[str, str, float, float, int]]:
    """Points no other point beats on both epochs used and accuracy lost (ties kept once)."""
    front = []
    for p in sorted(points, key=lambda q: (q[2], q[3])):
        if not front or p[3] < front[-1][3] - 1e-9:
            front.append(p)
    return front


def _plot(points: dict[str, list[tuple[str, float, float, int]]], chosen: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for i, (name, pts) in enumerate(points.items()):
        front = _pareto([(name, *p) for p in pts])
        ax.plot([p[1] for p in pts], [p[2] for p in pts], ".", color=f"C{i}", alpha=0.4)
        ax.plot([p[2] for p in front], [p[3] for p in front], "-o", color=f"C{i}", label=name, ms=4)
        if chosen.get(name) is not None:
            ax.plot(chosen[name][1], chosen[name][2], "*", color=f"C{i}", ms=14, mec="k")
    ax.axhline(0, color="k", lw=0.6)
    losses = [p[2] for pts in points.values() for p in pts]
    if max(losses) > 10:  # keep the interesting region readable; the table lists every point
        ax.set_ylim(min(losses) - 1, 10)
        ax.text(0.99, 0.98, "points above 10 clipped", transform=ax.transAxes, ha="right", va="top", fontsize=7)
    ax.set_xlabel("epochs used (share of the full budget)")
    ax.set_ylabel("accuracy lost vs full budget (points)")
    ax.set_title("held-out seeds: each rule's knob sweep (line: its Pareto front, *: knob chosen on tuning seeds)")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
