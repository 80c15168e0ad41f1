"""StoreRendezvous: processes agree through a real TCPStore before a collective, or fail clearly, never hang.

Two "processes" are threads here, each with its own client of one TCPStore; the two-process DDP runs are in
tests/callbacks/test_ddp_uneven.py.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch.distributed as dist

from lightning_dynamics import DistributedMismatchError
from lightning_dynamics.tracking.distributed import StoreRendezvous, process_group_timeout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stores() -> list[Any]:
    port = _free_port()
    master = dist.TCPStore("127.0.0.1", port, 2, True, wait_for_workers=False)
    worker = dist.TCPStore("127.0.0.1", port, 2, False)
    return [master, worker]


def _in_threads(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs concurrently; each result is the return value or the exception raised."""
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except Exception as error:  # collected for the assertions
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a rendezvous hung"
    return results


def _pair(stores: list[Any], timeout: float = 10.0, namespace: str = "test") -> list[StoreRendezvous]:
    # Constructed one after the other, as processes do at fit start: both get the same run id.
    return [StoreRendezvous(store, rank, 2, namespace, timeout, owner="Test") for rank, store in enumerate(stores)]


def test_agreement_passes_and_cleans_up_the_previous_point(stores: list[Any]) -> None:
    a, b = _pair(stores)
    assert a._batched and b._batched  # a TCPStore has multi_set/multi_get: one round trip per step
    for point in range(3):
        label, facts = f"point {point}", {"epoch": point, "step": 4 * point}
        jobs = [functools.partial(rendezvous.agree, label, facts) for rendezvous in (a, b)]
        assert _in_threads(*jobs) == [None, None]
    # Points 0 and 1 were deleted once both processes had passed the next point; point 2 is kept (a slower
    # process may still be reading it).
    assert not stores[0].check([a._key("point 0", 0)]) and not stores[0].check([a._key("point 1", 1)])
    assert stores[0].check([a._key("point 2", 0), a._key("point 2", 1)])


def test_different_facts_fail_on_every_process_at_once(stores: list[Any]) -> None:
    a, b = _pair(stores, timeout=30.0)
    start = time.monotonic()
    results = _in_threads(
        lambda: a.agree("the start of epoch 0", {"num_training_batches": "5"}, hint="Shard the data."),
        lambda: b.agree("the start of epoch 0", {"num_training_batches": "4"}, hint="Shard the data."),
    )
    assert time.monotonic() - start < 10  # at once, not after the 30 s timeout
    for error in results:
        assert isinstance(error, DistributedMismatchError)
        message = str(error)
        assert "out of step at the start of epoch 0" in message
        assert "rank 0: num_training_batches=5" in message and "rank 1: num_training_batches=4" in message
        assert "Shard the data." in message


def test_a_missing_process_is_named_after_the_timeout(stores: list[Any]) -> None:
    a, b = _pair(stores, timeout=1.0)
    _in_threads(lambda: a.agree("point 0", {"step": 4}), lambda: b.agree("point 0", {"step": 4}))
    start = time.monotonic()
    with pytest.raises(DistributedMismatchError) as info:
        b.agree("point 1", {"epoch": 1, "step": 8, "batches": 4})  # rank 0 never comes
    assert 1.0 <= time.monotonic() - start < 10
    message = str(info.value)
    assert "rank 1 reached point 1 (epoch=1, step=8, batches=4) and waited 1 s for rank(s) [0]" in message
    assert "rank 0 last reached point 0 (step=4)" in message


def test_a_process_that_reported_nothing_is_named(stores: list[Any]) -> None:
    a, _ = _pair(stores, timeout=0.5)
    with pytest.raises(DistributedMismatchError, match=r"rank 1 has reported nothing"):
        a.agree("the start of epoch 0", {"epoch": 0})


def test_runs_of_one_namespace_do_not_mix(stores: list[Any]) -> None:
    first = _pair(stores, namespace="shared")
    _in_threads(lambda: first[0].agree("point 0", {"step": 1}), lambda: first[1].agree("point 0", {"step": 1}))
    # A second fit in the same processes: a new run id, so rank 0 does not see rank 1's old note.
    second = _pair(stores, timeout=0.5, namespace="shared")
    assert second[0]._prefix != first[0]._prefix
    with pytest.raises(DistributedMismatchError, match=r"did not arrive"):
        second[0].agree("point 0", {"step": 1})


def test_invalid_timeout_and_single_process() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        StoreRendezvous(object(), 0, 2, "x", 0.0)
    assert not dist.is_initialized()
    assert StoreRendezvous.for_default_group("x", 5.0, "Test") is None  # one process: nothing to agree on


def test_process_group_timeout_follows_the_strategy() -> None:
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    assert process_group_timeout(DDPStrategy(timeout=timedelta(seconds=42))) == 42.0
    assert process_group_timeout(object()) == 1800.0


def test_a_group_without_a_usable_store_runs_unguarded_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)

    def no_store() -> None:
        raise RuntimeError("this backend keeps no store")

    monkeypatch.setattr(dist.distributed_c10d, "_get_default_store", no_store)
    with pytest.warns(UserWarning, match="no usable key-value store.*not checked for being in step"):
        assert StoreRendezvous.for_default_group("x", 5.0, "Test") is None


def test_stores_without_the_extended_api_work_key_by_key(stores: list[Any]) -> None:
    class Basic:
        """Only the basic Store methods (FileStore-like stores of older torch)."""

        def __init__(self, store: Any) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            if name in {"multi_get", "multi_set", "has_extended_api"}:
                raise AttributeError(name)
            return getattr(self._store, name)

    a, b = (StoreRendezvous(Basic(store), rank, 2, "basic", 10.0) for rank, store in enumerate(stores))
    assert not a._batched
    assert _in_threads(lambda: a.agree("p", {"step": 1}), lambda: b.agree("p", {"step": 1})) == [None, None]
    results = _in_threads(lambda: a.agree("q", {"step": 2}), lambda: b.agree("q", {"step": 3}))
    assert all(isinstance(r, DistributedMismatchError) and "rank 1: step=3" in str(r) for r in results)
