from pathlib import Path

import pytest

from lightning_dynamics.report import epoch_metrics, read_metrics
from lightning_dynamics.report.cli import main
from tests.test_analysis import _csv_like

pytest.importorskip("matplotlib")


def test_epoch_metrics_merges_rows_per_epoch(tmp_path: Path) -> None:
    _csv_like().to_csv(tmp_path / "metrics.csv", index=False)
    per_epoch = epoch_metrics(read_metrics(tmp_path))
    assert list(per_epoch.index) == list(range(9))
    assert per_epoch.loc[4, "val_acc"] == 90 and per_epoch.loc[4, "dynamics/stability_volatility"] == 0.08
    with pytest.raises(FileNotFoundError, match=r"metrics\.csv"):
        read_metrics(tmp_path / "missing")


def test_report_command_prints_and_draws(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _csv_like().to_csv(tmp_path / "metrics.csv", index=False)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dynamics/stability_volatility" in out and "figure:" in out
    png = tmp_path / "dynamics.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
