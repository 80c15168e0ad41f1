"""LyapunovMonitor: the maximum Lyapunov exponent of training, from a twin trajectory (docs/method.md section 9)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_dynamics.twin_trajectory import DEFAULT_D0, DEFAULT_RENORM_EVERY, TwinTrajectory

LossFn = Callable[[pl.LightningModule, Any, int], Tensor]


class LyapunovMonitor(Callback):
    r"""Log the maximum Lyapunov exponent of training, :math:`\lambda`, as ``<prefix>/lyapunov``.

    A shadow copy of the trained parameters, buffers and optimizer state starts at relative distance ``d0``
    from the real run, takes an optimizer step on every batch the real run trains on, and is pulled back to
    ``d0`` every ``renorm_every`` steps (Benettin renormalisation, :class:`~lightning_dynamics.twin_trajectory.
    TwinTrajectory`):

    .. math:: \lambda = \frac{1}{t}\sum_j \ln\frac{d(jk)}{d_0}\quad\text{per optimizer step}

    :math:`\lambda < 0`: nearby runs converge (stable training); :math:`\lambda > 0`: they separate
    exponentially (chaotic training, found at large learning rates by Danovski, Soriano & Lacasa,
    arXiv:2404.05782). The running estimate since the start of fit is logged at the end of every training
    epoch (``on_epoch``), once a renormalisation has happened; :attr:`epoch_exponents` holds each epoch's own.

    How the shadow gets the loss of the same batch: by default the callback calls the user's own
    ``pl_module.training_step(batch, batch_idx)`` after the real optimizer step, with the shadow's weights,
    buffers and optimizer state swapped into the module and the optimizer (a swap of tensor storage, so
    any code path of ``training_step`` and ``forward`` runs unchanged), with ``self.log`` silenced, inside
    the precision plugin's training context, and with the random-number state the real step started from
    (the same dropout masks). This is more robust than ``torch.func.functional_call``, which replaces the
    parameters of ``forward`` only and misses a loss computed in ``training_step``; a ``loss_fn(pl_module,
    batch, batch_idx) -> loss`` can be given instead when ``training_step`` has side effects that must not
    run twice. The shadow's step uses the same optimizer object (same hyper-parameters and learning-rate
    schedule), Lightning's gradient clipping settings, and, under DDP, gradients averaged across processes
    so that every rank keeps the same shadow and logs the same :math:`\lambda`.

    Cost (stated in :class:`~lightning_dynamics.twin_trajectory.TwinTrajectory`, measured in
    ``benchmarks/README.md``): one more copy of the parameters, buffers and optimizer state; one more
    forward, backward and optimizer step per training step (about twice the training time). Off unless
    added to the Trainer's callbacks.

    Limits: automatic optimization with one optimizer and ``accumulate_grad_batches=1``; an error says so
    otherwise. fp16 loss scaling is not applied to the shadow's backward.

    Args:
        d0: initial and renormalised distance, relative to the norm of the weights at the start of fit (1e-4:
            smaller values measure float32 rounding, see :class:`~lightning_dynamics.twin_trajectory.TwinTrajectory`).
        renorm_every: optimizer steps between renormalisations.
        prefix: logged key prefix.
        loss_fn: ``(pl_module, batch, batch_idx) -> loss``, instead of calling ``training_step``.
        seed: seed of the initial separation direction.

    Example:
        >>> monitor = LyapunovMonitor(d0=1e-4, renorm_every=1)
        >>> monitor.key
        'dynamics/lyapunov'
    """

    def __init__(
        self,
        d0: float = DEFAULT_D0,
        renorm_every: int = DEFAULT_RENORM_EVERY,
        prefix: str = "dynamics",
        loss_fn: LossFn | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(prefix, str):
            raise ValueError(f"`prefix` must be a string, got {prefix!r}.")
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"`loss_fn` must be callable (pl_module, batch, batch_idx) -> loss, got {loss_fn!r}.")
        self.twin = TwinTrajectory(d0=d0, renorm_every=renorm_every, seed=seed)
        self.prefix = prefix
        self.loss_fn = loss_fn
        self.epoch_exponents: list[float] = []
        self._epoch_start = (0.0, 0)
        self._rng_before_step: list[Tensor] | None = None
        self._pending_state: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.prefix}/lyapunov" if self.prefix else "lyapunov"

    @property
    def exponent(self) -> float:
        """Running estimate of :math:`\\lambda` per optimizer step (NaN before the first renormalisation)."""
        return self.twin.exponent

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix, d0=self.twin.d0, renorm_every=self.twin.renorm_every)

    # -- set-up ---------------------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not pl_module.automatic_optimization:
            raise RuntimeError(
                "LyapunovMonitor needs automatic optimization (the shadow repeats the optimizer step Lightning "
                "takes); this LightningModule sets `automatic_optimization = False`."
            )
        if trainer.accumulate_grad_batches != 1:
            raise RuntimeError(
                f"LyapunovMonitor needs accumulate_grad_batches=1 (one optimizer step per batch), got "
                f"{trainer.accumulate_grad_batches}."
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise RuntimeError(f"LyapunovMonitor supports exactly one optimizer, got {len(trainer.optimizers)}.")
        if self._pending_state is not None:
            self.twin.load_state_dict(self._pending_state["twin"])
            self._pending_state = None
        self.twin.attach(pl_module, trainer.optimizers[0])

    # -- the step -------------------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = (self.twin.sum_log_growth, self.twin.steps)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._rng_before_step = _rng_state(pl_module.device)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if outputs is None:  # training_step returned None: the real run skipped this optimizer step
            return

        def loss() -> Tensor:
            with trainer.precision_plugin.train_step_context():
                if self.loss_fn is not None:
                    return self.loss_fn(pl_module, batch, batch_idx)
                with _silenced_logging(pl_module):
                    out = pl_module.training_step(batch, batch_idx)
                value = out["loss"] if isinstance(out, Mapping) else out
                if not isinstance(value, Tensor):
                    raise TypeError(
                        f"LyapunovMonitor needs training_step to return the loss (a tensor or a dict with 'loss'), "
                        f"got {type(value).__name__}; pass `loss_fn=` instead."
                    )
                return value

        def clip(optimizer: torch.optim.Optimizer) -> None:
            pl_module.configure_gradient_clipping(
                optimizer,
                gradient_clip_val=trainer.gradient_clip_val,
                gradient_clip_algorithm=trainer.gradient_clip_algorithm,
            )

        after = _rng_state(pl_module.device)
        if self._rng_before_step is not None:
            _set_rng_state(self._rng_before_step, pl_module.device)
        try:
            self.twin.step(loss, before_optimizer_step=clip)
        finally:
            _set_rng_state(after, pl_module.device)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total, steps = self.twin.sum_log_growth - self._epoch_start[0], self.twin.steps - self._epoch_start[1]
        self.epoch_exponents.append(total / steps if steps else math.nan)
        if self.twin.steps and not trainer.sanity_checking:
            pl_module.log(self.key, self.twin.exponent, on_step=False, on_epoch=True)

    # -- persistence ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"twin": self.twin.state_dict(), "epoch_exponents": list(self.epoch_exponents)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self.epoch_exponents = list(state_dict.get("epoch_exponents", []))
        self._pending_state = dict(state_dict)  # applied in on_fit_start, once the optimizer exists


@contextmanager
def _silenced_logging(pl_module: pl.LightningModule) -> Iterator[None]:
    """``self.log`` and ``self.log_dict`` do nothing while the shadow runs ``training_step``."""

    def _no_log(*args: Any, **kwargs: Any) -> None:
        return None

    pl_module.__dict__["log"] = _no_log
    pl_module.__dict__["log_dict"] = _no_log
    try:
        yield
    finally:
        del pl_module.__dict__["log"]
        del pl_module.__dict__["log_dict"]


def _rng_state(device: torch.device) -> list[Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_state(states: Sequence[Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)
