from pathlib import Path

import pytest

from lightning_dynamics.report import epoch_metrics, read_metrics
from tests.report.test_analysis import _csv_like


def test_epoch_metrics_merges_rows_per_epoch(tmp_path: Path) -> None:
    _csv_like().to_csv(tmp_path / "metrics.csv", index=False)
    per_epoch = epoch_metrics(read_metrics(tmp_path))
    assert list(per_epoch.index) == list(range(9))
    assert per_epoch.loc[4, "val_acc"] == 90 and per_epoch.loc[4, "dynamics/stability_volatility"] == 0.08
    with pytest.raises(FileNotFoundError, match=r"metrics\.csv"):
        read_metrics(tmp_path / "missing")


def test_the_csv_plot_path_is_gone() -> None:
    """One dashboard, drawn from the history: the CSV-only figure of earlier versions is not offered."""
    from lightning_dynamics.report import plots

    assert not hasattr(plots, "plot_dynamics") and not hasattr(plots, "PANELS")
