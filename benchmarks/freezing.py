"""Layer freezing, measured: full training vs FreezeOut vs an AutoFreeze-style rule vs LayerFreezer.

Every method trains the same network with the same data order, SGD (momentum 0.9) and cosine learning rate
per step, in a plain PyTorch loop (no Trainer overhead in the timings), and freezes prefixes of the same units:
the monitored layers of :class:`~lightning_dynamics.DynamicsTracker` (``Conv2d`` and ``Linear``), each with the
parameters :func:`~lightning_dynamics.decisions.freezing.prefix_parameter_groups` gives it. The last unit never freezes.

- ``full``: no freezing.
- ``freezeout``: FreezeOut's cubic schedule (Brock et al., arXiv:1706.04983; their code's ``how_scale="cubic"``):
  unit ``i`` of ``n`` freezes at the fraction :math:`t_i = (t_0 + (1 - t_0) i / (n - 1))^3` of training, its
  learning rate annealed by its own cosine to zero at :math:`t_i`; the knob is :math:`t_0`. (Their optional
  ``scale_lr``, a larger initial rate for early-frozen layers, is not used.)
- ``autofreeze``: AutoFreeze's rule (Liu et al., arXiv:2102.01386) with per-epoch intervals: each epoch, per unit,
  the relative change of the gradient norm :math:`|g_e - g_{e-1}| / g_{e-1}` (``g_e``: root of the summed
  squared gradient norms of the unit's parameters over epoch ``e``); the prefix of trainable units whose change
  is below the ``percentile``-th percentile of the trainable units' changes is frozen. Knob: the percentile.
- ``dynamics``: :class:`~lightning_dynamics.decisions.freezing.LayerFreezer` on a :class:`DynamicsTracker` sampled
  ``samples_per_epoch`` times per epoch (the tracker's cost is inside its timings; no measures are computed unless
  ``--with-measures``). Knob: the readiness level (:data:`DYNAMICS_LEVELS`), each with its false-freeze rate on
  random walks (:func:`null_freeze_rate`).

Measured per run: training wall time (everything but validation and test evaluation, which every method does
alike), backward+forward FLOPs (``torch.utils.flop_counter`` of one step at each frozen depth, weighted by the
steps spent there), a *modelled* time (step time at each frozen depth, measured interleaved once per model on
this machine, weighted the same way: robust to other load on a shared machine, unlike the wall time), and the
test accuracy of the weights with the best validation accuracy (restore-best). Knobs are chosen on the tune seeds
(the largest mean frozen depth per step whose mean accuracy cost against ``full`` is at most 0.5 points); every
figure in the tables is from the held-out seeds, with t-intervals over seeds of the paired difference to ``full``;
with ``Setting.front`` every other knob runs on the same held-out seeds too (the front figure).

Cases (``--cases``): ``cnn`` (SmallCNN on digits), ``deep_cnn`` (8 conv-BN-ReLU blocks on digits), ``resnet18``
(timm ResNet-18 at 1/8 width on digits, from scratch), ``finetune`` (DeepCNN trained on digits by seed, then
fine-tuned on digit pairs with a new 100-class head: a stand-in for a pretrained backbone).

Run: ``nice -n 10 .venv/bin/python -m benchmarks.freezing --out runs/freezing`` (writes ``results.json`` and
``summary.md``); ``--quick`` is the smoke setting the test suite runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamics import DynamicsTracker
from lightning_dynamics.decisions.freezing import LayerFreezer, prefix_parameter_groups

MONITORED = [nn.Conv2d, nn.Linear]


@dataclass
class Case:
    model: str  # "cnn", "deep_cnn", "resnet18"
    task: str  # "digits", "pairs" (pairs: fine-tuned from a digits model)
    epochs: int
    lr: float
    pretrain_epochs: int = 0
    batch_size: int = 64


CASES: dict[str, Case] = {
    "cnn": Case("cnn", "digits", epochs=24, lr=0.05),
    "deep_cnn": Case("deep_cnn", "digits", epochs=24, lr=0.05),
    "resnet18": Case("resnet18", "digits", epochs=24, lr=0.05),
    # Smaller and shorter than the from-scratch cases, to fit the shared 2-core machine (see benchmarks/freezing.md).
    "finetune": Case("deep_cnn_small", "pairs", epochs=12, lr=0.02, pretrain_epochs=8),
}
KNOBS: dict[str, list[float]] = {
    "full": [0.0],
    "freezeout": [0.5, 0.8, 0.9, 0.95],
    "autofreeze": [25.0, 50.0],
    "dynamics": [1.0, 2.0, 3.0],
}
#: The dynamics rule's knob: a level of readiness to call a layer settled (``LayerFreezer`` settings). Level 1 is
#: the package default, calibrated not to fire on random walks; levels 2 and 3 fire sooner and on more noise.
#: Each level's false-freeze rate on simulated random walks of the case's length is measured with the results
#: (:func:`null_freeze_rate`) and printed beside its savings.
DYNAMICS_LEVELS: dict[float, dict[str, Any]] = {
    1.0: {},
    2.0: dict(change_tol=0.2, max_variance_ratio=2.0, patience=3),
    3.0: dict(change_tol=0.3, max_variance_ratio=4.0, patience=2, window=32),
}


@dataclass
class Setting:
    tune_seeds: tuple[int, ...] = (100, 101)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    #: also run every knob (not only the chosen one) on the held-out seeds, for the savings/accuracy front
    front: bool = True
    #: also compute the monitor's measures (and their noise floors) once per epoch in the dynamics runs. Off: the
    #: tracker only records the history the freezer reads (hooks and per-point summaries), the freezing rule's
    #: own cost; on: what a user pays who also watches the measures (on these tiny models it is most of it).
    measures: bool = False
    samples_per_epoch: int = 8
    max_steps_per_epoch: int | None = None
    epochs: int | None = None  # overrides the case's
    timing_steps: int = 20
    freezer: dict[str, Any] = field(default_factory=dict)


QUICK = Setting(
    tune_seeds=(100,), seeds=(0,), samples_per_epoch=4, max_steps_per_epoch=4, epochs=3, timing_steps=2, front=False
)
QUICK.freezer = dict(window=6, lag=2, patience=1)


# ---------------------------------------------------------------------- data and models


def load_task(task: str) -> dict[str, tuple[Tensor, Tensor]]:
    """Train / validation / test tensors: digits split 60/20/20 by class; pairs built from each digits split."""
    import numpy as np

    from benchmarks.kit.data import _digits_split3, _pairs

    tx, ty, vx, vy, sx, sy = _digits_split3(0.2, 0.2, 0)
    if task == "digits":
        return {"train": (tx, ty), "val": (vx, vy), "test": (sx, sy)}
    rng = np.random.default_rng(1)
    return {
        "train": _pairs(tx, ty, len(ty), rng),
        "val": _pairs(vx, vy, 500, rng),
        "test": _pairs(sx, sy, 1000, rng),
    }


def build(name: str, num_classes: int) -> nn.Module:
    from benchmarks.kit.models import DeepCNN, SmallCNN

    if name == "cnn":
        return SmallCNN(num_classes=num_classes)
    if name == "deep_cnn":
        return DeepCNN(num_classes=num_classes)
    if name == "deep_cnn_small":
        return DeepCNN(depth=6, channels=16, num_classes=num_classes)
    if name == "resnet18":
        from benchmarks.kit.architectures import build_model

        return build_model("resnet18", num_classes, in_channels=1, image_size=8, channels=(8, 16, 32, 64))
    raise ValueError(f"`model` must be 'cnn', 'deep_cnn', 'deep_cnn_small' or 'resnet18', got {name!r}.")


def head_of(model: nn.Module) -> nn.Linear:
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return head


def replace_head(model: nn.Module, num_classes: int) -> None:
    for name, module in reversed(list(model.named_modules())):
        if isinstance(module, nn.Linear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, nn.Linear(module.in_features, num_classes))
            return


def unit_names(model: nn.Module) -> list[str]:
    """The freezing units: the tracker's monitored layers (Conv2d, Linear), in registration order."""
    tracker = DynamicsTracker(layers=MONITORED, max_layers=None).attach(model)
    names = tracker.layer_names
    tracker.detach()
    return names


# ---------------------------------------------------------------------- cost per frozen depth


def freeze_depth(model: nn.Module, groups: list[list[str]], depth: int) -> None:
    params = dict(model.named_parameters())
    for index, group in enumerate(groups):
        for name in group:
            params[name].requires_grad_(index >= depth)


def step_costs(
    model: nn.Module, groups: list[list[str]], batch: tuple[Tensor, Tensor], steps: int, rounds: int = 3
) -> tuple[list[float], list[float]]:
    """FLOPs and median seconds of one training step (forward, backward, SGD step) at each frozen depth.

    Depths are timed interleaved (``rounds`` passes over all depths, ``steps`` steps each) so that other load on
    the machine hits every depth alike.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model)
    x, y = batch
    depths = range(len(groups))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def one_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    flops = []
    for depth in depths:
        freeze_depth(model, groups, depth)
        counter = FlopCounterMode(display=False)
        with counter:
            nn.functional.cross_entropy(model(x), y).backward()
        flops.append(float(counter.get_total_flops()))
    times: dict[int, list[float]] = {d: [] for d in depths}
    for _ in range(rounds):
        for depth in depths:
            freeze_depth(model, groups, depth)
            one_step()  # warm-up after the change
            start = time.perf_counter()
            for _ in range(steps):
                one_step()
            times[depth].append((time.perf_counter() - start) / steps)
    return flops, [statistics.median(times[d]) for d in depths]


# ---------------------------------------------------------------------- one run


def accuracy(model: nn.Module, data: tuple[Tensor, Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        correct = (model(data[0]).argmax(-1) == data[1]).sum().item()
    model.train()
    return 100.0 * correct / len(data[1])


def train_run(
    case: Case,
    method: str,
    knob: float,
    seed: int,
    setting: Setting,
    data: dict[str, tuple[Tensor, Tensor]],
    init: Callable[[int], nn.Module],
) -> dict[str, Any]:
    """Train one (method, knob, seed); return the frozen depth per step, timings and restore-best test accuracy."""
    torch.manual_seed(seed)
    model = init(seed)
    names = unit_names(model)
    groups = prefix_parameter_groups(model, names)
    params = dict(model.named_parameters())
    epochs = setting.epochs or case.epochs
    train_x, train_y = data["train"]
    n_batches = math.ceil(len(train_y) / case.batch_size)
    if setting.max_steps_per_epoch is not None:
        n_batches = min(n_batches, setting.max_steps_per_epoch)
    total = epochs * n_batches
    n_units = len(groups)
    # FreezeOut: per-unit freeze fraction and cosine to zero at it; the last unit trains to the end.
    if method == "freezeout":
        t_i = [(knob + (1 - knob) * i / (n_units - 1)) ** 3 if n_units > 1 else 1.0 for i in range(n_units)]
        t_i[-1] = 1.0
    else:
        t_i = [1.0] * n_units
    optimizer = torch.optim.SGD(
        [{"params": [params[n] for n in group], "lr": case.lr} for group in groups], lr=case.lr, momentum=0.9
    )
    tracker = freezer = None
    if method == "dynamics":
        tracker = DynamicsTracker(layers=MONITORED, max_layers=None, prefix="dynamics").attach(model)
        freezer = LayerFreezer(**{**DYNAMICS_LEVELS[knob], **setting.freezer}).attach(model, tracker)
    sample_every = max(1, n_batches // setting.samples_per_epoch)
    grad_sq = [0.0] * n_units
    previous_norms: list[float] | None = None
    depth = 0
    depth_per_step: list[int] = []
    best_acc, best_state, best_epoch = -1.0, None, -1
    generator = torch.Generator().manual_seed(seed)
    train_seconds = 0.0
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(train_y), generator=generator)
        start = time.perf_counter()
        for b in range(n_batches):
            index = order[b * case.batch_size : (b + 1) * case.batch_size]
            progress = step / total
            for i, group in enumerate(optimizer.param_groups):
                group["lr"] = 0.5 * case.lr * (1 + math.cos(math.pi * min(progress / t_i[i], 1.0)))
            if method == "freezeout":
                new_depth = depth
                while new_depth < n_units - 1 and progress >= t_i[new_depth]:
                    new_depth += 1
                if new_depth > depth:
                    for name in (n for g in groups[depth:new_depth] for n in g):
                        params[name].requires_grad_(False)
                        params[name].grad = None
                    depth = new_depth
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(train_x[index]), train_y[index]).backward()
            if method == "autofreeze":
                for i, names_i in enumerate(groups[depth:], start=depth):
                    grads = [params[n].grad for n in names_i]
                    grad_sq[i] += sum(float(g.pow(2).sum()) for g in grads if g is not None)
            optimizer.step()
            depth_per_step.append(depth)
            step += 1
            if tracker is not None and freezer is not None and step % sample_every == 0:
                # Sub-epoch points as DynamicsMonitor's; the measures only with `Setting.measures` (at the epoch's end).
                tracker.sample(epoch=epoch, step=step, compute=setting.measures and b + sample_every >= n_batches)
                freezer.step(epoch=epoch, step=step)
                depth = freezer.n_frozen
        if method == "autofreeze":
            norms = [math.sqrt(v) for v in grad_sq]
            if previous_norms is not None and depth < n_units - 1:
                changes = [
                    abs(norms[i] - previous_norms[i]) / previous_norms[i] if previous_norms[i] > 0 else math.inf
                    for i in range(depth, n_units)
                ]
                threshold = float(torch.tensor(changes).quantile(knob / 100.0))
                new_depth = depth
                while new_depth < n_units - 1 and changes[new_depth - depth] < threshold:
                    new_depth += 1
                for name in (n for g in groups[depth:new_depth] for n in g):
                    params[name].requires_grad_(False)
                    params[name].grad = None
                depth = new_depth
            previous_norms, grad_sq = norms, [0.0] * n_units
        train_seconds += time.perf_counter() - start
        val_acc = accuracy(model, data["val"])
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if tracker is not None:
        tracker.detach()
    assert best_state is not None
    model.load_state_dict(best_state)
    return {
        "method": method,
        "knob": knob,
        "seed": seed,
        "train_seconds": train_seconds,
        "depth_per_step": depth_per_step,
        "final_depth": depth,
        "units": n_units,
        "best_epoch": best_epoch,
        "val_acc": best_acc,
        "test_acc": accuracy(model, data["test"]),
        "events": [asdict(e) for e in freezer.events] if freezer is not None else [],
        "sample_points": tracker.n_samples if tracker is not None else 0,
    }


# ---------------------------------------------------------------------- a case


def pretrained_init(
    case: Case, setting: Setting, digits: dict[str, tuple[Tensor, Tensor]]
) -> Callable[[int], nn.Module]:
    """For fine-tuning: a digits model per seed (trained ``pretrain_epochs``, cached), given a fresh pairs head."""
    cache: dict[int, dict[str, Tensor]] = {}

    def init(seed: int) -> nn.Module:
        if seed not in cache:
            base = Case(case.model, "digits", epochs=setting.epochs or case.pretrain_epochs, lr=0.05)
            holder: dict[str, nn.Module] = {}

            def fresh(s: int) -> nn.Module:
                holder["m"] = build(case.model, 10)
                return holder["m"]

            train_run(base, "full", 0.0, seed + 1000, setting, digits, fresh)
            cache[seed] = {k: v.clone() for k, v in holder["m"].state_dict().items()}
        model = build(case.model, 10)
        model.load_state_dict(cache[seed])
        torch.manual_seed(seed)
        replace_head(model, 100)
        return model

    return init


def run_case(
    name: str, setting: Setting, log: Callable[[str], None] = print, journal: Path | None = None
) -> dict[str, Any]:
    case = CASES[name]
    data = load_task(case.task)
    n_classes = 10 if case.task == "digits" else 100
    init: Callable[[int], nn.Module]
    if case.pretrain_epochs:
        init = pretrained_init(case, setting, load_task("digits"))
    else:

        def init(seed: int) -> nn.Module:
            return build(case.model, n_classes)

    probe_model = init(setting.tune_seeds[0])
    groups = prefix_parameter_groups(probe_model, unit_names(probe_model))
    x, y = data["train"]
    flops, seconds = step_costs(probe_model, groups, (x[: case.batch_size], y[: case.batch_size]), setting.timing_steps)
    log(f"{name}: FLOPs per step by frozen depth {flops}; seconds {seconds}")
    runs: list[dict[str, Any]] = []

    def record(run: dict[str, Any]) -> None:
        runs.append(run)
        log(_line(name, run))
        if journal is not None:  # every finished run, at once: a stopped benchmark keeps what it measured
            with journal.open("a") as handle:
                handle.write(json.dumps({"case": name, "flops": flops, "seconds": seconds, **run}) + "\n")

    for method, knobs in KNOBS.items():
        for knob in knobs:
            for seed in setting.tune_seeds:
                record({**train_run(case, method, knob, seed, setting, data, init), "split": "tune"})
    chosen = {method: choose_knob(runs, method) for method in KNOBS}
    # The chosen knobs first (the table), then, for the front, every other knob on the same held-out seeds.
    plan = [(m, chosen[m], True) for m in KNOBS]
    if setting.front:
        plan += [(m, k, False) for m, knobs in KNOBS.items() for k in knobs if k != chosen[m]]
    # Seed-major within each block, so that the paired runs of a seed are timed close together (load drifts).
    blocks = [plan[: len(KNOBS)], plan[len(KNOBS) :]]
    for block in blocks:
        for seed in setting.seeds:
            for method, knob, is_chosen in block:
                run = train_run(case, method, knob, seed, setting, data, init)
                record({**run, "split": "held_out", "chosen": is_chosen})
    for run in runs:
        steps = run["depth_per_step"]
        run["flops"] = sum(flops[d] for d in steps)
        run["modelled_seconds"] = sum(seconds[d] for d in steps)
    n_points = max(r["sample_points"] for r in runs if r["method"] == "dynamics")
    return {
        "case": asdict(case),
        "units": len(groups),
        "flops_per_depth": flops,
        "seconds_per_depth": seconds,
        "chosen": chosen,
        "null_freeze_rate": {
            str(level): null_freeze_rate(n_points, {**DYNAMICS_LEVELS[level], **setting.freezer})
            for level in KNOBS["dynamics"]
        },
        "runs": runs,
    }


def null_freeze_rate(n_points: int, settings: dict[str, Any], n: int = 500, seed: int = 0) -> float:
    """The fraction of ``n`` simulated random walks of ``n_points`` on which ``LayerFreezer(**settings)`` fires.

    The rule's false-freeze rate on a layer that never settles, at the length of a benchmark run, checked at every
    point as the freezer checks it (:func:`~lightning_dynamics.decisions.freezing.settled_layers` with its patience).
    """
    from lightning_dynamics.decisions.freezing import settled_layers

    freezer = LayerFreezer(**settings)
    walks = torch.randn(n, n_points, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).cumsum(-1)
    streak = torch.zeros(n, dtype=torch.long)
    fired = torch.zeros(n, dtype=torch.bool)
    for t in range(freezer.samples_needed, n_points + 1):
        ok = settled_layers(
            walks[:, :t], freezer.lag, freezer.window, freezer.change_tol, freezer.max_variance_ratio, freezer.horizon
        )
        streak = torch.where(ok, streak + 1, torch.zeros_like(streak))
        fired |= streak >= freezer.patience
    return float(fired.double().mean())


def _line(case: str, run: dict[str, Any]) -> str:
    return (
        f"{case} {run['split'] if 'split' in run else ''} {run['method']}({run['knob']}) seed {run['seed']}: "
        f"test {run['test_acc']:.2f}, depth {run['final_depth']}/{run['units']}, {run['train_seconds']:.1f} s"
    )


def _modelled(run: dict[str, Any], seconds: list[float] | None = None) -> float:
    return float(run.get("modelled_seconds", len(run["depth_per_step"])))


def choose_knob(runs: list[dict[str, Any]], method: str) -> float:
    """On the tune seeds: the knob with the most frozen steps whose mean accuracy cost vs full is <= 0.5 points;
    if no knob is within 0.5 points, the one with the smallest cost."""
    tune = [r for r in runs if r.get("split") == "tune"]
    full = statistics.mean(r["test_acc"] for r in tune if r["method"] == "full")
    scored = []
    for knob in KNOBS[method]:
        mine = [r for r in tune if r["method"] == method and r["knob"] == knob]
        cost = full - statistics.mean(r["test_acc"] for r in mine)
        saving = statistics.mean(sum(r["depth_per_step"]) / max(1, len(r["depth_per_step"])) for r in mine)
        scored.append((knob, cost, saving))
    within = [s for s in scored if s[1] <= 0.5]
    if within:
        return max(within, key=lambda s: s[2])[0]
    return min(scored, key=lambda s: s[1])[0]


# ---------------------------------------------------------------------- summary


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds."""
    from scipy import stats

    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def summarise(result: dict[str, Any], front: bool = False) -> list[dict[str, Any]]:
    """Held-out rows: one per method at its chosen knob, or (``front``) one per method and knob run held out.

    Every figure is a mean over held-out seeds with a 95% t-interval; savings and accuracy are paired by seed with
    ``full``.
    """
    held = [r for r in result["runs"] if r["split"] == "held_out"]
    full = {r["seed"]: r for r in held if r["method"] == "full"}
    rows = []
    for method in KNOBS:
        knobs = sorted({r["knob"] for r in held if r["method"] == method}) if front else [result["chosen"][method]]
        for knob in knobs:
            mine = sorted((r for r in held if r["method"] == method and r["knob"] == knob), key=lambda r: r["seed"])
            if not mine:
                continue

            def paired(key: str, relative: bool = True, mine: list[dict[str, Any]] = mine) -> tuple[float, ...]:
                values = []
                for r in (r for r in mine if r["seed"] in full):
                    ref = full[r["seed"]][key]
                    values.append(100.0 * (1 - r[key] / ref) if relative else r[key] - ref)
                return t_interval(values)

            rows.append(
                {
                    "method": method,
                    "knob": knob,
                    "chosen": knob == result["chosen"][method],
                    "seeds": len(mine),
                    "test_acc": t_interval([r["test_acc"] for r in mine]),
                    "acc_diff": paired("test_acc", relative=False),
                    "train_seconds": t_interval([r["train_seconds"] for r in mine]),
                    "wall_saved_pct": paired("train_seconds"),
                    "modelled_saved_pct": paired("modelled_seconds"),
                    "flops_saved_pct": paired("flops"),
                    "final_depth": statistics.mean(r["final_depth"] for r in mine),
                    "null_rate": result.get("null_freeze_rate", {}).get(str(knob)) if method == "dynamics" else None,
                }
            )
    return rows


def markdown(results: dict[str, Any]) -> str:
    def fmt(triple: tuple[float, ...], digits: int = 1) -> str:
        mean, low, high = triple
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    header = [
        "| method | knob | test acc | acc - full (points) | wall s per run | wall time saved % | modelled time saved % "
        "| FLOPs saved % | units frozen at end | random-walk false-freeze rate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def line(row: dict[str, Any]) -> str:
        null = "" if row["null_rate"] is None else f"{100 * row['null_rate']:.1f}%"
        return (
            f"| {row['method']} | {row['knob']:g}{'' if row['chosen'] else ' (front)'} | {fmt(row['test_acc'], 2)} | "
            f"{fmt(row['acc_diff'], 2)} | {row['train_seconds'][0]:.1f} | {fmt(row['wall_saved_pct'])} | "
            f"{fmt(row['modelled_saved_pct'])} | "
            f"{fmt(row['flops_saved_pct'])} | {row['final_depth']:.1f} | {null} |"
        )

    lines = []
    for name, result in results.items():
        lines += [
            f"### {name} ({result['units']} units; knobs chosen on seeds {result['tune_seeds']}, "
            f"held-out seeds {result['seeds']})",
            "",
            *header,
            *(line(row) for row in summarise(result)),
        ]
        others = [row for row in summarise(result, front=True) if not row["chosen"]]
        if others:
            lines += ["", "Every other knob on the same held-out seeds (the front of the figure):", "", *header]
            lines += [line(row) for row in others]
        lines.append("")
    return "\n".join(lines)


#: Marker and colour of each method in the front figure.
STYLE = {
    "full": ("k", "s"),
    "freezeout": ("tab:blue", "^"),
    "autofreeze": ("tab:orange", "v"),
    "dynamics": ("tab:green", "o"),
}


def front_figure(results: dict[str, Any], path: Path) -> None:
    """Accuracy cost against compute saved, every method and knob, on the held-out seeds (mean and 95% interval).

    One column per case; top row FLOPs saved, bottom row measured wall time saved. The chosen knob (picked on the
    tune seeds) is drawn filled, the others hollow; the dashed line is the 0.5-point accuracy budget.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7.0), squeeze=False)
    for column, name in enumerate(names):
        rows = summarise(results[name], front=True)
        for row_index, key in enumerate(("flops_saved_pct", "wall_saved_pct")):
            ax = axes[row_index][column]
            for method, (color, marker) in STYLE.items():
                mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r[key][0])
                if not mine:
                    continue
                xs = [r[key][0] for r in mine]
                ys = [r["acc_diff"][0] for r in mine]
                ax.plot(xs, ys, color=color, alpha=0.4, lw=1)
                for r, x, y in zip(mine, xs, ys, strict=True):
                    low, high = r["acc_diff"][1:]
                    xlow, xhigh = r[key][1:]
                    ax.errorbar(
                        x,
                        y,
                        yerr=[[y - low], [high - y]],
                        xerr=[[x - xlow], [xhigh - x]],
                        color=color,
                        alpha=0.35,
                        lw=0.8,
                        capsize=0,
                    )
                    ax.scatter(
                        [x],
                        [y],
                        color=color if r["chosen"] else "white",
                        edgecolor=color,
                        marker=marker,
                        s=46,
                        zorder=3,
                        label=method if r["chosen"] else None,
                    )
                    if method != "full":
                        ax.annotate(f"{r['knob']:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
            ax.axhline(-0.5, color="grey", ls="--", lw=0.8)
            ax.axvline(20.0, color="grey", ls=":", lw=0.8)
            ax.set_xlabel(("FLOPs" if row_index == 0 else "wall time") + " saved vs full (%)")
            if column == 0:
                ax.set_ylabel("test accuracy - full (points)")
            if row_index == 0:
                ax.set_title(f"{name} (held-out seeds {results[name]['seeds']})", fontsize=9)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Layer freezing: accuracy cost against compute saved (goal: right of 20%, above -0.5)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compile_check(steps: int = 6) -> dict[str, float]:
    """Seconds per training step of a compiled SmallCNN (inductor), watched by a tracker, around a freezing decision.

    Compiled code guards on ``requires_grad``: the first step after the trainable set changes recompiles. Returns
    the first compiled step (the compilation), the steady step before freezing, the first step after freezing (the
    recompilation), the steady step after it, and dynamo's graph count before and after (1 and 2 when the hooks
    trace once and freezing recompiles once).
    """
    from torch._dynamo.utils import counters

    from benchmarks.kit.models import SmallCNN

    torch.manual_seed(0)
    torch._dynamo.reset()
    counters.clear()
    model = SmallCNN()
    compiled = torch.compile(model)
    tracker = DynamicsTracker(layers=MONITORED, max_layers=None, save_history=False).attach(compiled)
    freezer = LayerFreezer().attach(compiled, tracker)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))

    def timed() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(compiled(x), y).backward()
        optimizer.step()
        return time.perf_counter() - start

    first = timed()
    before = statistics.median(timed() for _ in range(steps))
    graphs_before = counters["stats"]["unique_graphs"]
    freezer.freeze_prefix(2)
    recompile = timed()
    after = statistics.median(timed() for _ in range(steps))
    tracker.detach()
    return {
        "first_step": first,
        "steady_before": before,
        "first_after_freeze": recompile,
        "steady_after": after,
        "graphs_before_freeze": float(graphs_before),
        "graphs_after_freeze": float(counters["stats"]["unique_graphs"]),
    }


def results_from_journals(paths: list[Path]) -> dict[str, Any]:
    """Rebuild the per-case results from ``runs.jsonl`` journals (or gzipped ``.jsonl.gz``; e.g. of cases run in
    separate processes, or the committed ones in ``benchmarks/results/freezing``)."""
    import gzip

    results: dict[str, Any] = {}
    for path in paths:
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
        for line in text.splitlines():
            run = json.loads(line)
            name = run.pop("case")
            flops, seconds = run.pop("flops"), run.pop("seconds")
            case = results.setdefault(
                name, {"units": len(flops), "flops_per_depth": flops, "seconds_per_depth": seconds, "runs": []}
            )
            run["flops"] = sum(flops[d] for d in run["depth_per_step"])
            run["modelled_seconds"] = sum(seconds[d] for d in run["depth_per_step"])
            case["runs"].append(run)
    for case in results.values():
        held = [r for r in case["runs"] if r["split"] == "held_out"]
        case["chosen"] = {r["method"]: r["knob"] for r in held if r.get("chosen", True)}
        case["tune_seeds"] = sorted({r["seed"] for r in case["runs"] if r["split"] == "tune"})
        case["seeds"] = sorted({r["seed"] for r in held})
        n_points = max((r.get("sample_points", 0) for r in case["runs"] if r["method"] == "dynamics"), default=0)
        levels = sorted({r["knob"] for r in case["runs"] if r["method"] == "dynamics" and r["knob"] in DYNAMICS_LEVELS})
        case["null_freeze_rate"] = {str(k): null_freeze_rate(n_points, DYNAMICS_LEVELS[k]) for k in levels if n_points}
    return results


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """``summary.md`` (the tables) and ``front.png`` (the figure) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(markdown(results))
    front_figure(results, out / "front.png")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["cnn", "deep_cnn", "finetune", "resnet18"], choices=CASES)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="smoke setting: 3 epochs of 4 steps, one seed each")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tune-seeds", type=int, nargs="+", help="seeds the knobs are chosen on (default 100 101)")
    parser.add_argument("--seeds", type=int, nargs="+", help="held-out seeds (default 0-4)")
    parser.add_argument("--epochs", type=int, help="override the cases' epochs")
    parser.add_argument("--no-front", action="store_true", help="run only the chosen knobs on the held-out seeds")
    parser.add_argument("--with-measures", action="store_true", help="dynamics runs also compute the measures")
    parser.add_argument("--compile-check", action="store_true", help="only time the recompilation after freezing")
    parser.add_argument("--from-journals", type=Path, nargs="+", help="only summarise these runs.jsonl files")
    args = parser.parse_args(argv)
    if args.from_journals:
        merged = results_from_journals(args.from_journals)
        write_outputs(merged, args.out)
        print(markdown(merged))
        return merged
    torch.set_num_threads(args.threads)
    if args.compile_check:
        timings = compile_check()
        print(json.dumps(timings, indent=1))
        return timings
    setting = copy.copy(QUICK if args.quick else Setting())
    if args.tune_seeds:
        setting.tune_seeds = tuple(args.tune_seeds)
    if args.seeds:
        setting.seeds = tuple(args.seeds)
    if args.epochs:
        setting.epochs = args.epochs
    if args.no_front:
        setting.front = False
    if args.with_measures:
        setting.measures = True
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name in args.cases:
        result = run_case(name, setting, journal=args.out / "runs.jsonl")
        result["tune_seeds"], result["seeds"] = list(setting.tune_seeds), list(setting.seeds)
        results[name] = result
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        write_outputs(results, args.out)
    print(markdown(results))
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    return results


if __name__ == "__main__":
    main()
