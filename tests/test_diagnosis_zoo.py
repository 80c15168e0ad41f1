"""The fault zoo and its baselines (benchmarks/diagnosis_zoo.py, benchmarks/diagnosis_baselines.py).

Unit tier: each post-hoc detector on hand-made traces (no training). Slow tier: a smoke zoo of real runs (one seed,
clean + two faults, two architectures, two epochs) through the CLI's own path, read back into the generated table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

zoo = pytest.importorskip("benchmarks.diagnosis_zoo")
baselines = pytest.importorskip("benchmarks.diagnosis_baselines")


def trace(epochs: int = 6, steps: int = 10, **epoch_keys: list[float]) -> dict[str, Any]:
    """A healthy-looking record: falling loss, rising accuracy; ``epoch_keys`` overrides per-epoch series."""
    metrics = []
    for epoch in range(epochs):
        row = {
            "train_loss": 2.0 / (epoch + 1),
            "val_loss": 2.0 / (epoch + 1),
            "train_acc": 0.5 + 0.08 * epoch,
            "val_acc": 0.5 + 0.08 * epoch,
            "dynamics/stats/grad_norm_ratio_first_last": 1.0,
            "dynamics/stats/dead_frac_max": 0.1,
            "dynamics/stats/update_ratio_max": 0.01,
            "dynamics/stats/update_ratio_min": 1e-3,
        }
        row.update({key: values[epoch] for key, values in epoch_keys.items()})
        metrics.append(row)
    n = epochs * steps
    return {
        "fault": "clean",
        "severity": "none",
        "truth": None,
        "arch": "mlp",
        "task": "digits",
        "seed": 0,
        "epochs": epochs,
        "steps_per_epoch": [steps] * epochs,
        "step_loss": [2.0 * 0.97**i for i in range(n)],
        "step_grad_min": [1e-3] * n,
        "step_grad_finite": [True] * n,
        "epoch_metrics": metrics,
        "findings": [],
    }


def test_healthy_trace_raises_no_rule_alarm() -> None:
    record = trace()
    assert baselines.autotrainer(record) == []
    assert baselines.sagemaker(record) == []
    assert baselines.lightning_nan(record) == []


def test_sagemaker_rules_read_their_documented_thresholds() -> None:
    record = trace()
    record["step_grad_min"][13] = 5e-8  # below VanishingGradient's 1e-7
    record["step_loss"][20] = math.nan  # ExplodingTensor, at the step it happens
    assert baselines.sagemaker(record) == [("vanishing_gradients", 14), ("nonfinite", 21)]
    assert baselines.sagemaker(trace(**{"dynamics/stats/update_ratio_min": [0.0] * 6})) == [("lr_too_low", 10)]
    overfit = trace(val_loss=[2.0, 1.2, 0.8, 0.6, 0.5, 0.45])  # val 20% above train from the second epoch
    assert baselines.sagemaker(overfit) == [("label_noise", 20)]
    flat = trace()
    flat["step_loss"] = [1.0] * 60
    assert baselines.sagemaker(flat) == [("loss_not_decreasing", 20)]


def test_autotrainer_rules_name_oscillation_and_slow_convergence() -> None:
    oscillating = trace(train_acc=[0.5, 0.7, 0.6, 0.8, 0.7, 0.9])
    assert baselines.autotrainer(oscillating) == [("lr_too_high", 30)]
    slow = trace(train_acc=[0.1, 0.1, 0.105, 0.11, 0.11, 0.11])
    assert baselines.autotrainer(slow) == [("lr_too_low", 30)]


def test_lightning_nan_check_fires_at_the_first_nonfinite_validation_loss() -> None:
    record = trace(val_loss=[1.0, 0.9, math.nan, math.nan, math.nan, math.nan])
    assert baselines.lightning_nan(record) == [("nonfinite", 30)]


def test_score_counts_recall_top1_and_false_alarms() -> None:
    clean, faulty, missed = trace(), trace(), trace()
    for record, fault in ((faulty, "nan_input"), (missed, "lr_low")):
        record.update(fault=fault, severity="strong", truth=zoo.FAULTS[fault])
    alarms = {id(clean): [("dying_relu", 10)], id(faulty): [("nonfinite", 30)], id(missed): []}
    s = baselines.score([clean, faulty, missed], alarms)
    assert (s["recall"], s["top1"], s["clean_flagged"], s["t_median"]) == (0.5, 0.5, 1.0, 0.5)


def test_every_fault_has_two_severities_and_a_known_kind() -> None:
    from lightning_dynamics.decisions.diagnosis import FINDING_KINDS

    injected = {kind for kind in zoo.FAULTS.values() if kind is not None}
    assert injected == set(FINDING_KINDS)  # every kind of the diagnosis is injected
    assert set(zoo.SEVERITY_TEXT) == {f for f, kind in zoo.FAULTS.items() if kind is not None}


def test_fault_surgery_changes_what_it_says() -> None:
    data = zoo.task_data("pairs")
    assert data.num_classes == 2 and set(data.train_y.tolist()) == {0, 1}
    model = zoo.swap_activations(zoo.build("bncnn", data), nn.Tanh)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    biased = zoo.set_hidden_bias(zoo.build("mlp", data), -2.0)
    linears = [m for m in biased.modules() if isinstance(m, nn.Linear)]
    assert all(torch.all(m.bias == -2.0) for m in linears[:-1]) and not torch.all(linears[-1].bias == -2.0)
    blobs = zoo.task_data("blobs")
    assert blobs.train_x.shape[1:] == (2,) and blobs.num_classes == 4
    with pytest.raises(ValueError, match="image task"):
        zoo.build("cnn", blobs)


@pytest.mark.slow
@pytest.mark.integration
def test_smoke_zoo_writes_records_and_a_table_with_every_detector(tmp_path: Path) -> None:
    out = tmp_path / "zoo.jsonl"
    for case in zoo.cases(["mlp", "cnn"], ["pairs"], [7], ["clean", "nan_input", "raw_inputs"], ["strong"]):
        record = zoo.run_case(*case, epochs=2)
        with out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
    records = baselines.load([out])
    assert len(records) == 6 and all(len(r["epoch_metrics"]) == 2 for r in records)
    by_fault = {(r["fault"], r["arch"]): r for r in records}
    for arch in ("mlp", "cnn"):
        assert by_fault["clean", arch]["findings"] == []
        assert by_fault["nan_input", arch]["findings"][0]["kind"] == "nonfinite"
        assert by_fault["raw_inputs", arch]["findings"][0]["kind"] == "data_bug"
        assert baselines.lightning_nan(by_fault["nan_input", arch])[0][0] == "nonfinite"
        assert "dynamics/stats/act_scale_max" in by_fault["clean", arch]["epoch_metrics"][-1]
    table = baselines.write_table(out, tmp_path / "zoo.md")
    assert (tmp_path / "zoo.md").read_text() == table
    for detector in baselines.DETECTORS:
        assert f"| {detector} |" in table
    assert "## Goals of issue 27" in table


def test_load_reads_plain_and_gzipped_records_each_run_once(tmp_path: Path) -> None:
    import gzip

    first, second = trace(), trace()
    second["seed"] = 1
    (tmp_path / "a.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress((json.dumps(first) + "\n").encode()))
    records = baselines.load([tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"])
    assert [r["seed"] for r in records] == [0, 1]
