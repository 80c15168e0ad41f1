"""Early stopping a practitioner can act on: every rule restores its best checkpoint, outcomes on a test split.

Runs (:func:`train_stopping_run`): the digits task with a stratified **test split** (20% of the images) apart
from the validation split (25%) that drives validation-based rules and the checkpoint choice; ``SmallCNN``
(SGD 0.05, momentum 0.9, constant learning rate), 40 epochs of about 16 steps, at least 10 seeds. Per epoch
the run records validation loss and accuracy, test accuracy, and the series every rule reads:

- ``dynamics`` (per epoch) and ``dynamics_step`` (every 3 optimizer steps, about 5 sample points per epoch):
  :class:`~lightning_dynamics.DynamicsMonitor` histories, saved as the package's history files;
- ``act_std``: ``DynamicsMonitor(summary="std")``, the per-layer activation std;
- ``eb``: the EB-criterion of Mahsereci, Balles, Lassner & Hennig (2017, "Early stopping without a validation
  set", eq. 7): ``1 - (B / D) * sum_k g_k^2 / s_k^2`` with ``g`` the mini-batch gradient, ``s_k^2`` the
  per-sample gradient variance of parameter ``k`` (``torch.func`` per-sample gradients), ``B`` the batch size
  and ``D`` the number of parameters, every 3 steps; its per-epoch mean is the smoothed criterion.

Rules (each a function ``run -> stop epoch or None`` with a grid of knobs, :data:`RULES`; a new rule plugs in
by one entry): fixed epoch; Lightning's ``EarlyStopping(monitor="val_loss")`` by patience;
DynamicsEarlyStopping's rule (:func:`~lightning_dynamics.decisions.stopping.convergence_signal`) on the per-epoch
volatility and on the per-step one (the signal's sample point mapped to the end of its epoch); the
activation-std rule of Ahmad, Trahan & Islam (arXiv:2403.02473) as we read it; the EB-criterion (stop once its
per-epoch mean stays above a threshold for ``patience`` epochs; the paper's threshold is 0); the calibrated
:class:`~lightning_dynamics.decisions.stopping.RelativeChangeRule` (median relative change of the layer summaries
beyond its time-shuffle null) on the per-epoch and on the per-step history.

Outcome of a stop at epoch ``e`` of ``E``: epochs used ``(e + 1) / E``; the checkpoint restored is the epoch of
best validation accuracy up to ``e``; accuracy cost = test accuracy of the full budget's restored checkpoint
minus that of the rule's (percentage points). Knobs are chosen on the tuning seeds (fewest epochs with a mean
cost <= 0.5 points; a choice at its grid's edge is flagged) and judged on the held-out seeds with 95%
t-intervals over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from lightning_dynamics.decisions.stopping import convergence_signal
from lightning_dynamics.report.analysis import val_loss_stop_epoch

MAX_COST = 0.5  # percentage points of test accuracy: the tolerance a chosen knob must meet on the tuning seeds
EVERY_N_STEPS = 3  # sample points of the per-step monitor and of the EB-criterion
EPOCHS = 40
SEEDS = tuple(range(14))
TUNE_SEEDS = (0, 1, 2, 3)

Rule = Callable[[dict[str, Any]], "int | None"]


# ----------------------------------------------------------------------------------------------------- rules
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


def threshold_stop_epoch(series: Sequence[float], threshold: float, patience: int = 1) -> int | None:
    """First epoch at which ``series`` has been above ``threshold`` for ``patience`` epochs in a row (NaN resets).

    Example:
        >>> threshold_stop_epoch([-0.5, 0.1, -0.2, 0.1, 0.2], threshold=0.0, patience=2)
        4
    """
    wait = 0
    for epoch, value in enumerate(series):
        wait = wait + 1 if value == value and value > threshold else 0
        if wait >= patience:
            return epoch
    return None


def step_signal_epoch(
    volatility: Sequence[float], steps: Sequence[int], steps_per_epoch: int, **knob: Any
) -> int | None:
    """The volatility-drop rule over per-step sample points; the stop is taken at the end of the signal's epoch.

    Example:
        >>> step_signal_epoch([float("nan"), 0.2, 0.4, 0.05, 0.04, 0.03], [3, 6, 9, 12, 15, 18], 8, patience=3)
        2
    """
    index = convergence_signal(volatility, list(range(len(volatility))), **knob)
    return None if index is None else (int(steps[index]) - 1) // steps_per_epoch


def relative_change_stop_epoch(x: torch.Tensor, epochs: Sequence[int], **knob: Any) -> int | None:
    """Replay :class:`~lightning_dynamics.decisions.stopping.RelativeChangeRule` once per epoch over a saved history.

    ``x``: the ``[L, T]`` layer-summary history, ``epochs``: the epoch of each sample point; at the end of each
    epoch the rule sees every point up to it, as the callback does. Returns the epoch it stops at, or None.

    Example:
        >>> t = torch.arange(40, dtype=torch.float64)
        >>> x = torch.stack([s * (1 - torch.exp(-t / 4)) for s in (1.0, 2.0, 3.0)])  # three settling layers
        >>> relative_change_stop_epoch(x, list(range(40)), patience=2, window_epochs=5)
        12
    """
    from lightning_dynamics.decisions.stopping import RelativeChangeRule

    rule = RelativeChangeRule(**knob)
    epoch_of = [int(e) for e in epochs]
    for epoch in range(max(epoch_of) + 1 if epoch_of else 0):
        upto = sum(1 for e in epoch_of if e <= epoch)
        if upto and rule.update(x[:, :upto], epoch_of[:upto], epoch=epoch)[0]:
            return epoch
    return None


def _grid(factory: Callable[..., Rule], **axes: Sequence[Any]) -> list[tuple[str, Rule]]:
    names = list(axes)
    combos: list[dict[str, Any]] = [{}]
    for name in names:
        combos = [{**c, name: v} for c in combos for v in axes[name]]
    return [(",".join(f"{k}={v}" for k, v in c.items()), factory(**c)) for c in combos]


def _rules(epochs: int) -> dict[str, list[tuple[str, Rule]]]:
    """Every rule with its knob grid (ordered: the first and last entries of an axis are the grid's edges)."""

    def fixed(epoch: int) -> Rule:
        return lambda run: min(epoch, len(run["val_acc"])) - 1

    def val_loss(patience: int) -> Rule:
        return lambda run: val_loss_stop_epoch(run["val_loss"], patience=patience)

    def dynamics(ratio: float, patience: int) -> Rule:
        return lambda run: convergence_signal(run["volatility"], ratio=ratio, patience=patience)

    def dynamics_step(ratio: float, patience: int) -> Rule:
        return lambda run: step_signal_epoch(
            run["step_volatility"], run["step_steps"], run["steps_per_epoch"], ratio=ratio, patience=patience
        )

    def act_std(tol: float) -> Rule:
        return lambda run: act_std_stop_epoch(run["act_std"], tol)

    def eb(threshold: float, patience: int) -> Rule:
        return lambda run: threshold_stop_epoch(run["eb"], threshold, patience)

    def relative_change(ratio: float, patience: int) -> Rule:
        return lambda run: relative_change_stop_epoch(run["x"], run["x_epochs"], ratio=ratio, patience=patience)

    def relative_change_step(ratio: float, patience: int) -> Rule:
        return lambda run: relative_change_stop_epoch(
            run["x_step"], run["x_step_epochs"], ratio=ratio, patience=patience
        )

    fractions = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.95)
    return {
        "fixed_epoch": _grid(fixed, epoch=sorted({max(1, round(f * epochs)) for f in fractions})),
        "val_loss": _grid(val_loss, patience=(1, 2, 3, 5, 8, 12, 16)),
        "dynamics": _grid(dynamics, ratio=(0.1, 0.25, 0.4, 0.6, 0.8, 0.95), patience=(1, 2, 3, 5)),
        "dynamics_step": _grid(
            dynamics_step, ratio=(0.02, 0.05, 0.1, 0.25, 0.4, 0.6, 0.8, 0.95), patience=(3, 6, 12, 24)
        ),
        "act_std": _grid(act_std, tol=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)),
        "eb": _grid(eb, threshold=(-0.6, -0.4, -0.2, 0.0, 0.2, 0.4), patience=(1, 3)),
        "relative_change": _grid(relative_change, ratio=(0.1, 0.25, 0.4, 0.6, 0.8), patience=(1, 2, 3, 5)),
        "relative_change_step": _grid(relative_change_step, ratio=(0.1, 0.25, 0.4, 0.6, 0.8), patience=(1, 2, 3, 5)),
    }


#: Rules to add to the comparison: name -> (epochs -> knob grid). A calibrated rule plugs in here.
EXTRA_RULES: dict[str, Callable[[int], list[tuple[str, Rule]]]] = {}


def outcome(run: dict[str, Any], stop: int | None) -> tuple[float, float]:
    """(epochs used, test-accuracy cost in points) of stopping at ``stop`` with the best checkpoint restored.

    Example:
        >>> run = {"val_acc": [50.0, 90.0, 80.0, 95.0], "test_acc": [51.0, 88.0, 82.0, 93.0]}
        >>> outcome(run, 2), outcome(run, None)
        ((0.75, 5.0), (1.0, 0.0))
    """
    val, test = run["val_acc"], run["test_acc"]
    last = len(val) - 1 if stop is None else min(int(stop), len(val) - 1)

    def restored(upto: int) -> int:
        return max(range(upto + 1), key=lambda e: (val[e], -e))  # earliest best validation accuracy

    return (last + 1) / len(val), test[restored(len(val) - 1)] - test[restored(last)]


def _t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval over seeds; NaN bounds for fewer than 2 values."""
    from scipy.stats import t

    n = len(values)
    mean = statistics.fmean(values) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    half = t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def _score(runs: list[dict[str, Any]], rule: Rule) -> dict[str, Any]:
    stops = [rule(run) for run in runs]
    outcomes = [outcome(run, s) for run, s in zip(runs, stops, strict=True)]
    used = _t_interval([o[0] for o in outcomes])
    cost = _t_interval([o[1] for o in outcomes])
    return {"used": used, "cost": cost, "stopped": sum(s is not None for s in stops), "runs": len(runs)}


def _pareto(points: list[tuple[str, str, float, float, int]]) -> list[tuple[str, str, float, float, int]]:
    """Points no other point beats on both epochs used and accuracy lost (ties kept once)."""
    front: list[tuple[str, str, float, float, int]] = []
    for p in sorted(points, key=lambda q: (q[2], q[3])):
        if not front or p[3] < front[-1][3] - 1e-9:
            front.append(p)
    return front


#: Axis values that are the smallest possible, not an edge the grid chose: a choice there is not flagged.
NATURAL_BOUNDS = {"patience": "1"}


def _on_edge(label: str, grid: Sequence[tuple[str, Rule]]) -> bool:
    """Whether a chosen knob sits at the edge of one of its grid's axes (``patience=1`` is the lowest possible).

    Example:
        >>> grid = [(f"ratio={r},patience={p}", None) for r in (0.1, 0.5, 0.9) for p in (1, 2, 3)]
        >>> _on_edge("ratio=0.5,patience=1", grid), _on_edge("ratio=0.9,patience=2", grid)
        (False, True)
    """
    chosen = dict(part.split("=") for part in label.split(","))
    labels = [dict(part.split("=") for part in other.split(",")) for other, _ in grid]
    for axis, value in chosen.items():
        values = list(dict.fromkeys(lab[axis] for lab in labels))
        if len(values) > 2 and value in (values[0], values[-1]) and NATURAL_BOUNDS.get(axis) != value:
            return True
    return False


def early_stopping_study(
    runs: list[dict[str, Any]], tune_seeds: Sequence[int], path: Path, epochs: int | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Each rule's knob chosen on the tuning runs and every knob scored on the held-out runs; writes the figure."""
    epochs = epochs or len(runs[0]["val_acc"])
    tune = [r for r in runs if r["seed"] in tune_seeds]
    held = [r for r in runs if r["seed"] not in tune_seeds]
    if not held:
        note = (
            f"Not enough runs for the study: seeds {sorted(r['seed'] for r in runs)} are all tuning seeds "
            f"{sorted(tune_seeds)}; no held-out run."
        )
        return ["## Early stopping with the best checkpoint restored", "", note, ""], {"note": note}
    rules = _rules(epochs)
    rules.update({name: grid(epochs) for name, grid in EXTRA_RULES.items()})
    result: dict[str, Any] = {"points": {}, "chosen": {}, "tune_seeds": sorted(tune_seeds), "held_out": len(held)}
    full_acc = _t_interval(
        [r["test_acc"][max(range(len(r["val_acc"])), key=lambda e: (r["val_acc"][e], -e))] for r in held]
    )
    lines = [
        "## Early stopping with the best checkpoint restored (test split; held-out seeds)",
        "",
        f"Tuning seeds {sorted(tune_seeds)} ({len(tune)} runs), held-out seeds "
        f"{sorted(r['seed'] for r in held)} ({len(held)} runs). The full budget ({epochs} epochs, best checkpoint "
        f"by validation accuracy) reaches test accuracy {full_acc[0]:.2f}% [{full_acc[1]:.2f}, {full_acc[2]:.2f}]. "
        f"Chosen knob: fewest epochs with mean cost <= {MAX_COST} points on the tuning runs. Intervals: 95% t "
        "over held-out seeds.",
        "",
        "| rule | chosen knob | epochs used [95% CI] | test-accuracy cost, points [95% CI] | runs stopped |",
        "|---|---|---|---|---|",
    ]
    for name, grid in rules.items():
        points = [(label, _score(held, rule)) for label, rule in grid]
        result["points"][name] = [(label, s["used"][0], s["cost"][0], s["stopped"]) for label, s in points]
        chosen_label = None
        if tune:
            scored = [(label, _score(tune, rule)) for label, rule in grid]
            passing = [(label, s) for label, s in scored if s["cost"][0] <= MAX_COST]
            if passing:
                chosen_label = min(passing, key=lambda p: (p[1]["used"][0], p[1]["cost"][0]))[0]
        chosen = next((s for label, s in points if label == chosen_label), None)
        edge = chosen_label is not None and _on_edge(chosen_label, grid)
        result["chosen"][name] = None if chosen is None else {"knob": chosen_label, "edge": edge, **chosen}
        if chosen is None:
            lines.append(f"| {name} | none meets the tolerance on the tuning seeds | - | - | - |")
            continue
        u, c = chosen["used"], chosen["cost"]
        lines.append(
            f"| {name} | {chosen_label}{' (grid edge)' if edge else ''} | {u[0]:.0%} [{u[1]:.0%}, {u[2]:.0%}] | "
            f"{c[0]:.2f} [{c[1]:.2f}, {c[2]:.2f}] | {chosen['stopped']}/{len(held)} |"
        )
    frontier = _pareto([(name, *p) for name, pts in result["points"].items() for p in pts])
    result["frontier"] = frontier
    lines += ["", "Pareto front over every knob of every rule (held-out mean epochs used, mean cost in points):", ""]
    lines += ["| rule | knob | epochs used | cost |", "|---|---|---|---|"]
    lines += [f"| {rule} | {label} | {used:.0%} | {cost:.2f} |" for rule, label, used, cost, _ in frontier]
    lines += ["", "Every knob on the held-out runs (epochs used / cost):", ""]
    for name, pts in result["points"].items():
        lines.append(f"- {name}: " + "; ".join(f"{label} {u:.0%} / {c:.2f}" for label, u, c, _ in pts))
    lines += ["", f"![pareto]({path.name})", ""]
    _plot(result["points"], result["chosen"], path)
    return lines, result


def _plot(points: dict[str, list[tuple[str, float, float, int]]], chosen: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for i, (name, pts) in enumerate(points.items()):
        front = _pareto([(name, *p) for p in pts])
        ax.plot([p[1] for p in pts], [p[2] for p in pts], ".", color=f"C{i}", alpha=0.35)
        ax.plot([p[2] for p in front], [p[3] for p in front], "-o", color=f"C{i}", label=name, ms=3, lw=1)
        pick = chosen.get(name)
        if pick is not None:
            u, c = pick["used"], pick["cost"]
            ax.errorbar(
                u[0],
                c[0],
                xerr=[[u[0] - u[1]], [u[2] - u[0]]],
                yerr=[[c[0] - c[1]], [c[2] - c[0]]],
                fmt="*",
                color=f"C{i}",
                ms=13,
                mec="k",
                capsize=2,
            )
    overall = _pareto([(name, *p) for name, pts in points.items() for p in pts])
    ax.step(
        [p[2] for p in overall],
        [p[3] for p in overall],
        where="post",
        color="0.3",
        lw=3,
        alpha=0.3,
        label="front over all rules",
        zorder=0,
    )
    ax.axhline(0, color="k", lw=0.6)
    ax.axhline(MAX_COST, color="0.5", lw=0.6, ls=":")
    costs = [p[2] for pts in points.values() for p in pts]
    if costs and max(costs) > 6:
        ax.set_ylim(min(-1.0, min(costs) - 0.5), 6)
        ax.text(
            0.99, 0.98, "points above 6 clipped (see table)", transform=ax.transAxes, ha="right", va="top", fontsize=7
        )
    ax.set_xlabel("epochs used (share of the budget)")
    ax.set_ylabel("test-accuracy cost vs full budget, best checkpoint restored (points)")
    ax.set_title("held-out seeds: knob sweeps (line: each rule's front; *: knob chosen on tuning seeds, 95% CI)")
    ax.title.set_fontsize(8)
    ax.yaxis.label.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -------------------------------------------------------------------------------------------------- training
def eb_criterion(per_sample_grads: Sequence[torch.Tensor]) -> float:
    """Mahsereci et al. (2017), eq. 7: ``1 - (B / D) * sum_k g_k^2 / s_k^2`` from per-sample gradients ``[B, ...]``.

    ``g`` is the batch-mean gradient and ``s^2`` the unbiased per-sample variance; parameters with zero variance
    are left out of ``D`` and the sum. Positive: the gradient is within its noise (stop).

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # mean 0: pure noise
        >>> eb_criterion([g])
        1.0
    """
    total, count, batch = 0.0, 0, 0
    for grads in per_sample_grads:
        flat = grads.reshape(grads.shape[0], -1).double()
        batch = flat.shape[0]
        mean, var = flat.mean(0), flat.var(0, unbiased=True)
        keep = var > 0
        total += float((mean[keep] ** 2 / var[keep]).sum())
        count += int(keep.sum())
    return math.nan if count == 0 else 1.0 - batch / count * total


class _StopSeries:  # a Lightning callback, built lazily so that the module imports without Lightning
    @staticmethod
    def make(test_set: Any, every_n_steps: int) -> Any:
        import lightning.pytorch as pl
        from torch.func import functional_call, grad, vmap

        class StopSeries(pl.Callback):
            """Records test accuracy per epoch and the EB-criterion every ``every_n_steps`` training steps."""

            def __init__(self) -> None:
                self.test_acc: list[float] = []
                self.eb_steps: list[tuple[int, float]] = []

            def on_train_batch_end(
                self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
            ) -> None:
                step = trainer.global_step
                if step % every_n_steps:
                    return
                x, y = batch
                params = {k: v.detach() for k, v in pl_module.named_parameters()}

                def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
                    logits = functional_call(pl_module, p, (xi.unsqueeze(0),))
                    return torch.nn.functional.cross_entropy(logits, yi.unsqueeze(0))

                with torch.no_grad():
                    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
                self.eb_steps.append((step, eb_criterion(list(grads.values()))))

            def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
                x, y = test_set.tensors
                was_training = pl_module.training
                pl_module.eval()
                with torch.no_grad():
                    self.test_acc.append(
                        float((pl_module(x.to(pl_module.device)).argmax(-1).cpu() == y).float().mean() * 100)
                    )
                pl_module.train(was_training)

        return StopSeries()


def train_stopping_run(seed: int, out: str, epochs: int = EPOCHS, limit_train_batches: int | None = None) -> str:
    """Train one stopping run into ``out/runs/cnn_digits_seed<seed>``; return its name (finished runs are reused)."""
    import lightning.pytorch as pl

    from benchmarks.kit import DigitsDataModule, EpochMetrics, ImageClassifier, SmallCNN, quiet_trainer
    from benchmarks.paper.run import history_file, paper_monitor

    torch.set_num_threads(1)
    name = f"cnn_digits_seed{seed}"
    run_dir = Path(out) / "runs" / name
    if (run_dir / "metrics.json").is_file():
        if json.loads((run_dir / "metrics.json").read_text())["epochs"] != epochs:
            raise ValueError(f"{run_dir} holds a run of another length than {epochs} epochs: use another --out.")
        return name
    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=64, test_fraction=0.2)
    data.setup()
    monitors = {
        "dynamics": paper_monitor(),
        "dynamics_step": paper_monitor(
            every_n_steps=EVERY_N_STEPS, prefix="dynamics_step", compute_phase_integration=False
        ),
        "act_std": paper_monitor(summary="std", prefix="act_std", compute_phase_integration=False),
    }
    recorder = EpochMetrics()
    series = _StopSeries.make(data.test_set, EVERY_N_STEPS)
    trainer = quiet_trainer(
        max_epochs=epochs,
        accelerator="cpu",
        deterministic=True,
        callbacks=[*monitors.values(), recorder, series],
        limit_train_batches=limit_train_batches,
    )
    module = ImageClassifier(SmallCNN(), lr=0.05, weight_decay=5e-4, num_classes=10)
    start = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - start
    run_dir.mkdir(parents=True, exist_ok=True)
    for key, monitor in monitors.items():
        target = history_file(run_dir, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if monitor.tracker.save(target) is None:
            raise RuntimeError(f"could not write the {key} history of {name} to {target}.")
    record = {
        "seed": seed,
        "epochs": epochs,
        "seconds": seconds,
        "steps_per_epoch": trainer.num_training_batches,
        "epoch_metrics": recorder.values,
        "test_acc": series.test_acc,
        "eb_steps": series.eb_steps,
    }
    (run_dir / "metrics.json").write_text(json.dumps(record, indent=1, allow_nan=True))
    return name


def load_stopping_run(run_dir: Path) -> dict[str, Any]:
    """The series the rules read, from a run's ``metrics.json`` and its package history files."""
    from benchmarks.paper.run import history_file
    from lightning_dynamics.capture import load_history

    record = json.loads((run_dir / "metrics.json").read_text())
    per_epoch = load_history(history_file(run_dir, "dynamics"))
    per_step = load_history(history_file(run_dir, "dynamics_step"))
    act_std = load_history(history_file(run_dir, "act_std"))
    epochs, per = record["epochs"], record["steps_per_epoch"]
    eb: list[list[float]] = [[] for _ in range(epochs)]
    for step, value in record["eb_steps"]:
        eb[min((int(step) - 1) // per, epochs - 1) if step > 0 else 0].append(value)
    return {
        "name": run_dir.name,
        "seed": record["seed"],
        "val_acc": record["epoch_metrics"]["val_acc"],
        "val_loss": record["epoch_metrics"]["val_loss"],
        "test_acc": record["test_acc"],
        "volatility": per_epoch["metrics"]["stability_volatility"],
        "step_volatility": per_step["metrics"]["stability_volatility"],
        "step_steps": per_step["steps"],
        "steps_per_epoch": per,
        "act_std": act_std["values"].double().tolist(),
        "x": per_epoch["values"].double(),
        "x_epochs": [int(e) for e in per_epoch["epochs"]],
        "x_step": per_step["values"].double(),
        "x_step_epochs": [int(e) for e in per_step["epochs"]],
        "eb": [statistics.fmean(v) if v else math.nan for v in eb],
        "seconds": record["seconds"],
    }


def run_study(
    out: Path,
    seeds: Sequence[int] = SEEDS,
    tune_seeds: Sequence[int] = TUNE_SEEDS,
    epochs: int = EPOCHS,
    workers: int = 1,
    limit_train_batches: int | None = None,
    train: bool = True,
    analyse: bool = True,
) -> tuple[list[str], dict[str, Any]]:
    """Train (or reuse) the stopping runs under ``out`` and write ``stopping.md``, ``stopping.json``, ``pareto.png``."""
    out.mkdir(parents=True, exist_ok=True)
    if train:
        start = time.perf_counter()
        jobs = [(s, str(out), epochs, limit_train_batches) for s in seeds]
        if workers > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for name in pool.map(train_stopping_run, *zip(*jobs, strict=True)):
                    print(f"[{time.perf_counter() - start:7.1f} s] done stopping/{name}", flush=True)
        else:
            for job in jobs:
                name = train_stopping_run(*job)
                print(f"[{time.perf_counter() - start:7.1f} s] done stopping/{name}", flush=True)
    if not analyse:
        return [], {}
    runs = [
        load_stopping_run(out / "runs" / f"cnn_digits_seed{s}")
        for s in seeds
        if (out / "runs" / f"cnn_digits_seed{s}" / "metrics.json").is_file()
    ]
    if not runs:
        note = f"No finished stopping run under {out / 'runs'}."
        return ["## Early stopping with the best checkpoint restored", "", note, ""], {"note": note}
    lines, result = early_stopping_study(runs, tune_seeds, out / "pareto.png", epochs)
    (out / "stopping.md").write_text("\n".join(lines) + "\n")
    (out / "stopping.json").write_text(json.dumps(result, indent=1, default=float))
    print("\n".join(lines))
    return lines, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/paper_stopping"))
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--tune-seeds", nargs="*", type=int, default=list(TUNE_SEEDS))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args(argv)
    run_study(args.out, args.seeds, args.tune_seeds, args.epochs, args.workers, train=not args.analyse_only)


if __name__ == "__main__":
    main()
