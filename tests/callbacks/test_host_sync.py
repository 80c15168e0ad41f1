"""No host synchronisation in a training step: a CPU-side check of what CUDA's sync debug mode enforces.

On CUDA, ``torch.cuda.set_sync_debug_mode("error")`` raises on any device-to-host synchronisation
(``benchmarks/overhead.py --sync-check``). These machines have no GPU, so this test records, with a
``TorchDispatchMode``, every ATen operator that would synchronise on CUDA (reading a scalar back,
boolean-mask indexing and other data-dependent shapes, comparisons returning a Python bool) during whole
training steps, and requires the monitor to add none: the steps must dispatch exactly the same
synchronising operators with and without it.
It cannot see ``.tolist()``/``.numpy()`` of a CPU tensor (no operator is dispatched); the hooks use neither.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_dynamics import DynamicsConfig, DynamicsMonitor, DynamicsTracker
from tests.helpers import TinyModule, loaders, trainer

# Operators whose CUDA implementation copies data to the host and waits for the device.
SYNCING = {
    "aten._local_scalar_dense.default",  # .item(), float(t), bool(t), .tolist()
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten.equal.default",
    "aten.is_nonzero.default",
    "aten._unique2.default",
    "aten.unique_consecutive.default",
    "aten.repeat_interleave.Tensor",
}


class SyncRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()
        self.dispatched = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.dispatched += 1
        if name in SYNCING or (name.startswith("aten.index") and _has_mask(args)):  # x[mask], x[mask] = v
            self.seen[name] += 1
        return func(*args, **(kwargs or {}))


def _has_mask(args) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


class RecordSteps(pl.Callback):
    """Records syncing operators from the start to the end of every training step but the first."""

    def __init__(self) -> None:
        self.recorder = SyncRecorder()
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx > 0:
            self.recorder.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx > 0:
            self.recorder.__exit__(None, None, None)
            self.steps += 1


@pytest.mark.parametrize(
    "config", [{}, {"layers": "all", "max_layers": None}, {"summary": "std"}, {"layer_stats": True}]
)
def test_monitor_adds_no_syncing_operator_to_training_steps(tmp_path: Path, config: dict) -> None:
    counts, dispatched = {}, {}
    for name, callbacks in (
        ("off", []),
        ("on", [DynamicsMonitor(points_per_epoch=1, verbose=False, save_history=False, **config)]),
    ):
        pl.seed_everything(0)
        record = RecordSteps()
        # The recorder comes last, so it wraps the monitor's own step hooks too.
        t = trainer(tmp_path / name, max_epochs=2, callbacks=[*callbacks, record], limit_val_batches=0)
        t.fit(TinyModule(), loaders()[0])
        assert record.steps == 6
        counts[name], dispatched[name] = record.recorder.seen, record.recorder.dispatched
    assert dispatched["on"] > dispatched["off"] > 0  # the recorder saw the steps, and the hooks' own work
    assert counts["on"] == counts["off"], counts


def test_the_recorder_sees_a_sync() -> None:
    recorder = SyncRecorder()
    with recorder:
        x = torch.randn(4)
        float(x.sum())
        x[x > 0]
        x.masked_fill(x < 0, 0.0)  # no sync (x[mask] = v is index_put_ with a mask in torch 2.14: that one syncs)
    assert recorder.seen == {"aten._local_scalar_dense.default": 1, "aten.index.Tensor": 1}


def _plain_loop_syncs(with_tracker: bool) -> tuple[Counter[str], int]:
    """Sync operators of the steps of epochs 1 and 2 of a plain loop (each epoch's first step reads the gradients
    and copies the weights; every step counts dead and saturated units)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 3),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    config = DynamicsConfig(points_per_epoch=1, null_surrogates=None)
    tracker = (
        DynamicsTracker(config=config, layer_stats=True, verbose=False, save_history=False) if with_tracker else None
    )
    if tracker is not None:
        tracker.begin_fit(model)
    recorder, step = SyncRecorder(), 0
    data = [(torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))) for _ in range(4)]
    for epoch in range(3):
        if tracker is not None:
            tracker.epoch_start(epoch, step, n_batches=len(data))
        for batch_idx, (x, y) in enumerate(data):
            if epoch > 0:
                recorder.__enter__()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            if tracker is not None:
                tracker.before_optimizer_step()
            optimizer.step()
            step += 1
            if tracker is not None:
                tracker.batch_end(epoch, step, batch_idx)
            if epoch > 0:
                recorder.__exit__(None, None, None)
        if tracker is not None:
            tracker.epoch_end(epoch, step)
    return recorder.seen, recorder.dispatched


def test_layer_statistics_add_no_syncing_operator_to_training_steps() -> None:
    """Dead/saturated unit counts in the hooks, gradient norms and the weight copy before the step, the update
    ratio after it: all on the device."""
    off, dispatched_off = _plain_loop_syncs(False)
    on, dispatched_on = _plain_loop_syncs(True)
    assert dispatched_on > dispatched_off > 0
    assert on == off, on
