"""Hand the history file to loggers that keep run artifacts (MLflow, Weights & Biases).

Runs logged to MLflow or W&B have no per-run directory of their own on disk, so the history file is also
stored with the run, where it belongs. Loggers without artifacts (CSV, TensorBoard) keep the file in their
``log_dir``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def log_history_artifact(loggers: Iterable[Any], path: str | Path, warn: Callable[[str], None]) -> list[str]:
    """Log ``path`` as an artifact of every MLflow or W&B logger in ``loggers``; return the loggers' names.

    A logger that fails warns (with the path) and the others go on: this runs after a finished fit.
    """
    path = Path(path)
    done: list[str] = []
    for logger in loggers:
        kind = type(logger).__name__
        try:
            if kind == "MLFlowLogger":
                logger.experiment.log_artifact(logger.run_id, str(path))
            elif kind == "WandbLogger":
                import wandb

                artifact = wandb.Artifact(name=f"{path.stem.replace('.', '-')}", type="dynamics-history")
                artifact.add_file(str(path))
                logger.experiment.log_artifact(artifact)
            else:
                continue
        except Exception as error:
            warn(f"could not log the dynamics history {path} to {kind}: {error!r}")
            continue
        done.append(kind)
    return done
