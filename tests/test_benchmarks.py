"""The overhead benchmark's own machinery works against the current monitor (it broke once, unnoticed, when the
monitor became an adapter of DynamicsTracker): a tiny CNN stands in for the real models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

overhead = pytest.importorskip("benchmarks.overhead")


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=4), nn.Flatten(), nn.Linear(256, 10)
    )


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(overhead.MODELS, "tiny", tiny_cnn)
    monkeypatch.setitem(overhead.BATCH, "tiny", 8)
    return "tiny"


def test_paired_measurement_toggles_the_hooks_in_half_the_steps(tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = overhead.SummaryAccumulator.add

    def counting(self, index: int, activation: torch.Tensor) -> None:
        calls.append(index)
        original(self, index, activation)

    monkeypatch.setattr(overhead.SummaryAccumulator, "add", counting)
    row = overhead.measure_paired(tiny, "default", 12, "cpu")
    assert row["layers"] == 3 and row["pairs"] == 4  # 12 steps: 6 pairs, the first 2 dropped
    assert len(calls) == 3 * 6  # hooks recorded in the 6 "on" steps of 12 (A-B-B-A), for the 3 layers
    assert row["off_ms"] > 0 and row["on_ms"] > 0 and row["q1"] <= row["q3"]


def test_interleaved_measurement_reports_every_config(tiny: str) -> None:
    rows = overhead.measure_model(tiny, ["default", "all_leaves"], rounds=1, steps=4, accelerator="cpu")
    assert [r["config"] for r in rows] == ["default", "all_leaves"]
    assert all(r["steps"] > 0 for r in rows)
    # 4 points fit the history's first 64 columns: 3 layers x 64 float32, plus float64 sums, counts and shift per
    # layer, and the pending points' buffer (8 points x 3 layers x sum and count, float64)
    history, open_sums, pending = 3 * 64 * 4, 3 * 8 + 3 * 8 + 3 * 8, 8 * 3 * 2 * 8
    assert rows[0]["layers"] == 3 and rows[0]["monitor_kib"] * 1024 == history + open_sums + pending
