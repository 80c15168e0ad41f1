"""The ``[L, T]`` history of layer summaries, kept on the device (no Lightning import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

HISTORY_FORMAT_VERSION = 1


class SummaryHistory:
    """A growing ``[L, T]`` float32 buffer of summaries with the epoch and step of each sample point.

    Storage doubles when full, so appending is amortised O(L) with no reallocation per sample point.
    """

    def __init__(self, layer_names: list[str], summary: str, device: torch.device | str = "cpu", capacity: int = 64):
        self.layer_names = list(layer_names)
        self.summary = summary
        self._buffer = torch.full((len(layer_names), max(1, capacity)), float("nan"), device=device)
        self.length = 0
        self.epochs: list[int] = []
        self.steps: list[int] = []

    @property
    def values(self) -> Tensor:
        """``[L, T]`` view of the recorded sample points."""
        return self._buffer[:, : self.length]

    @property
    def device(self) -> torch.device:
        return self._buffer.device

    def append(self, column: Tensor, epoch: int, step: int) -> None:
        if column.shape != (len(self.layer_names),):
            raise ValueError(f"expected a column of shape ({len(self.layer_names)},), got {tuple(column.shape)}.")
        if self.length == self._buffer.shape[1]:
            grown = torch.full((self._buffer.shape[0], 2 * self._buffer.shape[1]), float("nan"), device=self.device)
            grown[:, : self.length] = self._buffer
            self._buffer = grown
        self._buffer[:, self.length] = column.to(self._buffer)
        self.length += 1
        self.epochs.append(int(epoch))
        self.steps.append(int(step))

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, strings and ints only: loadable with ``torch.load(weights_only=True)``."""
        return {
            "format_version": HISTORY_FORMAT_VERSION,
            "layer_names": list(self.layer_names),
            "summary": self.summary,
            "values": self.values.detach().cpu().clone(),
            "epochs": list(self.epochs),
            "steps": list(self.steps),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version = state.get("format_version")
        if version != HISTORY_FORMAT_VERSION:
            raise ValueError(
                f"cannot restore a dynamics history of format version {version!r}; this version reads "
                f"{HISTORY_FORMAT_VERSION}. Start a fresh history (drop the callback state from the checkpoint)."
            )
        if list(state["layer_names"]) != self.layer_names or state["summary"] != self.summary:
            raise ValueError(
                "the checkpoint's dynamics history was recorded on other layers or with another summary "
                f"(checkpoint: {len(state['layer_names'])} layers, summary={state['summary']!r}; now: "
                f"{len(self.layer_names)} layers, summary={self.summary!r}). Mixing them would corrupt the "
                "series: use the same `layers`/`summary`, or resume without the callback's state."
            )
        values = state["values"]
        self._buffer = torch.full(
            (len(self.layer_names), max(64, 2 * values.shape[1])), float("nan"), device=self.device
        )
        self._buffer[:, : values.shape[1]] = values.to(self.device)
        self.length = values.shape[1]
        self.epochs = [int(e) for e in state["epochs"]]
        self.steps = [int(s) for s in state["steps"]]


def save_history(state: dict[str, Any], path: str | Path) -> Path:
    """Write a history state (plus any extra plain series) with ``torch.save``; see :func:`load_history`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written history
    return path


def load_history(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_history` without unpickling arbitrary objects (``weights_only``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
