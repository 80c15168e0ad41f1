"""History files: claimed, checksummed and written atomically; read back without unpickling (no Lightning import).

History files (docs/method.md section 0) hold the state of a :class:`~lightning_dynamics.capture.SummaryHistory`
(plain tensors, strings and numbers only), read back with ``torch.load(weights_only=True)``. Since format 2 the
payload is stored with its SHA-256, so a flipped bit is detected; a truncated or foreign file is an error that names
its path. Files are claimed before they are written (:func:`claim_path`): an exclusive create of a hidden marker
``.<name>.claim`` beside the file, so runs that share a directory never take the same name, whatever the timing;
:func:`save_history` writes to a temporary file and renames it onto the claimed name.
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_dynamics.capture.history import (
    history_segments,
    validate_history_state,
)

_FILE_MAGIC = "lightning_dynamics.history"
_CLAIM_SUFFIX = ".claim"

# What an OSError's errno means to a user who has to act on it.
_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "the directory does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "the path is a directory",
    errno.EIO: "an input/output error (a failing disk or network file system)",
    errno.EFBIG: "the file is larger than the system allows",
    errno.ENAMETOOLONG: "the file name is too long",
}


class HistorySaveError(OSError):
    """Writing (or claiming) a history file failed; ``str(error)`` says why in words and names the path.

    An :class:`OSError` with the original ``errno`` and ``filename``; :attr:`cause` is the reason in words
    (``"the disk is full"``, ``"permission denied"``, ...).
    """

    def __init__(self, path: str | Path, error: OSError, action: str = "save the dynamics history to") -> None:
        code = error.errno
        cause = _CAUSES.get(code) if code is not None else None
        if cause is None:
            cause = (error.strerror or str(error) or type(error).__name__).rstrip(".")
        detail = f"{errno.errorcode.get(code, code)}: {error.strerror}" if code is not None else type(error).__name__
        super().__init__(code, cause, str(path))
        self.cause = cause
        self.path = Path(path)
        self.message = f"could not {action} {path}: {cause} ({detail})."

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:  # picklable across processes despite the custom __init__
        return (_rebuild_save_error, (self.message, self.errno, self.cause, str(self.path)))


def _rebuild_save_error(message: str, code: int | None, cause: str, path: str) -> HistorySaveError:
    error = HistorySaveError(path, OSError(code, cause))
    error.message = message
    return error


def claim_marker(path: str | Path) -> Path:
    """The hidden marker ``.<name>.claim`` that reserves ``path`` for one run (see :func:`claim_path`)."""
    path = Path(path)
    return path.with_name(f".{path.name}{_CLAIM_SUFFIX}")


def _is_free(candidate: Path, taken: set[Path]) -> bool:
    return candidate not in taken and not candidate.exists() and not claim_marker(candidate).exists()


def _versions(path: Path) -> Any:
    yield path
    for version in itertools.count(1):
        yield path.with_name(f"{path.stem}-v{version}{path.suffix}")


def versioned_path(path: str | Path, taken: set[Path] | None = None) -> Path:
    """``path``, or ``stem-v1.suffix``, ``stem-v2.suffix``, ... : the first name not on disk, claimed nor in ``taken``.

    Only looks: use :func:`claim_path` to reserve the name against other processes.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "dynamics_history.pt").write_bytes(b"")
        >>> versioned_path(folder / "dynamics_history.pt").name
        'dynamics_history-v1.pt'
    """
    taken = taken or set()
    return next(candidate for candidate in _versions(Path(path)) if _is_free(candidate, taken))


def claim_path(directory: str | Path, name: str, taken: set[Path] | None = None) -> Path:
    """Reserve ``directory/name``, or its first free version ``stem-v1.suffix``, ``-v2``, ..., for this run.

    The claim is an exclusive create (``O_CREAT | O_EXCL``) of the hidden marker ``.<name>.claim``: of any
    number of processes or threads claiming in one directory at the same time, each gets its own name. A
    name is free when neither the file nor its marker exists (nor is it in ``taken``). :func:`save_history`
    removes the marker once the file is in place; :func:`release_claim` gives up a name never written. A
    run killed before its first save leaves its marker, and that name is skipped from then on.

    Args:
        directory: where the file goes (created if missing).
        name: the file name, e.g. ``"dynamics_history.pt"``.
        taken: names to skip as well (e.g. claimed earlier in this process).

    Returns:
        The claimed path.

    Raises:
        HistorySaveError: the directory cannot be created or written (the message says why).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> claim_path(folder, "dynamics_history.pt").name, claim_path(folder, "dynamics_history.pt").name
        ('dynamics_history.pt', 'dynamics_history-v1.pt')
    """
    directory = Path(directory)
    taken = taken or set()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HistorySaveError(directory, error, action="create the directory") from error
    for candidate in _versions(directory / name):
        if not _is_free(candidate, taken):
            continue
        marker = claim_marker(candidate)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue  # another process claimed it between our look and our create
        except OSError as error:
            raise HistorySaveError(candidate, error, action="claim the history file") from error
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        if candidate.exists():  # written by a run that has since released its marker
            marker.unlink(missing_ok=True)
            continue
        return candidate
    raise AssertionError("unreachable: _versions is infinite")


def release_claim(path: str | Path) -> None:
    """Give up the name :func:`claim_path` reserved (nothing written): remove its marker, if any."""
    claim_marker(path).unlink(missing_ok=True)


def save_history(state: dict[str, Any], path: str | Path) -> Path:
    """Write a history state atomically with its SHA-256; see :func:`load_history`.

    The payload (plain tensors, strings, numbers) is serialised in memory, hashed and stored beside its hash;
    the file is written to a temporary name in the same directory and renamed onto ``path``, so a crash never
    leaves a half-written history and readers see the old file or the new one. Writing in Python (not through
    ``torch.save`` onto the disk) keeps the system's error: a full disk is an ``ENOSPC``, not an iostream error.
    Once written, ``path``'s claim marker (:func:`claim_path`) is removed: the file itself holds the name.

    Args:
        state: a history state (:meth:`SummaryHistory.state_dict` plus optional series and settings).
        path: where to write, normally a name returned by :func:`claim_path`.

    Returns:
        ``path``.

    Raises:
        HistorySaveError: the file cannot be written; the message says why in words (the disk is full,
            permission denied, ...) and names the path. Nothing is left behind but the previous file, if any.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    record = {
        "magic": _FILE_MAGIC,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, buffer.getbuffer())
    except OSError as error:
        raise HistorySaveError(path, error) from error
    release_claim(path)
    return path


def _write_atomically(path: Path, data: memoryview) -> None:
    """Write ``data`` to a unique temporary file beside ``path``, then rename it onto ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a history file is as readable as torch.save's
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: memoryview) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


def load_history(path: str | Path) -> dict[str, Any]:
    """Read a history file without unpickling arbitrary objects (``weights_only=True``) and check it.

    The returned state always has ``segments`` (inferred for files of format 1 and 2).

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
    state["segments"] = history_segments(state)
    return state
