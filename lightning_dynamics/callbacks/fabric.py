"""DynamicsFabricMonitor: the Lightning Fabric adapter of :class:`~lightning_dynamics.DynamicsTracker`.

Fabric calls a callback's hooks only where the training loop says so, with ``fabric.call(name, **kwargs)``.
Three calls are enough (records the model's forward calls in training mode; validation in eval mode is not
recorded)::

    monitor = DynamicsFabricMonitor()
    fabric = Fabric(callbacks=[monitor], loggers=CSVLogger("runs"))
    model, optimizer = fabric.setup(model, optimizer)
    fabric.call("on_train_start", fabric=fabric, model=model)
    for epoch in range(epochs):
        for batch in loader:
            ...
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, step=step)
    fabric.call("on_train_end", fabric=fabric)

Values are logged with ``fabric.log_dict`` under ``<prefix>/`` and the history is saved by rank 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from lightning.fabric import Fabric
from lightning.fabric.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_dynamics.capture.layer_selection import LayerSelection
from lightning_dynamics.config import DynamicsConfig, check_finite_real, check_int
from lightning_dynamics.distributed import StoreRendezvous, process_group_timeout
from lightning_dynamics.tracker import DynamicsTracker

_HINT = (
    "Every process must run the same number of batches between sample points: shard the data with "
    "fabric.setup_dataloaders (a DistributedSampler) or give every process an iterable of the same length."
)


class DynamicsFabricMonitor:
    """Watch a Fabric training loop as a dynamical system; the same measures as :class:`DynamicsMonitor`.

    Args:
        layers, max_layers, summary, window, volatility_window, weights, detrend, pad, h_opt, sigma,
            compute_phase_integration, history_window, prefix, save_every_n_samples: as
            :class:`~lightning_dynamics.DynamicsMonitor`.
        every_n_steps: sample at ``on_train_batch_end(step=...)`` every this many steps instead of at
            ``on_train_epoch_end``.
        history_dir: where ``<prefix>_history.pt`` goes (default: the first logger's ``log_dir``, else the
            working directory); versioned ``-v1``, ... when the name exists.
        save_history: write the history file at ``on_train_end``.
        ddp_timeout: with several processes, seconds each waits for the others before a sample point's
            all-reduce, then fails with a :class:`~lightning_dynamics.DistributedMismatchError` instead of
            hanging; ``None`` for the strategy's process-group timeout. Processes that disagree on the epoch
            or step fail at once.
    """

    def __init__(
        self,
        layers: LayerSelection = "auto",
        max_layers: int | None = 64,
        summary: Literal["rms", "mean", "abs_mean", "std"] = "rms",
        every_n_steps: int | None = None,
        window: int = 16,
        volatility_window: int = 5,
        weights: tuple[float, float] = (0.5, 0.5),
        detrend: Literal["diff", "linear", "mean"] | None = "diff",
        pad: Literal["reflect"] | None = "reflect",
        h_opt: float = 0.70,
        sigma: float = 0.15,
        compute_phase_integration: bool = True,
        history_window: int | None = None,
        prefix: str = "dynamics",
        history_dir: str | Path | None = None,
        save_history: bool = True,
        save_every_n_samples: int | None = None,
        ddp_timeout: float | None = None,
    ) -> None:
        config = DynamicsConfig.from_arguments(locals())  # validates every measure setting
        self.tracker = DynamicsTracker(
            layers=layers,
            max_layers=max_layers,
            config=config,
            prefix=prefix,
            save_every_n_samples=save_every_n_samples,
            warn=rank_zero_warn,
            info=rank_zero_info,
        )
        self.every_n_steps = check_int("every_n_steps", every_n_steps, 1, allow_none=True)
        self.history_dir = history_dir
        self.save_history = save_history
        self._defined: set[str] = set()
        self._last_sample_step = -1
        self.ddp_timeout = None if ddp_timeout is None else check_finite_real("ddp_timeout", ddp_timeout, positive=True)
        self._rendezvous: StoreRendezvous | None = None

    @property
    def history_path(self) -> Path | None:
        return self.tracker.history_path

    def on_train_start(self, fabric: Fabric, model: nn.Module, **kwargs: Any) -> None:
        """Attach to ``model`` (a module returned by ``fabric.setup`` or the plain module)."""
        module = getattr(model, "module", model) if type(model).__name__ == "_FabricModule" else model
        self.tracker.attach(module, device=fabric.device)
        self._rendezvous = StoreRendezvous.for_default_group(
            namespace=self.tracker.prefix,
            timeout=self.ddp_timeout or process_group_timeout(fabric.strategy),
            owner=f"DynamicsFabricMonitor[{self.tracker.prefix}]",
        )
        if fabric.is_global_zero and self.save_history:
            directory = self.history_dir
            if directory is None:
                log_dir = getattr(fabric.logger, "log_dir", None) if fabric.loggers else None
                directory = log_dir or "."
            self.tracker.claim_history_path(directory)

    def on_train_batch_end(self, fabric: Fabric, step: int | None = None, epoch: int = 0, **kwargs: Any) -> None:
        """With ``every_n_steps``: pass the optimizer ``step`` count after each batch."""
        if self.every_n_steps and step is not None and step > 0 and step % self.every_n_steps == 0:
            if step != self._last_sample_step:
                self._last_sample_step = step
                self.sample(fabric, epoch=epoch, step=step)

    def on_train_epoch_end(self, fabric: Fabric, epoch: int, step: int | None = None, **kwargs: Any) -> None:
        """Close the epoch's sample interval (epoch sampling); ``step`` is recorded with the point."""
        if not self.every_n_steps:
            self.sample(fabric, epoch=epoch, step=epoch if step is None else step)

    def sample(self, fabric: Fabric, epoch: int, step: int, logged: dict[str, float] | None = None) -> dict[str, float]:
        """One sample point: all-reduce, measures, ``fabric.log_dict`` of the defined values."""

        def reduce(packed: Tensor) -> Tensor:
            if self._rendezvous is not None:  # all processes here, in step, or a clear error: never a hang
                self._rendezvous.agree(f"sample point {self.tracker.n_samples}", {"epoch": epoch, "step": step}, _HINT)
            reduced = fabric.all_reduce(packed, reduce_op="sum")
            assert isinstance(reduced, Tensor)
            return reduced

        values = self.tracker.sample(epoch, step, reduce=reduce, logged=logged)
        out = {}
        for key, value in values.items():
            if math.isnan(value) and key not in self._defined:
                continue
            self._defined.add(key)
            out[f"{self.tracker.prefix}/{key}"] = value
        if out and fabric.loggers:
            fabric.log_dict(out, step=step)
        return values

    def on_train_end(self, fabric: Fabric, **kwargs: Any) -> None:
        """Remove the hooks and save the history (rank 0)."""
        self.tracker.detach()
        self._rendezvous = None
        if self.save_history and fabric.is_global_zero:
            path = self.tracker.save()
            if path is not None:
                rank_zero_info(f"DynamicsFabricMonitor: history of {self.tracker.n_samples} points saved to {path}")

    def state_dict(self) -> dict[str, Any]:
        """For ``fabric.save(path, {"dynamics": monitor.state_dict(), ...})``."""
        state = self.tracker.state_dict()
        if state:
            state["every_n_steps"] = self.every_n_steps
            state["defined"] = sorted(self._defined)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if state.get("every_n_steps") != self.every_n_steps:
            raise ValueError(
                f"DynamicsFabricMonitor: the state was recorded with every_n_steps={state.get('every_n_steps')!r}, "
                f"this monitor samples with every_n_steps={self.every_n_steps!r}."
            )
        self._defined = set(state.get("defined", []))
        self.tracker.load_state_dict(state)
