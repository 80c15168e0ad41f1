"""When a sample point closes and when the measures are computed: the sampling schedule (no Lightning import).

Two cadences (docs/method.md section 0):

- by epoch (default): ``points_per_epoch`` sample points per epoch, evenly spread over its batches, the last one at
  the epoch's end; the measures are computed and logged once per epoch, at that last point. ``points_per_epoch=1``
  is the paper's one point per epoch.
- by step (``every_n_steps=n``): a sample point every ``n`` optimizer steps, measures computed and logged at each.

Every adapter asks the same object, so the Lightning callback, Fabric and a plain loop sample identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightning_dynamics.validation import Default, Int, check_int, check_state


@dataclass
class SampleSchedule:
    """The sampling cadence and where it stands.

    Args:
        every_n_steps: a point every this many optimizer steps (``None``: sample by epoch).
        points_per_epoch: points per epoch when sampling by epoch.

    Example:
        >>> schedule = SampleSchedule(points_per_epoch=4)
        >>> [b for b in range(10) if schedule.closes_at_batch(b, n_batches=10, step=b + 1)]  # + the epoch end
        [2, 4, 7]
        >>> SampleSchedule(every_n_steps=3).closes_at_batch(5, n_batches=10, step=6)
        True
    """

    every_n_steps: int | None = None
    points_per_epoch: int = 1
    last_sample_step: int = -1

    def __post_init__(self) -> None:
        check_int("every_n_steps", self.every_n_steps, 1, allow_none=True)
        check_int("points_per_epoch", self.points_per_epoch, 1)

    @property
    def by_step(self) -> bool:
        return self.every_n_steps is not None

    def closes_at_batch(self, batch_idx: int, n_batches: float | int | None, step: int) -> bool:
        """Does the end of batch ``batch_idx`` (0-based in its epoch) close a sample point?

        By epoch, the epoch's last point closes at :meth:`closes_at_epoch_end` instead, and an epoch of unknown
        length (an iterable without ``len``) has that one point only.
        """
        if self.every_n_steps is not None:
            due = step > 0 and step % self.every_n_steps == 0 and step != self.last_sample_step
            if due:
                self.last_sample_step = step
            return due
        if self.points_per_epoch == 1 or n_batches is None or not math.isfinite(n_batches) or n_batches < 1:
            return False
        n = int(n_batches)
        if batch_idx + 1 >= n:
            return False
        points = min(self.points_per_epoch, n)
        return (batch_idx + 1) * points // n > batch_idx * points // n

    def closes_at_epoch_end(self) -> bool:
        """By epoch, the epoch's end closes its last sample point (and the measures are computed there)."""
        return self.every_n_steps is None

    def computes_at_batch(self) -> bool:
        """By step, the measures are computed at every sample point; by epoch, only at the epoch's end."""
        return self.every_n_steps is not None

    def state_dict(self) -> dict[str, Any]:
        return {
            "every_n_steps": self.every_n_steps,
            "points_per_epoch": self.points_per_epoch,
            "last_sample_step": self.last_sample_step,
        }

    def load_state_dict(self, state: dict[str, Any], owner: str) -> None:
        """Restore where the schedule stands; a checkpoint made with another cadence is refused."""
        where = f"{owner}: the checkpoint's schedule"
        last = check_state(state, {"last_sample_step": Default(Int(-1), -1)}, where)["last_sample_step"]
        for key in ("every_n_steps", "points_per_epoch"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"{owner}: the checkpoint was recorded with {key}={state[key]!r}, this monitor samples with "
                    f"{key}={getattr(self, key)!r}; one history cannot mix sampling intervals. Use the same "
                    f"{key}, or resume without the callback's state."
                )
        self.last_sample_step = last
