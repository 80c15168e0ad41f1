"""Hooks' side of the data flow: layer selection, on-device summaries, the [L, T] history and its file.

No Lightning import: usable with any torch training loop.
"""

from lightning_dynamics.capture.history import (
    HISTORY_FORMAT_VERSION,
    SummaryHistory,
    continuous_time,
    history_segments,
    validate_point_series,
)
from lightning_dynamics.capture.history_file import (
    HistorySaveError,
    claim_path,
    load_history,
    release_claim,
    save_history,
)
from lightning_dynamics.capture.hooks import ActivationCapture, LayerCaptureWarning, side_forward
from lightning_dynamics.capture.layer_selection import (
    FewLayersWarning,
    SkippedModulesWarning,
    is_compute_layer,
    is_metric_module,
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
    "SkippedModulesWarning",
    "SummaryAccumulator",
    "SummaryHistory",
    "claim_path",
    "continuous_time",
    "floating_tensors",
    "history_segments",
    "is_compute_layer",
    "is_metric_module",
    "load_history",
    "release_claim",
    "save_history",
    "select_layers",
    "side_forward",
    "spread_evenly",
    "summarize",
    "validate_point_series",
]
