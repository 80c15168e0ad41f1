"""The paper's experiment command in its tiniest setting, and the statistics it reports."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.paper.findings import permutation_p, separation_p, stratified_permutation_p, window_trajectory
from benchmarks.paper.run import main, paper_monitor
from benchmarks.paper.stopping import _pareto, act_std_stop_epoch


@pytest.mark.slow
@pytest.mark.integration
def test_tiny_preset_end_to_end(tmp_path: Path) -> None:
    """The tiny preset end to end: package history files the CLI reads, the 2x2 contrasts, the stopping study."""
    from benchmarks.paper.run import history_file
    from lightning_dynamics.capture import load_history
    from lightning_dynamics.report.cli import main as cli

    main(["--scale", "tiny", "--out", str(tmp_path), "--surrogates", "4", "--permutations", "50"])
    tasks = ("digits", "digits16", "pairs8", "pairs")
    names = [f"cnn_{task}_seed{seed}" for task in tasks for seed in (0, 1)]
    for name in names:
        run_dir = tmp_path / "runs" / name
        record = json.loads((run_dir / "metrics.json").read_text())
        history = load_history(history_file(run_dir, "dynamics"))
        assert history["values"].shape == (len(record["layer_names"]), 22)
        assert len(record["epoch_metrics"]["val_acc"]) == 22
        assert not (run_dir / "history.pt").exists()  # no private format any more
    cli(["report", str(tmp_path / "runs" / names[0]), "-o", str(tmp_path / "report")])
    assert any((tmp_path / "report").glob("*.png"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["runs"]) == set(names)
    run = summary["runs"][names[0]]
    assert set(run["measures"]) == {"integration", "integration_alpha", "metastability", "phase_integration"}
    assert set(run["endpoints"]) == {"alpha_phase", "alpha", "integration"}
    assert np.isfinite(run["measures"]["integration_alpha"]["shuffle_z"])
    contrasts = summary["finding1"]["contrasts"]
    assert len(contrasts) == 5 and all("cnn" in c["alpha_phase"]["archs"] for c in contrasts.values())
    for rule in summary["finding2"].values():  # a Spearman test is not reported below 3 runs that fired
        if rule["fired"] < 3 and "spearman_p" in rule:
            assert rule["spearman_p"] is None or math.isnan(rule["spearman_p"])
    rules = {"fixed_epoch", "val_loss", "dynamics", "dynamics_step", "act_std", "eb", "relative_change"}
    assert rules <= set(summary["early_stopping"]["points"])
    text = (tmp_path / "summary.md").read_text()
    for heading in ("## Finding 1", "### classes at 8x8", "## Finding 2", "## Finding 3", "## Early stopping"):
        assert heading in text
    for figure in ("plane.png", "leads.png", "stopping/pareto.png"):
        assert (tmp_path / figure).stat().st_size > 5000


def test_permutation_tests_detect_a_shift_and_not_noise() -> None:
    assert permutation_p([1.0, 1.1, 0.9, 1.2], [2.0, 2.1, 1.9, 2.2]) == pytest.approx(2 / 70)
    assert permutation_p([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 3.9]) > 0.5
    rng = np.random.default_rng(0)
    shifted = [([0.0, 0.1, 0.2], [1.0, 1.1, 1.2]), ([5.0, 5.1, 5.2], [6.0, 6.1, 6.2])]
    assert stratified_permutation_p(shifted, 2000, rng) < 0.02
    same = [([0.0, 1.0, 2.0], [0.5, 1.5, 1.0]), ([5.0, 6.0, 7.0], [6.5, 5.5, 6.0])]
    assert stratified_permutation_p(same, 2000, rng) > 0.3


def test_separation_of_clusters() -> None:
    rng = np.random.default_rng(1)
    clusters = np.concatenate([rng.normal(0, 0.1, (4, 2)), rng.normal(3, 0.1, (4, 2))])
    labels = ["a"] * 4 + ["b"] * 4
    assert separation_p(clusters, labels, 500, rng)[1] < 0.05
    assert separation_p(rng.normal(0, 1, (8, 2)), labels, 500, rng)[1] > 0.05


def test_pareto_front_and_act_std_rule() -> None:
    points = [("r", "a", 0.5, 1.0, 0), ("r", "b", 0.6, 0.5, 0), ("r", "c", 0.7, 0.8, 0), ("r", "d", 1.0, 0.0, 0)]
    assert [p[1] for p in _pareto(points)] == ["a", "b", "d"]
    assert act_std_stop_epoch([[1.0, 1.5, 2.0, 2.5]], tol=0.01) is None
    assert act_std_stop_epoch([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]], tol=0.0, patience=2) == 2


def test_window_trajectory_has_one_point_per_window() -> None:
    x = torch.randn(6, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64).cumsum(-1)
    integ, meta = window_trajectory(x, window=16)
    assert len(integ) == len(meta) == 15 and all(0 <= v <= 1 for v in integ)


def test_paper_monitor_pins_one_point_per_epoch_and_no_null_bands() -> None:
    """The paper's design (T = epochs) holds whatever the package's defaults are; an explicit cadence is kept."""
    config = paper_monitor().config
    assert config.points_per_epoch == 1 and config.null_surrogates is None
    assert paper_monitor(every_n_steps=5).config.every_n_steps == 5
