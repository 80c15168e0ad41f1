"""The ``[L, T]`` history of layer summaries, kept on the device, and its file format (no Lightning import).

History files (docs/method.md section 0) hold plain tensors, strings and numbers only, read back with
``torch.load(weights_only=True)``. Since format 2 the payload is stored with its SHA-256, so a flipped bit
is detected; a truncated or foreign file is an error that names its path.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

HISTORY_FORMAT_VERSION = 2
_FILE_MAGIC = "lightning_dynamics.history"


class SummaryHistory:
    """A growing ``[L, T]`` float32 buffer of summaries with the epoch and step of each sample point.

    Storage doubles when full, so appending is amortised O(L) with no reallocation per sample point.

    Example:
        >>> import torch
        >>> history = SummaryHistory(["conv", "fc"], "rms")
        >>> history.append(torch.tensor([1.0, 2.0]), epoch=0, step=10)
        >>> history.values.shape, history.steps
        (torch.Size([2, 1]), [10])
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
        """Restore from :meth:`state_dict`, after checking that it is whole and recorded on the same layers."""
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


def validate_history_state(state: Any, where: str = "the dynamics history") -> None:
    """Check that a history state is whole and consistent; a ValueError that says what differs otherwise.

    Checks types, ``values: [L, T]`` against the layer names, one epoch and step per point (non-negative,
    non-decreasing), and every per-point series in ``metrics``/``logged`` of length ``T``.
    """
    if not isinstance(state, dict):
        raise ValueError(f"{where} is not a dict of a dynamics history (got {type(state).__name__}).")
    version = state.get("format_version")
    if version not in (1, HISTORY_FORMAT_VERSION):
        raise ValueError(
            f"{where} has format version {version!r}; this version of lightning_dynamics reads 1 and "
            f"{HISTORY_FORMAT_VERSION}. Start a fresh history (drop the callback state from the checkpoint)."
        )
    missing = [key for key in ("layer_names", "summary", "values", "epochs", "steps") if key not in state]
    if missing:
        raise ValueError(f"{where} lacks {missing}.")
    names, values = state["layer_names"], state["values"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: `layer_names` must be a list of strings, got {type(names).__name__}.")
    if not isinstance(values, Tensor) or values.ndim != 2 or not values.is_floating_point():
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{where}: `values` must be a floating-point [L, T] tensor, got {shape}.")
    if values.shape[0] != len(names):
        raise ValueError(
            f"{where}: `values` has {values.shape[0]} rows but there are {len(names)} layer names; "
            "the state is corrupt or was edited."
        )
    n_points = values.shape[1]
    for key in ("epochs", "steps"):
        series: Any = state[key]
        if not isinstance(series, (list, tuple)) or len(series) != n_points:
            length = len(series) if isinstance(series, (list, tuple)) else type(series).__name__
            raise ValueError(f"{where}: `{key}` must list one entry per sample point ({n_points}), got {length}.")
        if any(not isinstance(v, int) or v < 0 for v in series):
            raise ValueError(f"{where}: `{key}` must be non-negative integers.")
        if any(b < a for a, b in itertools.pairwise(series)):
            raise ValueError(f"{where}: `{key}` must be non-decreasing (sample points are in time order).")
    for group in ("metrics", "logged"):
        series_by_key = state.get(group, {})
        if not isinstance(series_by_key, dict):
            raise ValueError(f"{where}: `{group}` must be a dict of per-point series.")
        for key, series in series_by_key.items():
            n_values: int | None = len(series) if isinstance(series, (Tensor, list, tuple)) else None
            if n_values != n_points:
                raise ValueError(f"{where}: `{group}[{key!r}]` has {n_values} values for {n_points} sample points.")


def versioned_path(path: str | Path, taken: set[Path] | None = None) -> Path:
    """``path``, or ``stem-v1.suffix``, ``stem-v2.suffix``, ... : the first name not on disk nor in ``taken``.

    As ``ModelCheckpoint`` versions its file names: runs that share a directory never overwrite each other.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "dynamics_history.pt").write_bytes(b"")
        >>> versioned_path(folder / "dynamics_history.pt").name
        'dynamics_history-v1.pt'
    """
    path = Path(path)
    taken = taken or set()
    candidate, version = path, 0
    while candidate.exists() or candidate in taken:
        version += 1
        candidate = path.with_name(f"{path.stem}-v{version}{path.suffix}")
    return candidate


def save_history(state: dict[str, Any], path: str | Path) -> Path:
    """Write a history state atomically with its SHA-256; see :func:`load_history`.

    The payload (plain tensors, strings, numbers) is serialised, hashed and stored beside its hash; the file
    is written to a temporary name and renamed, so a crash never leaves a half-written history.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    record = {
        "magic": _FILE_MAGIC,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(record, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_history(path: str | Path) -> dict[str, Any]:
    """Read a history file without unpickling arbitrary objects (``weights_only=True``) and check it.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, not a history, fails its checksum, or is inconsistent; the
            message names the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dynamics history file at {path}.")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable dynamics history (truncated, corrupt or another kind of file): {error}"
        ) from error
    if isinstance(record, dict) and record.get("magic") == _FILE_MAGIC:
        payload = record.get("payload")
        if not isinstance(payload, Tensor) or payload.dtype != torch.uint8:
            raise ValueError(f"{path}: the history payload is missing or of the wrong type.")
        data = payload.numpy().tobytes()
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            raise ValueError(f"{path}: checksum mismatch: the file was modified or corrupted after it was written.")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"{path}: the history payload cannot be read: {error}") from error
    else:
        state = record  # format 1: the state itself, no checksum
    validate_history_state(state, where=str(path))
    return state


def nan_padded(values: list[float], length: int) -> Tensor:
    """A float64 series of ``length`` points: ``values`` followed by NaN (or cut to ``length``)."""
    out = torch.full((length,), math.nan, dtype=torch.float64)
    if values:
        head = torch.tensor(values[:length], dtype=torch.float64)
        out[: head.numel()] = head
    return out
