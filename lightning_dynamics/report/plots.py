"""Figures of a run: the dynamics keys beside validation accuracy, epoch by epoch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

PANELS = (
    ("dynamics/integration", "integration"),
    ("dynamics/metastability", "metastability"),
    ("dynamics/stability_index", "stability index S"),
    ("dynamics/stability_volatility", "volatility V"),
)


def plot_dynamics(per_epoch: pd.DataFrame, accuracy_key: str = "val_acc", path: str | Path | None = None) -> Figure:
    """Plot each dynamics key against the epoch, with ``accuracy_key`` on a twin axis where logged.

    Args:
        per_epoch: output of :func:`lightning_dynamics.report.epoch_metrics`.
        accuracy_key: column drawn in grey on every panel for reference (skipped if absent).
        path: if given, the figure is saved there (PNG, PDF, ... by suffix).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 1, figsize=(7, 2.2 * len(PANELS)), sharex=True)
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        if key in per_epoch:
            ax.plot(per_epoch.index, per_epoch[key], marker=".", color="tab:blue")
        else:
            ax.text(0.5, 0.5, f"{key} not logged", transform=ax.transAxes, ha="center")
        ax.set_ylabel(label)
        if accuracy_key in per_epoch:
            twin = ax.twinx()
            twin.plot(per_epoch.index, per_epoch[accuracy_key], color="0.6", lw=1)
            twin.set_ylabel(accuracy_key, color="0.5")
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
