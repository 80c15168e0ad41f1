"""DynamicsDiagnosis in a Lightning Trainer: each kind is named on its smallest injected digits run, a healthy run
has no finding, stop_on ends a hopeless run with its reason, the findings resume exactly, and two DDP processes agree
on the findings and the stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.diagnosis import CONDITIONS, DiagnosisModule, cnn, mlp, run_condition, sgd
from benchmarks.kit import quiet_trainer
from benchmarks.kit.data import _digits_split
from lightning_dynamics import DynamicsDiagnosis, DynamicsMonitor
from lightning_dynamics.decisions.diagnosis import FINDING_KINDS, load_findings

# Conditions run for 3 epochs (the slow-progress rules need `patience_epochs` = 3); label noise needs more.
FAST = [c for c in CONDITIONS if c != "noisy_labels"]


def test_every_kind_has_an_injected_condition() -> None:
    assert {kind for kind in CONDITIONS.values() if kind} == set(FINDING_KINDS)


@pytest.mark.parametrize("condition", FAST)
def test_each_condition_is_named_and_the_healthy_run_is_quiet(condition: str) -> None:
    findings = run_condition(condition, "mlp", seed=100, epochs=3).findings
    kinds = [f.kind for f in findings]
    expected = CONDITIONS[condition]
    if expected is None:
        assert kinds == [], [str(f) for f in findings]
    else:
        assert expected in kinds, [str(f) for f in findings]
        finding = findings[kinds.index(expected)]
        assert finding.evidence and finding.action and finding.epoch <= 2


@pytest.mark.slow
def test_memorised_label_noise_is_named() -> None:
    findings = run_condition("noisy_labels", "mlp", seed=100).findings
    assert "label_noise" in [f.kind for f in findings], [str(f) for f in findings]


@pytest.mark.slow
@pytest.mark.parametrize("condition", ["healthy", "negative_bias", "tanh_large_init", "deep_sigmoid"])
def test_the_cnn_conditions_are_named(condition: str) -> None:
    findings = run_condition(condition, "cnn", seed=100, epochs=3).findings
    expected = CONDITIONS[condition]
    assert ([f.kind for f in findings] == []) if expected is None else expected in [f.kind for f in findings]


def test_stop_on_ends_a_hopeless_run_with_its_reason() -> None:
    diagnosis = run_condition("nan_input", "mlp", seed=100, epochs=6, stop_on=["nonfinite"])
    assert diagnosis.findings[0].kind == "nonfinite"
    assert diagnosis.stopped_epoch == diagnosis.findings[0].epoch < 5
    assert diagnosis.stop_reason.startswith(f"DynamicsDiagnosis stopped training at epoch {diagnosis.stopped_epoch}")
    assert "nonfinite" in diagnosis.stop_reason and "Try:" in diagnosis.stop_reason


def _fit(tmp_path: Path, epochs: int, ckpt: Path | None = None, save: Path | None = None) -> DynamicsDiagnosis:
    """Strong weight decay on a fixed (unshuffled) digits subset: the finding comes at epoch 2 or later."""
    torch.manual_seed(0)
    x, y = _digits_split(0.25, 0)[:2]
    loader = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64, shuffle=False)
    model = DiagnosisModule(mlp(), sgd(0.05, 0.9, weight_decay=0.5))
    monitor = DynamicsMonitor(points_per_epoch=2, null_surrogates=None, save_history=False, verbose=False)
    diagnosis = DynamicsDiagnosis()
    trainer = quiet_trainer(max_epochs=epochs, accelerator="cpu", callbacks=[monitor, diagnosis], deterministic=True)
    if ckpt is not None:
        model = DiagnosisModule(mlp(), sgd(0.05, 0.9, weight_decay=0.5))
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ckpt)
    if save is not None:
        trainer.save_checkpoint(save)
    return diagnosis


def test_findings_resume_exactly(tmp_path: Path) -> None:
    whole = _fit(tmp_path / "whole", epochs=5)
    late = [f for f in whole.findings if f.epoch >= 2]  # found after the checkpoint: the resumed run must find them
    assert "weight_decay_too_strong" in [f.kind for f in late]
    first = _fit(tmp_path / "first", epochs=2, save=tmp_path / "two.ckpt")
    assert repr([f.to_dict() for f in first.findings]) == repr([f.to_dict() for f in whole.findings if f.epoch < 2])
    resumed = _fit(tmp_path / "resumed", epochs=5, ckpt=tmp_path / "two.ckpt")
    assert repr([f.to_dict() for f in resumed.findings]) == repr([f.to_dict() for f in whole.findings])
    assert repr(resumed.diagnoser.history) == repr(whole.diagnoser.history)  # NaN-safe: no validation here


def test_findings_are_logged_as_keys_and_arguments_are_checked(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x, y = _digits_split(0.25, 0)[:2]
    loader = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=64)
    model = DiagnosisModule(nn.Sequential(cnn(), nn.Softmax(-1)), sgd())
    diagnosis = DynamicsDiagnosis()
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", callbacks=[DynamicsMonitor(verbose=False), diagnosis])
    trainer.fit(model, train_dataloaders=loader)
    assert [f.kind for f in diagnosis.findings] == ["wrong_output"]
    assert float(trainer.callback_metrics["diagnosis/wrong_output"]) == 1.0
    assert float(trainer.callback_metrics["diagnosis/dying_relu"]) == 0.0
    assert float(trainer.callback_metrics["dynamics/stats/dead_frac_max"]) >= 0.0
    with pytest.raises(ValueError, match=r"`ignore` must name kinds"):
        DynamicsDiagnosis(ignore=["everything"])
    with pytest.raises(ValueError, match="`prefix`"):
        DynamicsDiagnosis(prefix="a/b")


def _ddp(tmp_path: Path, scenario: str) -> tuple[dict, dict, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_"))
    }
    script = Path(__file__).with_name("diagnosis_ddp_script.py")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), scenario], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"{scenario}_rank{r}.pt", weights_only=True) for r in (0, 1)]
    return ranks[0], ranks[1], result.stdout + result.stderr


@pytest.mark.slow
def test_ddp_ranks_agree_on_the_findings_and_the_stop(tmp_path: Path) -> None:
    """Two CPU processes (gloo). NaN inputs on rank 1 only: both ranks name `nonfinite` at the same epoch and step
    (the epoch's numbers are summed first), stop there, and the finding is said once; rank 0 alone writes the file."""
    rank0, rank1, output = _ddp(tmp_path, "nan")
    assert rank0["findings"] and repr(rank0["findings"]) == repr(rank1["findings"])  # NaN-safe
    assert rank0["findings"][0]["kind"] == "nonfinite" and rank0["findings"][0]["epoch"] == 1
    assert rank0["stopped_epoch"] == rank1["stopped_epoch"] == 1
    assert rank0["stop_reason"] == rank1["stop_reason"]
    assert rank0["current_epoch"] == rank1["current_epoch"] and rank0["global_step"] == rank1["global_step"]
    assert output.count("DynamicsDiagnosis: nonfinite") == 1
    assert rank0["findings_path"] is not None and rank1["findings_path"] is None
    saved = load_findings(rank0["findings_path"])
    assert repr([f.to_dict() for f in saved.findings]) == repr(rank0["findings"])
    assert saved.stop_reason == rank0["stop_reason"]


@pytest.mark.slow
def test_ddp_a_stop_seen_by_one_rank_stops_both(tmp_path: Path) -> None:
    rank0, rank1, _ = _ddp(tmp_path, "scripted")
    assert rank0["stopped_epoch"] == rank1["stopped_epoch"] == 2
    assert rank0["global_step"] == rank1["global_step"] and rank0["current_epoch"] == rank1["current_epoch"]
    assert rank1["stop_reason"].endswith("scripted stop on rank 1")
    assert rank0["stop_reason"].endswith("a finding of another process (reduce_boolean_decision)")
