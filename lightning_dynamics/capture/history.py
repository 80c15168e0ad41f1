"""The ``[L, T]`` history of layer summaries, kept on the device, and the schema of its state (no Lightning import).

The file format (claims, checksums, atomic writes) lives in :mod:`lightning_dynamics.capture.history_file`.
History files (docs/method.md section 0) hold plain tensors, strings and numbers only, read back with
``torch.load(weights_only=True)``. Since format 2 the payload is stored with its SHA-256, so a flipped bit
is detected; a truncated or foreign file is an error that names its path. Format 3 adds ``segments``: the
sample index at which each fit (each Trainer) begins, so a history continued by a second ``fit`` whose
epochs and steps restart at 0 stays one valid file. Formats 1 and 2 are still read (their segments are
inferred where the epochs or steps go back).

Files are claimed before they are written (:func:`claim_path`): an exclusive create of a hidden marker
``.<name>.claim`` beside the file, so runs that share a directory never take the same name, whatever the
timing; :func:`save_history` writes to a temporary file and renames it onto the claimed name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_dynamics.capture.summaries import SUMMARY_CHOICES
from lightning_dynamics.validation import (
    Choice,
    Constrained,
    Default,
    DictOf,
    Int,
    ListOf,
    Series,
    Str,
    TensorOf,
    check_state,
    check_value,
    field_error,
)

HISTORY_FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)


class SummaryHistory:
    """A growing ``[L, T]`` float32 buffer of summaries with the epoch and step of each sample point.

    Storage doubles when full, so appending is amortised O(L) with no reallocation per sample point.
    :attr:`segments` holds the sample index at which each fit begins (``[0]`` for one fit): epochs and steps
    are non-decreasing within a segment. Call :meth:`start_segment` when a new fit (a new Trainer) continues
    this history; :meth:`append` also starts one when the epoch or step goes back.

    Example:
        >>> import torch
        >>> history = SummaryHistory(["conv", "fc"], "rms")
        >>> history.append(torch.tensor([1.0, 2.0]), epoch=0, step=10)
        >>> history.start_segment()  # a second fit with a new Trainer
        >>> history.append(torch.tensor([1.5, 2.5]), epoch=0, step=10)
        >>> history.values.shape, history.epochs, history.segments
        (torch.Size([2, 2]), [0, 0], [0, 1])
    """

    def __init__(self, layer_names: list[str], summary: str, device: torch.device | str = "cpu", capacity: int = 64):
        self.layer_names = list(layer_names)
        self.summary = summary
        self._buffer = torch.full((len(layer_names), max(1, capacity)), float("nan"), device=device)
        self.length = 0
        self.epochs: list[int] = []
        self.steps: list[int] = []
        self.segments: list[int] = [0]

    @property
    def values(self) -> Tensor:
        """``[L, T]`` view of the recorded sample points."""
        return self._buffer[:, : self.length]

    @property
    def device(self) -> torch.device:
        return self._buffer.device

    @property
    def nbytes(self) -> int:
        """Bytes the history's buffer holds on its device: its capacity (it doubles when full), not only ``T``."""
        return self._buffer.numel() * self._buffer.element_size()

    def start_segment(self) -> None:
        """Mark that a new fit begins here: the next point may restart its epoch and step (idempotent)."""
        if self.length > self.segments[-1]:
            self.segments.append(self.length)

    def append(self, column: Tensor, epoch: int, step: int) -> None:
        """Add one sample point: ``column`` ``[L]`` at ``epoch`` and ``step``."""
        if column.shape != (len(self.layer_names),):
            raise ValueError(f"expected a column of shape ({len(self.layer_names)},), got {tuple(column.shape)}.")
        self.extend(column.unsqueeze(1), [epoch], [step])

    def extend(self, columns: Tensor, epochs: Sequence[int], steps: Sequence[int]) -> None:
        """Add ``n`` sample points at once: ``columns`` ``[L, n]``, one epoch and step each (one copy)."""
        n = len(epochs)
        if columns.shape != (len(self.layer_names), n) or len(steps) != n:
            raise ValueError(
                f"expected columns of shape ({len(self.layer_names)}, {n}) with {n} epochs and steps, got "
                f"{tuple(columns.shape)} with {len(steps)} steps."
            )
        end = self.length + n
        if end > self._buffer.shape[1]:
            grown = torch.full(
                (self._buffer.shape[0], max(end, 2 * self._buffer.shape[1])), float("nan"), device=self.device
            )
            grown[:, : self.length] = self._buffer[:, : self.length]
            self._buffer = grown
        self._buffer[:, self.length : end] = columns.to(self._buffer)
        for epoch, step in zip(epochs, steps, strict=True):
            if self.length > self.segments[-1] and (epoch < self.epochs[-1] or step < self.steps[-1]):
                self.segments.append(self.length)  # the epoch or step went back: a new fit that did not say so
            self.length += 1
            self.epochs.append(int(epoch))
            self.steps.append(int(step))

    def check_not_ahead(
        self, epoch: int, step: int | None = None, where: str = "the checkpoint's dynamics history"
    ) -> None:
        """Refuse a restored history whose last fit ran past where the trainer is now.

        Call it once the trainer's position is restored (e.g. Lightning's ``on_train_start``) with
        ``trainer.current_epoch`` and ``trainer.global_step``: a history recorded up to epoch 9 cannot continue
        a run that resumes at epoch 3 (the checkpoint holds another run's or a later state). Only the last
        segment (the fit being resumed) counts; a new segment with no point yet is never ahead.

        Args:
            epoch: the trainer's current epoch.
            step: the trainer's global (optimizer) step; ``None`` to check the epoch only.
            where: how the message names the history.

        Raises:
            ValueError: the last segment's last epoch exceeds ``epoch``, or its last step exceeds ``step``.
        """
        if self.length == 0 or self.length == self.segments[-1]:
            return
        last_epoch, last_step = self.epochs[-1], self.steps[-1]
        if last_epoch > epoch or (step is not None and last_step > step):
            raise ValueError(
                f"{where} runs ahead of the trainer: its last sample point is at epoch {last_epoch}, step "
                f"{last_step}, but the trainer is at epoch {epoch}"
                + (f", step {step}" if step is not None else "")
                + ". The state was saved later in training or by another run: resume from the checkpoint it "
                "was saved in, or without the callback's state."
            )

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, strings and ints only: loadable with ``torch.load(weights_only=True)``."""
        return {
            "format_version": HISTORY_FORMAT_VERSION,
            "layer_names": list(self.layer_names),
            "summary": self.summary,
            "values": self.values.detach().cpu().clone(),
            "epochs": list(self.epochs),
            "steps": list(self.steps),
            "segments": list(self.segments),
        }

    def load_state_dict(self, state: Any) -> None:
        """Restore from :meth:`state_dict`, after checking that it is whole and recorded on the same layers.

        Raises:
            ValueError: the state is not a history state, a field is missing, of the wrong type or
                inconsistent (the message names the field), or it was recorded on other layers or with
                another summary.
        """
        validate_history_state(state, where="the checkpoint's dynamics history")
        if list(state["layer_names"]) != self.layer_names or state["summary"] != self.summary:
            ours, theirs = set(self.layer_names), set(state["layer_names"])
            differ = sorted(ours ^ theirs)[:6]
            raise ValueError(
                "the checkpoint's dynamics history was recorded on other layers or with another summary "
                f"(checkpoint: {len(state['layer_names'])} layers, summary={state['summary']!r}; now: "
                f"{len(self.layer_names)} layers, summary={self.summary!r}"
                + (f"; layers in one but not the other: {differ}" if differ else "; same layers, other order")
                + "). Mixing them would corrupt the series: use the same `layers`/`summary`, or resume without the "
                "callback's state."
            )
        values = state["values"]
        self._buffer = torch.full(
            (len(self.layer_names), max(64, 2 * values.shape[1])), float("nan"), device=self.device
        )
        self._buffer[:, : values.shape[1]] = values.to(self.device, torch.float32)
        self.length = values.shape[1]
        self.epochs = [int(e) for e in state["epochs"]]
        self.steps = [int(s) for s in state["steps"]]
        self.segments = history_segments(state)


def history_segments(state: dict[str, Any]) -> list[int]:
    """The sample index at which each fit begins, of a valid history state.

    Format 3 stores them; for formats 1 and 2 a segment starts wherever the epoch or the step goes back
    (a second ``fit`` with a new Trainer, written before segments existed).
    """
    if "segments" in state:
        return [int(s) for s in state["segments"]]
    epochs, steps = state["epochs"], state["steps"]
    backs = [i for i in range(1, len(epochs)) if epochs[i] < epochs[i - 1] or steps[i] < steps[i - 1]]
    return [0, *backs]


def continuous_time(epochs: list[int], steps: list[int], segments: list[int]) -> tuple[list[int], list[int]]:
    """Epochs and steps counted across fits: a fit that restarted at epoch 0 continues after the previous one.

    Each segment whose first epoch does not come after the previous segment's last epoch (a new Trainer) is
    shifted to begin one epoch after it, and its steps by the previous segment's last recorded step (the steps
    a fit made after its last sample point are not known, so the step axis is a lower bound there). A segment
    that continues (a second ``fit`` of the same Trainer) is unchanged.

    Args:
        epochs: ``[T]`` epoch of each sample point (the history's ``epochs``).
        steps: ``[T]`` optimizer step of each sample point.
        segments: the sample index where each fit begins (the history's ``segments``).

    Returns:
        ``(epochs, steps)``, each ``[T]``, non-decreasing across the fits.

    Example:
        >>> continuous_time([0, 1, 2, 0, 1, 2], [4, 8, 12, 4, 8, 12], [0, 3])
        ([0, 1, 2, 3, 4, 5], [4, 8, 12, 16, 20, 24])
    """
    out_epochs, out_steps = list(epochs), list(steps)
    bounds = [*segments, len(epochs)]
    for k in range(1, len(segments)):
        begin, end = segments[k], bounds[k + 1]
        if begin >= end or out_epochs[begin] > out_epochs[begin - 1]:
            continue
        epoch_shift = out_epochs[begin - 1] + 1 - epochs[begin]
        step_shift = out_steps[begin - 1]
        for i in range(begin, end):
            out_epochs[i] = epochs[i] + epoch_shift
            out_steps[i] = steps[i] + step_shift
    return out_epochs, out_steps


def validate_point_series(series_by_key: Any, n_points: int, where: str, group: str) -> None:
    """Check a ``{name: series}`` dict of per-point values: string keys, each series ``n_points`` real numbers.

    A series is a 1-d real tensor or a list/tuple of ints and floats (NaN allowed).

    Args:
        series_by_key: the ``{name: series}`` dict to check.
        n_points: the number of sample points each series must have.
        where: how the message names the state (e.g. ``"the checkpoint"``).
        group: the field's name in the state (``"metrics"``, ``"logged"``).

    Raises:
        ValueError: naming ``group`` and the key: not a dict, a non-string key, a series of another
            length or holding something other than numbers (strings, ``None``, nested lists).
    """
    check_value(group, series_by_key, DictOf(Series(n_points)), where)


def validate_history_state(state: Any, where: str = "the dynamics history") -> None:
    """Check that a history state is whole and consistent; a ValueError that names the field otherwise.

    Checks every field: ``format_version``; ``layer_names`` (strings); ``summary`` (one of
    :data:`~lightning_dynamics.capture.SUMMARY_CHOICES`); ``values: [L, T]`` floating point against the layer
    names; one non-negative integer epoch and step per point; ``segments`` (format 3: starts at 0, strictly
    increasing, each below ``T``); epochs and steps non-decreasing within each segment; and every per-point
    series in ``metrics``/``logged`` (:func:`validate_point_series`).

    Raises:
        ValueError: the first field that is missing, of the wrong type or inconsistent, by name.
    """
    check_state(state, {}, where)
    version = state.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{where} has format version {version!r}; this version of lightning_dynamics reads "
            f"{list(READABLE_FORMAT_VERSIONS)}. A newer file needs a newer lightning-dynamics; from a checkpoint, "
            "start a fresh history (drop the callback state from the checkpoint)."
        )
    layout = {
        "layer_names": ListOf(Str()),
        "summary": Choice(SUMMARY_CHOICES),
        "values": TensorOf(ndim=2, floating=True),
    }
    names, _, values = check_state(state, layout, where).values()
    if values.shape[0] != len(names):
        raise field_error(
            where,
            "values",
            f"has {values.shape[0]} rows but there are {len(names)} layer names; the state is corrupt or was edited",
        )
    n = values.shape[1]
    segments = Constrained(
        ListOf(Int(0)),
        lambda s: list(s[:1]) == [0] and all(a < b for a, b in itertools.pairwise(s)) and (s[-1] < n or len(s) == 1),
        "the sample indices where each fit begins: integers starting at 0, increasing, each below the "
        f"{n} sample points",
    )
    series = ListOf(Int(0), length=n, each="sample point")
    check_state(
        state,
        {
            "epochs": series,
            "steps": series,
            "segments": segments if version >= 3 else Default(segments, [0]),
            "metrics": Default(DictOf(Series(n)), {}),
            "logged": Default(DictOf(Series(n)), {}),
        },
        where,
    )
    bounds = [*history_segments(state), n]
    for key in ("epochs", "steps"):
        for begin, end in itertools.pairwise(bounds):
            if any(b < a for a, b in itertools.pairwise(state[key][begin:end])):
                raise field_error(
                    where,
                    key,
                    "must be non-decreasing within each fit (sample points are in time order; "
                    f"`segments` = {bounds[:-1]} marks where each fit begins)",
                )


def nan_padded(values: list[float], length: int) -> Tensor:
    """A float64 series of ``length`` points: ``values`` followed by NaN (or cut to ``length``)."""
    out = torch.full((length,), math.nan, dtype=torch.float64)
    if values:
        head = torch.tensor(values[:length], dtype=torch.float64)
        out[: head.numel()] = head
    return out
