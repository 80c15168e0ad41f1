from pathlib import Path

import pytest

from lightning_dynamics.report import epoch_metrics, read_metrics
from lightning_dynamics.report.plots import plot_dynamics
from tests.report.test_analysis import _csv_like

pytest.importorskip("matplotlib")


def test_epoch_metrics_merges_rows_per_epoch(tmp_path: Path) -> None:
    _csv_like().to_csv(tmp_path / "metrics.csv", index=False)
    per_epoch = epoch_metrics(read_metrics(tmp_path))
    assert list(per_epoch.index) == list(range(9))
    assert per_epoch.loc[4, "val_acc"] == 90 and per_epoch.loc[4, "dynamics/stability_volatility"] == 0.08
    with pytest.raises(FileNotFoundError, match=r"metrics\.csv"):
        read_metrics(tmp_path / "missing")


def test_csv_figure_has_fixed_bounded_axes_and_integer_epochs(tmp_path: Path) -> None:
    _csv_like().to_csv(tmp_path / "metrics.csv", index=False)
    figure = plot_dynamics(epoch_metrics(read_metrics(tmp_path)), path=tmp_path / "dynamics.png")
    assert (tmp_path / "dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    volatility = next(ax for ax in figure.axes if ax.get_ylabel() == "volatility V")
    assert volatility.get_ylim() == (0.0, 0.5)
    figure.canvas.draw()
    ticks = volatility.get_xticks()
    assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)
