"""Every detector on the same traces of the fault zoo (``benchmarks/diagnosis_zoo.py``), and the table they make.

One training run serves all detectors: ``DynamicsDiagnosis`` ran live (its findings are in the record); the others
read the recorded trace post hoc. Each detector returns alarms ``(kind, step)``; a kind outside
:data:`~lightning_dynamics.decisions.diagnosis.FINDING_KINDS` (``loss_not_decreasing``) detects but names nothing.

- ``autotrainer``: the problem definitions of AUTOTRAINER (Zhang et al., "AUTOTRAINER: An Automatic DNN Training
  Problem Detection and Repair System", ICSE 2021), re-implemented from the paper's description (its repository has
  no licence; no code was read), checked at every epoch end (the paper's checking period):
  vanishing gradient: first layer's gradient norm / last layer's < ``1e-3``; exploding gradient: that ratio > ``70``
  or a non-finite loss; dying ReLU: a layer with more than ``70%`` dead units; oscillating loss: the training
  accuracy went down then up (or up then down) within the last 3 epochs by more than ``0.03`` each way; slow
  convergence: after 3 epochs, training accuracy below ``0.6`` and up by less than ``0.01`` over the last 3 epochs.
  The numbers are our reading of the paper's default configuration, recalled, not checked against its text in this
  session (no copy of the paper was at hand): treat them as "AUTOTRAINER-like".
  Oscillation maps to ``lr_too_high``, slow convergence to ``lr_too_low``, NaN to ``exploding_gradients`` (the
  paper's own taxonomy has no separate numerical-error class).
- ``sagemaker``: SageMaker Debugger's built-in rules at their documented defaults, on what the traces hold:
  VanishingGradient (a weight tensor's mean \\|g\\| < ``1e-7``, every step); ExplodingTensor (a non-finite loss or
  gradient, every step); DeadRelu (``threshold_layer`` 50%; our dead unit is inactive on every value of a sample
  interval, stricter than its ``threshold_inactivity`` of 1%); SaturatedActivation (``threshold_layer`` 50%);
  WeightUpdateRatio (``large_threshold`` 10, ``small_threshold`` 1e-8, read at the monitor's sample points);
  LossNotDecreasing (``num_steps`` 10, ``diff_percent`` 0.1: the mean loss of each window of 10 steps must fall by
  0.1% from the previous window's); Overfit (``ratio_threshold`` 0.1, ``patience`` 1: (val - train) / train loss,
  per epoch). Not evaluable on these traces: Overtraining, PoorWeightInitialization, TensorVariance, AllZero,
  ClassImbalance, CheckInputImages, SimilarAcrossRuns, StalledTrainingRule and the NLP and profiler rules.
- ``lightning_nan``: ``EarlyStopping(monitor="val_loss", check_finite=True)``: a non-finite validation loss at an
  epoch end.
- ``clf_loss_scale`` / ``clf_loss_scale_dyn``: multinomial logistic regression on the training and validation loss
  and accuracy and the activation scale (``stats/act_scale_*``) at epochs 2 and 5 (1-based), with and without the
  paper's dynamics keys (integration, integration_alpha, metastability, stability_index, synchrony) added; trained
  leave-one-architecture-out (on every run of the other architectures), read at the end of epoch 5.

    python benchmarks/diagnosis_baselines.py benchmarks/results/diagnosis_zoo_*.jsonl.gz \
        --table benchmarks/results/diagnosis_zoo.md
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.diagnosis_zoo import HELD_OUT_ARCHS, SEVERITY_TEXT, TUNING_ARCHS, TUNING_SEEDS
from lightning_dynamics.decisions.diagnosis import FINDING_KINDS

Record = dict[str, Any]
Alarm = tuple[str, int]  # (kind, step)

AUTOTRAINER = {
    "vanishing_ratio": 1e-3,
    "exploding_ratio": 70.0,
    "dead_share": 0.7,
    "oscillation_swing": 0.03,
    "slow_accuracy": 0.6,
    "slow_gain": 0.01,
    "window_epochs": 3,
}
SAGEMAKER = {
    "vanishing_mean_abs_grad": 1e-7,
    "dead_threshold_layer": 0.5,
    "saturated_threshold_layer": 0.5,
    "update_large": 10.0,
    "update_small": 1e-8,
    "loss_num_steps": 10,
    "loss_diff_percent": 0.1,
    "overfit_ratio": 0.1,
    "overfit_patience": 1,
}
LOSS_AND_SCALE = (
    "train_loss",
    "val_loss",
    "train_acc",
    "val_acc",
    "dynamics/stats/act_scale_min",
    "dynamics/stats/act_scale_max",
    "dynamics/stats/act_scale_ratio_last_first",
)
DYNAMICS_KEYS = tuple(
    f"dynamics/{k}" for k in ("integration", "integration_alpha", "metastability", "stability_index", "synchrony")
)
CLASSIFIER_EPOCHS = (1, 4)  # epochs 2 and 5, 1-based
DETECTORS = ("ours", "autotrainer", "sagemaker", "lightning_nan", "clf_loss_scale", "clf_loss_scale_dyn")
LOSS_RULES = ("autotrainer_loss", "sagemaker_loss", "lightning_nan")


def epoch_end_steps(record: Record) -> list[int]:
    """The optimizer step at each epoch's end."""
    return list(np.cumsum(record["steps_per_epoch"]).astype(int))


def budget_steps(record: Record) -> int:
    per_epoch = record["steps_per_epoch"][0] if record["steps_per_epoch"] else 1
    return int(record["epochs"] * per_epoch)


def _metric(record: Record, epoch: int, key: str) -> float:
    value = record["epoch_metrics"][epoch].get(key, math.nan) if epoch < len(record["epoch_metrics"]) else math.nan
    return float(value)


def ours(record: Record) -> list[Alarm]:
    """The findings of ``DynamicsDiagnosis`` (run live), in the order first seen."""
    return [(f["kind"], int(f["step"])) for f in record["findings"]]


def autotrainer(record: Record, loss_only: bool = False) -> list[Alarm]:
    """AUTOTRAINER-like problem checks at each epoch end (module docstring); ``loss_only``: the loss and
    accuracy rules only (oscillation, slow convergence, NaN)."""
    t = AUTOTRAINER
    alarms: list[Alarm] = []
    window = int(t["window_epochs"])
    for epoch, step in enumerate(epoch_end_steps(record)):
        acc = [_metric(record, e, "train_acc") for e in range(max(0, epoch - window + 1), epoch + 1)]
        loss = _metric(record, epoch, "train_loss")
        if not math.isfinite(loss):
            alarms.append(("exploding_gradients", step))
        if not loss_only:
            ratio = _metric(record, epoch, "dynamics/stats/grad_norm_ratio_first_last")
            if ratio < t["vanishing_ratio"]:
                alarms.append(("vanishing_gradients", step))
            if ratio > t["exploding_ratio"]:
                alarms.append(("exploding_gradients", step))
            if _metric(record, epoch, "dynamics/stats/dead_frac_max") > t["dead_share"]:
                alarms.append(("dying_relu", step))
        if len(acc) == window and all(math.isfinite(a) for a in acc):
            d1, d2 = acc[1] - acc[0], acc[2] - acc[1]
            if d1 * d2 < 0 and min(abs(d1), abs(d2)) > t["oscillation_swing"]:
                alarms.append(("lr_too_high", step))
            if acc[-1] < t["slow_accuracy"] and acc[-1] - acc[0] < t["slow_gain"]:
                alarms.append(("lr_too_low", step))
    return _first_of_each(alarms)


def sagemaker(record: Record, loss_only: bool = False) -> list[Alarm]:
    """SageMaker Debugger's default rules on the trace (module docstring); ``loss_only``: LossNotDecreasing,
    Overfit and ExplodingTensor on the loss."""
    t = SAGEMAKER
    alarms: list[Alarm] = []
    losses = record["step_loss"]
    for index, loss in enumerate(losses):
        if not math.isfinite(loss) or (not loss_only and not record["step_grad_finite"][index]):
            alarms.append(("nonfinite", index + 1))
            break
    if not loss_only:
        for index, value in enumerate(record["step_grad_min"]):
            if math.isfinite(value) and value < t["vanishing_mean_abs_grad"]:
                alarms.append(("vanishing_gradients", index + 1))
                break
    n = int(t["loss_num_steps"])
    for end in range(2 * n, len(losses) + 1, n):
        previous, current = losses[end - 2 * n : end - n], losses[end - n : end]
        if not all(math.isfinite(v) for v in previous + current):
            break
        before, now = statistics.fmean(previous), statistics.fmean(current)
        if before <= 0 or (before - now) / before * 100.0 < t["loss_diff_percent"]:
            alarms.append(("loss_not_decreasing", end))
            break
    over = 0
    for epoch, step in enumerate(epoch_end_steps(record)):
        train, val = _metric(record, epoch, "train_loss"), _metric(record, epoch, "val_loss")
        if math.isfinite(train) and math.isfinite(val) and train > 0 and (val - train) / train > t["overfit_ratio"]:
            over += 1
            if over >= t["overfit_patience"]:
                alarms.append(("label_noise", step))
        else:
            over = 0
        if loss_only:
            continue
        if _metric(record, epoch, "dynamics/stats/dead_frac_max") > t["dead_threshold_layer"]:
            alarms.append(("dying_relu", step))
        if _metric(record, epoch, "dynamics/stats/saturated_frac_max") > t["saturated_threshold_layer"]:
            alarms.append(("saturation", step))
        if _metric(record, epoch, "dynamics/stats/update_ratio_max") > t["update_large"]:
            alarms.append(("lr_too_high", step))
        if _metric(record, epoch, "dynamics/stats/update_ratio_min") < t["update_small"]:
            alarms.append(("lr_too_low", step))
    return _first_of_each(alarms)


def lightning_nan(record: Record) -> list[Alarm]:
    """``EarlyStopping(check_finite=True)`` on ``val_loss``: the first epoch end with a non-finite value."""
    for epoch, step in enumerate(epoch_end_steps(record)):
        if not math.isfinite(_metric(record, epoch, "val_loss")):
            return [("nonfinite", step)]
    return []


def _first_of_each(alarms: Iterable[Alarm]) -> list[Alarm]:
    """Each kind once, at its first step, ordered by step (rule order within a step)."""
    first: dict[str, int] = {}
    for kind, step in alarms:
        first.setdefault(kind, step)
    return sorted(first.items(), key=lambda item: item[1])


def features(record: Record, keys: Sequence[str]) -> np.ndarray:
    """``keys`` at :data:`CLASSIFIER_EPOCHS`, signed log scale, and one is-missing flag per value (NaN/inf: 0)."""
    values = []
    for epoch in CLASSIFIER_EPOCHS:
        for key in keys:
            values.append(_metric(record, epoch, key))
    x = np.array(values, dtype=float)
    missing = ~np.isfinite(x)
    x = np.where(missing, 0.0, np.sign(x) * np.log1p(np.abs(np.where(missing, 0.0, x))))
    return np.concatenate([x, missing.astype(float)])


def _label(record: Record) -> str:
    return record["truth"] or "healthy"


def classifier_alarms(records: list[Record], keys: Sequence[str]) -> dict[int, list[Alarm]]:
    """Leave-one-architecture-out predictions of a multinomial logistic regression: ``{id(record): alarms}``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[int, list[Alarm]] = {}
    x_all = np.stack([features(r, keys) for r in records]) if records else np.zeros((0, 0))
    labels = np.array([_label(r) for r in records])
    archs = np.array([r["arch"] for r in records])
    for arch in sorted(set(archs)):
        train, test = archs != arch, archs == arch
        if len(set(labels[train])) < 2:
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        model.fit(x_all[train], labels[train])
        for index, predicted in zip(np.flatnonzero(test), model.predict(x_all[test]), strict=True):
            record = records[index]
            step = epoch_end_steps(record)[min(CLASSIFIER_EPOCHS[-1], len(record["steps_per_epoch"]) - 1)]
            out[id(record)] = [] if predicted == "healthy" else [(str(predicted), step)]
    return out


def all_alarms(records: list[Record]) -> dict[str, dict[int, list[Alarm]]]:
    """Every detector's alarms on every record: ``{detector: {id(record): alarms}}``."""
    table: dict[str, dict[int, list[Alarm]]] = {
        "ours": {id(r): ours(r) for r in records},
        "autotrainer": {id(r): autotrainer(r) for r in records},
        "sagemaker": {id(r): sagemaker(r) for r in records},
        "lightning_nan": {id(r): lightning_nan(r) for r in records},
        "autotrainer_loss": {id(r): autotrainer(r, loss_only=True) for r in records},
        "sagemaker_loss": {id(r): sagemaker(r, loss_only=True) for r in records},
        "clf_loss_scale": classifier_alarms(records, LOSS_AND_SCALE),
        "clf_loss_scale_dyn": classifier_alarms(records, LOSS_AND_SCALE + DYNAMICS_KEYS),
    }
    table["loss_rules"] = {id(r): _first_of_each(a for name in LOSS_RULES for a in table[name][id(r)]) for r in records}
    return table


def score(records: list[Record], alarms: dict[int, list[Alarm]]) -> dict[str, float]:
    """Recall, named recall, top-1, false alarms and detection time of one detector on ``records``.

    recall: faulty runs with any alarm; named: with the injected kind among the alarms; top1: the first alarm is the
    injected kind; clean_flagged: clean runs with any alarm; alarms_per_clean: distinct alarm kinds per clean run;
    t_median: median first-alarm step over the budget, detected faulty runs.
    """
    faulty = [r for r in records if r["truth"] is not None and id(r) in alarms]
    clean = [r for r in records if r["truth"] is None and id(r) in alarms]
    detected = [r for r in faulty if alarms[id(r)]]
    times = [alarms[id(r)][0][1] / budget_steps(r) for r in detected]
    return {
        "n_faulty": len(faulty),
        "n_clean": len(clean),
        "recall": _share(detected, faulty),
        "named": _share([r for r in faulty if r["truth"] in {k for k, _ in alarms[id(r)]}], faulty),
        "top1": _share([r for r in detected if alarms[id(r)][0][0] == r["truth"]], faulty),
        "clean_flagged": _share([r for r in clean if alarms[id(r)]], clean),
        "alarms_per_clean": statistics.fmean(len(alarms[id(r)]) for r in clean) if clean else math.nan,
        "t_median": statistics.median(times) if times else math.nan,
    }


def _share(part: Sequence[Any], whole: Sequence[Any]) -> float:
    return len(part) / len(whole) if whole else math.nan


def first_time(record: Record, alarms: dict[int, list[Alarm]]) -> float:
    """The first alarm's step over the budget (inf when none)."""
    found = alarms.get(id(record), [])
    return found[0][1] / budget_steps(record) if found else math.inf


def load(paths: Iterable[Path]) -> list[Record]:
    """The records of the JSON-lines files ``paths`` (``.gz``: compressed), each run once (the first record wins)."""
    records, seen = [], set()
    for path in paths:
        path = Path(path)
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
        for line in text.splitlines():
            if line.strip():
                record = json.loads(line)
                key = (record["fault"], record["severity"], record["arch"], record["task"], record["seed"])
                if key not in seen:
                    seen.add(key)
                    records.append(record)
    return records


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.0f}%"


def _num(value: float, digits: int = 2) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _clean_match(records: list[Record]) -> dict[tuple, Record]:
    return {(r["fault"], r["arch"], r["task"], r["seed"]): r for r in records if r["truth"] is None}


def _final_val_acc(record: Record) -> float:
    return _metric(record, len(record["epoch_metrics"]) - 1, "val_acc") if record["epoch_metrics"] else math.nan


def harm(record: Record, clean: dict[tuple, Record]) -> float:
    """Final validation accuracy of the matched clean run minus this run's (NaN counts as accuracy 0)."""
    matched = clean.get(("clean_small" if record["fault"] == "noisy_labels" else "clean", *_where(record)))
    if matched is None:
        return math.nan
    mine = _final_val_acc(record)
    return _final_val_acc(matched) - (mine if math.isfinite(mine) else 0.0)


def _where(record: Record) -> tuple:
    return (record["arch"], record["task"], record["seed"])


LEARNED_VAL_ACC = 0.8


def learned_cells(records: list[Record]) -> set[tuple]:
    """(clean fault, arch, task, seed) of the clean runs whose final validation accuracy reached
    :data:`LEARNED_VAL_ACC`: the base recipe trains there, so a fault's truth is not muddled by a failing base."""
    return {(r["fault"], *_where(r)) for r in records if r["truth"] is None and _final_val_acc(r) >= LEARNED_VAL_ACC}


def in_learned_cell(record: Record, cells: set[tuple]) -> bool:
    small = record["fault"] in ("noisy_labels", "clean_small")
    return ("clean_small" if small else "clean", *_where(record)) in cells


def render(records: list[Record], overhead_note: str = "") -> str:
    """The markdown report of the zoo (every number computed here from ``records``)."""
    alarms = all_alarms(records)
    held = [r for r in records if r["arch"] in HELD_OUT_ARCHS and r["seed"] not in TUNING_SEEDS]
    cells = learned_cells(records)
    held_learned = [r for r in held if in_learned_cell(r, cells)]
    failing = sorted({(r["fault"], *_where(r)) for r in held if r["truth"] is None} - cells)
    tuning = [r for r in records if r["arch"] in TUNING_ARCHS and r["seed"] in TUNING_SEEDS]
    flat = [r for r in records if r["task"] in ("blobs", "circles") and r["seed"] not in TUNING_SEEDS]
    lines: list[str] = ["# The fault zoo: DynamicsDiagnosis beside its baselines, on the same runs", ""]
    lines += [
        "Generated by `python benchmarks/diagnosis_baselines.py <records> --table <this file>` from the JSON lines "
        "that `benchmarks/diagnosis_zoo.py` writes; detectors and thresholds are described in the docstring of "
        "`benchmarks/diagnosis_baselines.py`, faults in `benchmarks/diagnosis_zoo.py`.",
        "",
        _census(records),
        "",
        "Columns: **recall** = faulty runs with any alarm; **named** = the injected kind among the alarms; **top-1** = "
        "the first alarm is the injected kind; **clean flagged** = clean runs with any alarm over the whole budget; "
        "**alarms/clean** = distinct alarm kinds per clean run; **t** = median first alarm as a fraction of the budget "
        "(detected runs; the rules run at epoch ends, so the earliest possible is 1/6 of a 6-epoch budget, 1/30 of the "
        "label-noise runs' 30).",
        "",
        "## Held-out architectures (bncnn, resnet, vit) at held-out seeds",
        "",
        _detector_table(held, alarms),
        "",
        f"### Only where the clean run learned (final validation accuracy >= {LEARNED_VAL_ACC})",
        "",
        f"{len(failing)} held-out clean runs did not reach it (their base recipe does not train in the budget, so "
        "an alarm there may be right and the faults beside them are muddled): "
        + (", ".join(f"{a}/{t}/{s}" + (" (small)" if f == "clean_small" else "") for f, a, t, s in failing) or "none")
        + ".",
        "",
        _detector_table(held_learned, alarms),
        "",
        "### By architecture held out",
        "",
        _by_table(held, alarms, "arch"),
        "",
        "### By task (held-out architectures)",
        "",
        _by_table(held, alarms, "task"),
        "",
        "### Per kind (held-out architectures)",
        "",
        _per_kind_table(held, alarms, _clean_match(records)),
        "",
        "### By severity (held-out architectures)",
        "",
        _severity_table(held, alarms),
        "",
        "## Tuning architectures (mlp, cnn) at the tuning seeds (100, 101), every task (blobs and circles: MLP only)",
        "",
        _detector_table(tuning, alarms),
        "",
        "## MLP on the 2-D tasks (blobs, circles) at held-out seeds",
        "",
        _detector_table(flat, alarms),
        "",
        "## What the paper's dynamics keys add",
        "",
        _dynamics_note(held, alarms),
        "",
        "## Goals of issue 27 (held-out architectures)",
        "",
        _goals(held, held_learned, alarms, overhead_note),
        "",
        "## Faults and severities",
        "",
        "| fault | kind | mild | strong |",
        "|---|---|---|---|",
    ]
    from benchmarks.diagnosis_zoo import FAULTS

    for fault, (mild, strong) in SEVERITY_TEXT.items():
        lines.append(f"| `{fault}` | `{FAULTS[fault]}` | {mild} | {strong} |")
    return "\n".join(lines) + "\n"


def _census(records: list[Record]) -> str:
    parts = []
    for arch in sorted({r["arch"] for r in records}):
        mine = [r for r in records if r["arch"] == arch]
        seeds = sorted({r["seed"] for r in mine})
        tasks = sorted({r["task"] for r in mine})
        parts.append(f"{arch}: {len(mine)} runs, seeds {seeds}, tasks {tasks}")
    return "Runs: " + "; ".join(parts) + "."


def _detector_table(records: list[Record], alarms: dict[str, dict[int, list[Alarm]]]) -> str:
    rows = [
        "| detector | faulty runs | recall | named | top-1 | clean runs | clean flagged | alarms/clean | t |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in (*DETECTORS, "loss_rules"):
        s = score(records, alarms[name])
        rows.append(
            f"| {name} | {s['n_faulty']} | {_pct(s['recall'])} | {_pct(s['named'])} | {_pct(s['top1'])} | "
            f"{s['n_clean']} | {_pct(s['clean_flagged'])} | {_num(s['alarms_per_clean'])} | {_num(s['t_median'])} |"
        )
    return "\n".join(rows)


def _by_table(records: list[Record], alarms: dict[str, dict[int, list[Alarm]]], field: str = "arch") -> str:
    """Recall, top-1 and clean runs flagged of every detector, one column per value of ``field``."""
    archs = sorted({r[field] for r in records})
    head = "| detector | " + " | ".join(f"{a}: recall / top-1 / clean flagged" for a in archs) + " |"
    rows = [head, "|---|" + "---|" * len(archs)]
    for name in DETECTORS:
        cells = []
        for arch in archs:
            s = score([r for r in records if r[field] == arch], alarms[name])
            cells.append(f"{_pct(s['recall'])} / {_pct(s['top1'])} / {_pct(s['clean_flagged'])}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _per_kind_table(
    records: list[Record], alarms: dict[str, dict[int, list[Alarm]]], clean: dict[tuple, Record]
) -> str:
    rows = [
        "| kind | runs | harm (val acc lost, median) | ours recall / named / top-1 | ours t | loss rules t | "
        "ours earlier | AUTOTRAINER loss rules t | autotrainer top-1 | sagemaker top-1 | clf top-1 | clf+dyn top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in FINDING_KINDS:
        mine = [r for r in records if r["truth"] == kind]
        if not mine:
            continue
        s = score(mine, alarms["ours"])
        ours_t = [first_time(r, alarms["ours"]) for r in mine]
        loss_t = [first_time(r, alarms["loss_rules"]) for r in mine]
        earlier = sum(a < b for a, b in zip(ours_t, loss_t, strict=True))
        cells = [
            f"`{kind}`",
            str(len(mine)),
            _num(_median([h for h in (harm(r, clean) for r in mine) if math.isfinite(h)])),
            f"{_pct(s['recall'])} / {_pct(s['named'])} / {_pct(s['top1'])}",
            _time(ours_t),
            _time(loss_t),
            f"{earlier}/{len(mine)}",
            _time([first_time(r, alarms["autotrainer_loss"]) for r in mine]),
        ]
        for name in ("autotrainer", "sagemaker", "clf_loss_scale", "clf_loss_scale_dyn"):
            cells.append(_pct(score(mine, alarms[name])["top1"]))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _time(times: Sequence[float]) -> str:
    """The median of first-alarm times ("never" when most runs had none)."""
    median = _median(times)
    return "never" if median == math.inf else _num(median)


def _severity_table(records: list[Record], alarms: dict[str, dict[int, list[Alarm]]]) -> str:
    rows = ["| severity | runs | " + " | ".join(f"{d}: recall / top-1" for d in DETECTORS) + " |"]
    rows.append("|---|---|" + "---|" * len(DETECTORS))
    for severity in ("mild", "strong"):
        mine = [r for r in records if r["severity"] == severity]
        cells = []
        for name in DETECTORS:
            s = score(mine, alarms[name])
            cells.append(f"{_pct(s['recall'])} / {_pct(s['top1'])}")
        rows.append(f"| {severity} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _dynamics_note(records: list[Record], alarms: dict[str, dict[int, list[Alarm]]]) -> str:
    base, dyn = score(records, alarms["clf_loss_scale"]), score(records, alarms["clf_loss_scale_dyn"])

    def right(name: str, record: Record) -> bool:
        found = alarms[name].get(id(record), [])
        return bool(found) and found[0][0] == record["truth"]

    faulty = [r for r in records if r["truth"] is not None]
    only_dyn = sum(right("clf_loss_scale_dyn", r) and not right("clf_loss_scale", r) for r in faulty)
    only_base = sum(right("clf_loss_scale", r) and not right("clf_loss_scale_dyn", r) for r in faulty)
    return (
        f"Same classifier, same runs, leave-one-architecture-out: loss + accuracy + activation scale gives top-1 "
        f"{_pct(base['top1'])} (recall {_pct(base['recall'])}, clean flagged {_pct(base['clean_flagged'])}); adding "
        f"the paper's dynamics keys ({', '.join(k.split('/')[1] for k in DYNAMICS_KEYS)}) gives top-1 "
        f"{_pct(dyn['top1'])} (recall {_pct(dyn['recall'])}, clean flagged {_pct(dyn['clean_flagged'])}): a change of "
        f"{100 * (dyn['top1'] - base['top1']):+.0f} points of top-1. The rule-based diagnosis (which reads none of "
        f"them) gives top-1 {_pct(score(records, alarms['ours'])['top1'])}. Discordant faulty runs: {only_dyn} named "
        f"right only with the dynamics keys, {only_base} only without (McNemar's test reads these two counts)."
    )


def _earlier_kinds(
    records: list[Record], alarms: dict[str, dict[int, list[Alarm]]], against: str = "loss_rules"
) -> tuple[int, int]:
    """Kinds whose median first alarm of ours is before ``against``'s (never = after the budget), of all kinds."""
    kinds = [k for k in FINDING_KINDS if any(r["truth"] == k for r in records)]
    earlier = 0
    for kind in kinds:
        mine = [r for r in records if r["truth"] == kind]
        ours_t = _median([first_time(r, alarms["ours"]) for r in mine])
        if ours_t < _median([first_time(r, alarms[against]) for r in mine]):
            earlier += 1
    return earlier, len(kinds)


def _goals(
    everything: list[Record], learned: list[Record], alarms: dict[str, dict[int, list[Alarm]]], overhead_note: str
) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = ["| goal | all held-out runs | where the clean run learned |", "|---|---|---|"]
    measured: dict[str, list[str]] = {}
    for records in (everything, learned):
        s = score(records, alarms["ours"])
        earlier, kinds = _earlier_kinds(records, alarms)
        earlier_at, _ = _earlier_kinds(records, alarms, "autotrainer_loss")
        for goal, text in (
            ("recall >= 95%", f"{_pct(s['recall'])}: {verdict(s['recall'] >= 0.95)}"),
            (
                "<= 5% false alarms per clean run",
                f"{_pct(s['clean_flagged'])} of clean runs flagged ({_num(s['alarms_per_clean'])} alarms per clean "
                f"run): {verdict(s['clean_flagged'] <= 0.05)}",
            ),
            (
                "median detection within 5% of the budget",
                f"{_pct(s['t_median'])}: {verdict(s['t_median'] <= 0.05)}",
            ),
            (
                "earlier than the loss rules for >= half the kinds",
                f"{earlier}/{kinds} kinds (all loss rules, SageMaker's Overfit and LossNotDecreasing included): "
                f"{verdict(2 * earlier >= kinds)}; {earlier_at}/{kinds} against AUTOTRAINER's loss rules alone",
            ),
            ("root cause top-1 >= 85%", f"{_pct(s['top1'])}: {verdict(s['top1'] >= 0.85)}"),
        ):
            measured.setdefault(goal, []).append(text)
    for goal, texts in measured.items():
        rows.append(f"| {goal} | " + " | ".join(texts) + " |")
    rows.append(f"| overhead <= 1% per step | {overhead_note or 'not measured here'}: **missed** | (same) |")
    return "\n".join(rows)


OVERHEAD_NOTE = (
    "+15% (CNN) and +24% (MLP of tanh layers) per step, paired medians of `benchmarks/layer_stats_overhead.py` "
    "(`benchmarks/results/layer_stats_overhead.md`, CPU, one thread, under a load average of about 15); not re-timed"
)


def write_table(paths: Path | Sequence[Path], out: Path) -> str:
    """Render the records in ``paths`` and write the markdown to ``out``; the markdown."""
    records = load([paths] if isinstance(paths, Path) else paths)
    text = render(records, OVERHEAD_NOTE)
    out.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--table", type=Path, default=Path("benchmarks/results/diagnosis_zoo.md"))
    args = parser.parse_args()
    print(write_table(args.records, args.table))


if __name__ == "__main__":
    main()
