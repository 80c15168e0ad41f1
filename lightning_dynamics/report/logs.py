"""Read the metrics a run logged with Lightning's CSVLogger."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def read_metrics(log_dir: str | Path) -> pd.DataFrame:
    """Load ``metrics.csv`` from a CSVLogger directory (or the file itself) as a DataFrame."""
    import pandas as pd

    path = Path(log_dir)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv at {path}; pass a CSVLogger log_dir (e.g. lightning_logs/version_0).")
    return pd.read_csv(path)


def epoch_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch: CSVLogger writes train, validation and callback values on separate rows.

    Returns:
        DataFrame indexed by ``epoch`` with the last non-empty value of each column in that epoch.
    """
    if "epoch" not in metrics.columns:
        raise ValueError(f"the metrics have no 'epoch' column (columns: {list(metrics.columns)}).")
    columns = [c for c in metrics.columns if c not in ("epoch", "step")]
    return metrics.dropna(subset=["epoch"]).groupby("epoch")[columns].last().sort_index()
