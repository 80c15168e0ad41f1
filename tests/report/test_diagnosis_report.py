"""What the diagnosis found, in the report: the findings file beside the history, the console table, the HTML page and
the dashboard's findings panel and per-layer heatmaps (none of them for a run that holds nothing to show)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks.diagnosis import DiagnosisModule, loaders, setting
from benchmarks.kit import quiet_trainer
from lightning_dynamics import DynamicsDiagnosis, DynamicsMonitor
from lightning_dynamics.decisions.diagnosis import Finding, findings_path, load_findings, save_findings
from lightning_dynamics.report import load_run
from lightning_dynamics.report.cli import main
from lightning_dynamics.report.diagnosis_panel import layer_stat_panels
from lightning_dynamics.report.plots import plot_dashboard

pytest.importorskip("matplotlib")


def _fit(tmp_path: Path, condition: str, epochs: int = 2, **diagnosis) -> tuple[DynamicsDiagnosis, Path]:
    """One injected digits run (benchmarks/diagnosis.py) with a saved history; the diagnosis and the run folder."""
    torch.set_num_threads(1)
    torch.manual_seed(100)
    run = setting(condition, "mlp", 100)
    train, val = loaders(run, 100)
    monitor = DynamicsMonitor(
        points_per_epoch=4, null_surrogates=None, compute_phase_integration=False, verbose=False, log_dashboard=False
    )
    callback = DynamicsDiagnosis(**diagnosis)
    trainer = quiet_trainer(
        max_epochs=epochs, accelerator="cpu", callbacks=[monitor, callback], default_root_dir=tmp_path
    )
    trainer.fit(DiagnosisModule(run.model, run.optimizer), train_dataloaders=train, val_dataloaders=val)
    assert monitor.history_path is not None and callback.findings_path == findings_path(monitor.history_path)
    return callback, monitor.history_path.parent


def _panel_titles(run) -> list[str]:
    return [ax.get_title() for ax in plot_dashboard(run).axes]


@pytest.mark.integration
def test_an_injected_fault_is_in_the_report_table_the_page_and_the_dashboard(tmp_path: Path, capsys) -> None:
    diagnosis, folder = _fit(tmp_path, "negative_bias")
    assert "dying_relu" in [f.kind for f in diagnosis.findings]
    record = load_findings(folder / "dynamics_diagnosis.json")
    assert [f.to_dict() for f in record.findings] == [f.to_dict() for f in diagnosis.findings]

    assert main(["report", str(folder)]) == 0
    printed = capsys.readouterr().out
    dying = next(f for f in diagnosis.findings if f.kind == "dying_relu")
    assert f"diagnosis: {len(diagnosis.findings)} finding" in printed
    assert f"dying_relu in {dying.layers[0]}" in printed
    assert f"(first seen epoch {dying.epoch}, step {dying.step})" in printed and dying.action in printed
    page = (folder / "dynamics_dashboard.html").read_text()
    assert "<h2>Diagnosis</h2>" in page and "<td>dying_relu</td>" in page and dying.layers[0] in page

    run = load_run(folder)
    assert run.diagnosis is not None and layer_stat_panels(run) == ["dead_frac", "grad_norm"]  # no bounded activation
    titles = _panel_titles(run)
    assert any(t.startswith("diagnosis: ") and "dying_relu" in t for t in titles)
    assert any(t.startswith("dead fraction") for t in titles) and any(t.startswith("gradient norm") for t in titles)
    dead = run.layer_stat("dead_frac")
    assert dead is not None and dying.layers[0] in dead[0]


@pytest.mark.integration
def test_nan_inputs_stop_the_run_and_the_report_says_so(tmp_path: Path, capsys) -> None:
    diagnosis, folder = _fit(tmp_path, "nan_input", epochs=3, stop_on=["nonfinite"])
    assert diagnosis.findings[0].kind == "nonfinite" and diagnosis.stop_reason is not None
    assert main(["report", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "nonfinite in - (first seen epoch 0" in printed and diagnosis.stop_reason in printed
    page = (folder / "dynamics_dashboard.html").read_text()
    assert "<td>nonfinite</td>" in page and "DynamicsDiagnosis stopped training at epoch 0" in page


@pytest.mark.integration
def test_a_healthy_run_shows_no_finding_and_no_findings_panel(tmp_path: Path, capsys) -> None:
    diagnosis, folder = _fit(tmp_path, "healthy")
    assert diagnosis.findings == []
    assert load_findings(folder / "dynamics_diagnosis.json").findings == []
    assert main(["report", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "diagnosis: no finding" in printed and "Try:" not in printed
    page = (folder / "dynamics_dashboard.html").read_text()
    assert "<h2>Diagnosis</h2>" in page and "no finding" in page and "<th>evidence</th>" not in page
    titles = _panel_titles(load_run(folder))
    assert not any(t.startswith("diagnosis") for t in titles)
    assert any(t.startswith("dead fraction") for t in titles)  # the statistics the diagnosis read are still shown


def test_a_history_without_diagnosis_or_layer_stats_gets_neither(tmp_path: Path, capsys) -> None:
    from tests.report.test_dashboard import _write

    folder = _write(tmp_path).parent
    run = load_run(folder)
    assert run.diagnosis is None and layer_stat_panels(run) == []
    titles = _panel_titles(run)
    assert not any(t.startswith(("diagnosis", "dead fraction", "gradient norm")) for t in titles)
    assert main(["report", str(folder)]) == 0
    assert "diagnosis" not in capsys.readouterr().out
    assert "<h2>Diagnosis</h2>" not in (folder / "dynamics_dashboard.html").read_text()


def test_the_findings_file_round_trips_non_finite_numbers_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    finding = Finding("nonfinite", [], 3, 0, "training loss = nan (not finite)", "lower it", math.nan, math.inf)
    path = save_findings(tmp_path / "dynamics_diagnosis.json", [finding], "stopped", 0, ["not_training"])
    json.loads(path.read_text())  # standard JSON: no NaN token
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    record = load_findings(path)
    assert math.isnan(record.findings[0].value) and record.findings[0].threshold == math.inf
    assert (record.stop_reason, record.stopped_epoch, record.ignored) == ("stopped", 0, ["not_training"])
    path.write_text(json.dumps({"format": 1, "findings": [{"kind": "everything"}]}))
    with pytest.raises(ValueError, match="finding 0 lacks"):
        load_findings(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not a readable findings file"):
        load_findings(path)
    assert findings_path("runs/dynamics_history-v2.pt") == Path("runs/dynamics_diagnosis-v2.json")
