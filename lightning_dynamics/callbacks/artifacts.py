"""The history file as a run artifact: the call today's monitor makes; the table lives in :mod:`.sinks`.

Runs logged to MLflow or W&B have no per-run directory of their own on disk, so the history file is also stored
with the run; loggers without artifacts (CSV, TensorBoard) keep it in their ``log_dir``. Which logger does what is
:data:`lightning_dynamics.callbacks.sinks.SINKS`; :func:`~lightning_dynamics.callbacks.sinks.hand_to_loggers`
does both the file and the figure in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lightning_dynamics.callbacks.sinks import log_history_file


def log_history_artifact(loggers: Iterable[Any], path: str | Path, warn: Callable[[str], None]) -> list[str]:
    """Store ``path`` with the run in every logger whose sink keeps files; return those loggers' class names.

    A logger that fails warns (with the path) and the others go on: this runs after a finished fit.
    """
    return [kind for kind, what in log_history_file(loggers, path, warn).items() if what == "history"]
