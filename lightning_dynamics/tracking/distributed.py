"""Never hang on the sample point's all-reduce: processes agree through the key-value store first.

Under DDP the monitor issues one collective per sample point (the all-reduce of the packed sums). If the
processes are out of step, for example because one runs more batches per epoch than another, that all-reduce
meets a *different* collective on the other process (the gradient all-reduce of its extra batch), and both
block until the process group's timeout (30 minutes by default) and then fail with a transport message
("Application timeout caused pair closure") that names neither the cause nor the fix.

Before each collective the adapters call :meth:`StoreRendezvous.agree`: every process writes what it is about
to do (its epoch, step and batch count) into the process group's key-value store (the ``TCPStore`` every
``torch.distributed`` job already has) and waits, with a timeout, for the other processes' notes. Store
traffic is host-side TCP, apart from the collectives, so it cannot interleave with them. Then:

* the notes differ (different batch counts, different steps): every process raises the same
  :class:`DistributedMismatchError` at once, naming each process's values;
* a process does not arrive within the timeout: the waiting process raises, naming the process that is
  missing and the last point it reported. Its exit closes the transport, so the other process fails too.

Cost: a handful of store round trips per sample point and per epoch start (about a millisecond on one
machine); nothing per batch.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistributedMismatchError", "StoreRendezvous"]

_ROOT = "lightning_dynamics"
# A store's wait timeout: DistStoreError since torch 2.2's exception hierarchy, a RuntimeError before.
_STORE_TIMEOUT: type[Exception] = getattr(dist, "DistStoreError", RuntimeError)


class DistributedMismatchError(RuntimeError):
    """The processes of a distributed run are out of step at a monitor's collective."""


def _describe(facts: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in facts.items())


class StoreRendezvous:
    """Agreement of all processes on ``(label, facts)`` through a ``torch.distributed`` store, with a timeout.

    Args:
        store: a ``torch.distributed.Store`` shared by the processes (the default group's).
        rank, world_size: this process and the number of processes.
        namespace: keys are ``lightning_dynamics/<namespace>/<run>/...``; one namespace per monitor.
        timeout: seconds to wait for the other processes at each agreement.
        owner: who is asking, for messages (e.g. ``"DynamicsMonitor[dynamics]"``).
    """

    def __init__(
        self, store: Any, rank: int, world_size: int, namespace: str, timeout: float, owner: str = "lightning_dynamics"
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"StoreRendezvous: timeout must be > 0 seconds, got {timeout!r}.")
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.timeout = float(timeout)
        self.owner = owner
        # One run id per fit, the same on every process without a collective: every process adds 1 once.
        ticket = int(store.add(f"{_ROOT}/{namespace}/runs", 1)) - 1
        self._prefix = f"{_ROOT}/{namespace}/{ticket // world_size}"
        self._previous: str | None = None
        has_extended_api = getattr(store, "has_extended_api", lambda: False)
        self._batched = bool(has_extended_api())  # multi_set/multi_get: one round trip instead of one per key

    @classmethod
    def for_default_group(cls, namespace: str, timeout: float, owner: str) -> StoreRendezvous | None:
        """The rendezvous of the default process group, or ``None`` in one process (nothing to agree on)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        try:
            store = dist.distributed_c10d._get_default_store()
            return cls(store, dist.get_rank(), dist.get_world_size(), namespace, timeout, owner)
        except Exception as error:  # a process group without a usable store: run unguarded, and say so
            warnings.warn(
                f"{owner}: the process group has no usable key-value store ({error!r}); the processes are not "
                "checked for being in step before the sample point's all-reduce (uneven batches would block there "
                "until the process group's timeout).",
                stacklevel=2,
            )
            return None

    def _key(self, label: str, rank: int) -> str:
        return f"{self._prefix}/{label}/{rank}"

    def agree(self, label: str, facts: Mapping[str, Any], hint: str = "") -> None:
        """Publish ``facts`` at ``label``, wait for every process's, and raise unless all are equal.

        Raises:
            DistributedMismatchError: the facts differ (raised on every process), or a process did not reach
                ``label`` within the timeout (raised on the processes that did).
        """
        note = json.dumps(dict(facts), sort_keys=True)
        self._set_many(
            [self._key(label, self.rank), f"{self._prefix}/latest/{self.rank}"],
            [note, json.dumps({"label": label, **facts})],
        )
        keys = [self._key(label, r) for r in range(self.world_size)]
        try:
            self.store.wait(keys, timedelta(seconds=self.timeout))
        except _STORE_TIMEOUT:
            raise DistributedMismatchError(self._timeout_message(label, facts, hint)) from None
        notes = [json.loads(value) for value in self._get_many(keys)]
        if any(other != notes[self.rank] for other in notes):
            table = "; ".join(f"rank {r}: {_describe(n)}" for r, n in enumerate(notes))
            raise DistributedMismatchError(
                f"{self.owner}: the processes are out of step at {label}: {table}. {hint} "
                "Stopping here, before a collective that would block until the process group's timeout."
            )
        # Every process has arrived here, so every process has read the previous point's notes: they can go.
        # (The last note of a run stays: another process may still be reading it. Run ids are unique.)
        if self._previous is not None:
            self.store.delete_key(self._previous)
        self._previous = self._key(label, self.rank)

    def _set_many(self, keys: list[str], values: list[str]) -> None:
        if self._batched:
            self.store.multi_set(keys, values)
        else:
            for key, value in zip(keys, values, strict=True):
                self.store.set(key, value)

    def _get_many(self, keys: list[str]) -> list[bytes]:
        return list(self.store.multi_get(keys)) if self._batched else [self.store.get(key) for key in keys]

    def _timeout_message(self, label: str, facts: Mapping[str, Any], hint: str) -> str:
        missing = [r for r in range(self.world_size) if not self.store.check([self._key(label, r)])]
        last = []
        for r in missing:
            key = f"{self._prefix}/latest/{r}"
            if self.store.check([key]):
                seen = json.loads(self.store.get(key))
                last.append(f"rank {r} last reached {seen.pop('label')} ({_describe(seen)})")
            else:
                last.append(f"rank {r} has reported nothing")
        return (
            f"{self.owner}: rank {self.rank} reached {label} ({_describe(facts)}) and waited {self.timeout:g} s "
            f"for rank(s) {missing}, which did not arrive: {'; '.join(last)}. Either the processes are out of step "
            f"or rank(s) {missing} are only slower than the timeout (then raise it). {hint} Failing now instead "
            "of blocking in the all-reduce until the process group's timeout."
        )


def process_group_timeout(strategy: Any) -> float:
    """The process group's timeout of a Lightning/Fabric strategy in seconds (30 minutes when not set)."""
    timeout = getattr(strategy, "_timeout", None)
    if isinstance(timeout, timedelta):
        return timeout.total_seconds()
    return float(torch.distributed.constants.default_pg_timeout.total_seconds())
