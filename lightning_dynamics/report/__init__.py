"""Reading a run's logs and drawing its figures (matplotlib; needs the ``examples`` extra for plots)."""

from lightning_dynamics.report.logs import epoch_metrics, read_metrics

__all__ = ["epoch_metrics", "read_metrics"]
