"""The framework-neutral loop: when to sample, what to record, and how processes agree (no Lightning import).

:class:`DynamicsTracker` runs the one-way flow (hooks -> summaries -> history -> measures -> readings -> log points)
for any training loop; the adapters in :mod:`lightning_dynamics.callbacks` only map their framework's hooks onto it.
:func:`tracker_from_options` declares the options every adapter takes (typed, with their defaults) and builds a tracker.
:class:`SampleSchedule` decides when a sample point is taken; :mod:`~lightning_dynamics.tracking.distributed` is the
DDP rendezvous; :mod:`~lightning_dynamics.tracking.notes` words what the tracker says once per run.
"""

from lightning_dynamics.tracking.distributed import DistributedMismatchError, StoreRendezvous
from lightning_dynamics.tracking.options import tracker_from_options
from lightning_dynamics.tracking.schedule import SampleSchedule
from lightning_dynamics.tracking.tracker import DynamicsTracker, LogPoint

__all__ = [
    "DistributedMismatchError",
    "DynamicsTracker",
    "LogPoint",
    "SampleSchedule",
    "StoreRendezvous",
    "tracker_from_options",
]
