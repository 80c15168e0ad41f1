"""Hooks' side of the data flow: layer selection, on-device summaries and the [L, T] history.

No Lightning import: usable with any torch training loop.
"""

from lightning_dynamics.capture.history import (
    HISTORY_FORMAT_VERSION,
    HistorySaveError,
    SummaryHistory,
    claim_path,
    continuous_time,
    history_segments,
    load_history,
    release_claim,
    save_history,
    validate_point_series,
)
from lightning_dynamics.capture.hooks import ActivationCapture, LayerCaptureWarning
from lightning_dynamics.capture.layer_selection import (
    FewLayersWarning,
    is_compute_layer,
    select_layers,
    spread_evenly,
)
from lightning_dynamics.capture.summaries import (
    SUMMARY_CHOICES,
    SummaryAccumulator,
    floating_tensors,
    summarize,
)

__all__ = [
    "HISTORY_FORMAT_VERSION",
    "SUMMARY_CHOICES",
    "ActivationCapture",
    "FewLayersWarning",
    "HistorySaveError",
    "LayerCaptureWarning",
    "SummaryAccumulator",
    "SummaryHistory",
    "claim_path",
    "continuous_time",
    "floating_tensors",
    "history_segments",
    "is_compute_layer",
    "load_history",
    "release_claim",
    "save_history",
    "select_layers",
    "spread_evenly",
    "summarize",
    "validate_point_series",
]
