"""LyapunovMonitor: the maximum Lyapunov exponent of training, from a twin trajectory (docs/method.md section 9)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_dynamics.callbacks.keys import full_key
from lightning_dynamics.decisions.lyapunov import DEFAULT_D0, DEFAULT_RENORM_EVERY, TwinTrajectory, check_duty
from lightning_dynamics.validation import ANY_DICT, ListOf, Real, check_choice, check_state

LossFn = Callable[[pl.LightningModule, Any, int], Tensor]


DUTY_UNITS = ("step", "epoch")


class LyapunovMonitor(Callback):
    r"""Log the maximum Lyapunov exponent of training, :math:`\lambda` per optimizer step, as ``<prefix>/lyapunov``.

    A shadow copy of the trained parameters, buffers and optimizer state starts at relative distance ``d0``
    from the real run, takes an optimizer step on every batch the real run trains on, and is pulled back to
    ``d0`` relative to the current scale every ``renorm_every`` steps (Benettin renormalisation of the whole
    state, weights and optimizer state alike, :class:`~lightning_dynamics.decisions.lyapunov.TwinTrajectory`,
    docs/method.md section 9). :math:`\lambda` is the least-squares slope of the cumulative log-growth
    :math:`G(t) = \sum_j \ln(d_j / d_{start})` against the optimizer step:

    .. math:: \lambda = \text{slope of } G(t) \text{ against } t\quad\text{(per optimizer step; per epoch: times
              the steps per epoch)}

    :math:`\lambda < 0`: nearby runs converge (stable training); :math:`\lambda > 0`: they separate
    exponentially (chaotic training, found at large learning rates by Danovski, Soriano & Lacasa,
    arXiv:2404.05782). Unlike arXiv:2404.05782 and arXiv:2506.08523 (a second run from an epsilon-ball around the
    initialisation, L1 distance of the weights, no renormalisation, full batch), the pair here sees the same
    mini-batches, the distance includes the optimizer state, and the separation is renormalised, so the value is
    the exponent of the stochastic training map along the real run, not a saturating distance.

    **Under adaptive optimizers (Adam, AdamW, RMSprop) the sign does not mean stable or chaotic.** Adam divides
    each update by a running root mean square of the gradients, so two nearby states whose gradients are small and
    differ get updates of full size in different directions: separations grow in healthy runs too. On the digits
    CNN a healthy run (Adam, lr 3e-3) logged about +0.33 per step, and a dead one (lr 6e-2, accuracy at chance) about
    0: nothing moves, so nothing separates. Read it, under Adam, as how strongly the optimizer amplifies small
    differences along this run, to compare runs with the same optimizer; not as a learning-rate verdict. The
    closed forms and the learning-rate sweeps of ``benchmarks/lyapunov.md`` are for SGD (with and without momentum).
    Exact on linear maps: for the loss :math:`\tfrac12\sum_i a_i w_i^2` under SGD the logged value is within 5% of
    :math:`\max_i \ln|1 - \eta a_i|` after 30 steps (also where it is positive), and with momentum ``m`` of the log
    spectral radius of :math:`[[1 + m - \eta a, -m], [1, 0]]` (tests/callbacks/test_lyapunov.py).

    The running estimate since the start of fit is logged at the end of every training epoch (``on_epoch``)
    once two renormalisations exist; :attr:`epoch_exponents` holds each epoch's own (NaN for an epoch without a
    window).

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

    Cost (measured in ``benchmarks/lyapunov.md``): one more copy of the parameters, buffers and optimizer state;
    one more forward, backward and optimizer step per training step while the twin runs. The duty cycle
    (``duty_on`` of every ``duty_period`` steps or epochs) runs the twin part of the time only, re-seeded from the
    real run (plus ``d0`` along the last separation) at each window start. Off unless added to the Trainer's
    callbacks.

    Limits: automatic optimization with one optimizer and ``accumulate_grad_batches=1``; an error says so
    otherwise. fp16 loss scaling is not applied to the shadow's backward.

    Args:
        d0: the separation after each renormalisation, relative to the current size of the largest block of the
            state (weights, each optimizer-state field), in (0, 1). 1e-3: at 1e-4 float32 rounding already adds
            +7e-5 per step on a digits MLP (benchmarks/lyapunov.md).
        renorm_every: optimizer steps between renormalisations (an integer >= 1).
        prefix: logged key prefix (a non-empty name without '/').
        loss_fn: ``(pl_module, batch, batch_idx) -> loss``, instead of calling ``training_step``.
        seed: seed of the first separation direction (an integer in [0, 2**63 - 1]).
        duty_on: with ``duty_period``, the twin runs ``duty_on`` of every ``duty_period`` steps or epochs (both None:
            always on).
        duty_period: see ``duty_on``.
        duty_unit: ``"step"`` (optimizer steps) or ``"epoch"`` (training epochs), the unit of the duty cycle.
        warmup: optimizer steps at the start of each window (and of the run) that the twin runs but leaves out of
            the estimate while its separation turns towards the fastest-growing direction (an integer >= 0; with
            step duty cycles, < ``duty_on``). On a digits MLP, a warm-up of 44 in 88-step windows moved the duty
            cycle's error from -25%..-34% to -11%..+14%; in windows of 22-44 steps it did not help
            (benchmarks/lyapunov.md).

    Example:
        >>> monitor = LyapunovMonitor(d0=1e-3, renorm_every=1)
        >>> monitor.key
        'dynamics/lyapunov'
        >>> LyapunovMonitor(seed=1.5)
        Traceback (most recent call last):
        ...
        ValueError: `seed` must be an integer >= 0, got 1.5.
    """

    def __init__(
        self,
        d0: float = DEFAULT_D0,
        renorm_every: int = DEFAULT_RENORM_EVERY,
        prefix: str = "dynamics",
        loss_fn: LossFn | None = None,
        seed: int = 0,
        duty_on: int | None = None,
        duty_period: int | None = None,
        duty_unit: Literal["step", "epoch"] = "step",
        warmup: int = 0,
    ) -> None:
        super().__init__()
        self._key = full_key("lyapunov", prefix)  # validates the prefix as every callback of the package does
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"`loss_fn` must be callable (pl_module, batch, batch_idx) -> loss, got {loss_fn!r}.")
        check_choice("duty_unit", duty_unit, DUTY_UNITS)
        duty_on, duty_period = check_duty(duty_on, duty_period)
        step_duty = duty_unit == "step"
        self.twin = TwinTrajectory(
            d0=d0,
            renorm_every=renorm_every,
            seed=seed,
            duty_on=duty_on if step_duty else None,
            duty_period=duty_period if step_duty else None,
            warmup=warmup,
        )
        self.prefix = prefix
        self.loss_fn = loss_fn
        self.duty_on, self.duty_period, self.duty_unit = duty_on, duty_period, duty_unit
        self.epoch_exponents: list[float] = []
        self._rng_before_step: list[Tensor] | None = None
        self._trainable_shapes: list[tuple[int, ...]] | None = None

    @property
    def key(self) -> str:
        return self._key

    @property
    def exponent(self) -> float:
        r"""Running estimate of :math:`\lambda` per optimizer step (NaN before two renormalisations)."""
        return self.twin.exponent

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            prefix=self.prefix,
            d0=self.twin.d0,
            renorm_every=self.twin.renorm_every,
            duty=(self.duty_on, self.duty_period, self.duty_unit),
        )

    def _epoch_scheduled(self, epoch: int) -> bool:
        if self.duty_unit != "epoch" or self.duty_on is None or self.duty_period is None:
            return True
        return epoch % self.duty_period < self.duty_on

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
        # Known before a checkpoint's callback state is restored: lets load_state_dict check the shadow's shapes.
        self._trainable_shapes = sorted(tuple(p.shape) for p in pl_module.parameters() if p.requires_grad)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise RuntimeError(f"LyapunovMonitor supports exactly one optimizer, got {len(trainer.optimizers)}.")
        self.twin.attach(pl_module, trainer.optimizers[0])

    # -- the step -------------------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.duty_unit == "epoch":
            if self._epoch_scheduled(trainer.current_epoch):
                self.twin.start_window()  # no-op while one is open
            else:
                self.twin.end_window()
        self.twin.mark()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._rng_before_step = _rng_state(pl_module.device) if self.twin.running else None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if outputs is None:  # training_step returned None: the real run skipped this optimizer step
            return
        if not self.twin.running:
            self.twin.step(_never_called)  # counts the step for the duty schedule; the closure is not called
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
        self.epoch_exponents.append(self.twin.exponent_since_mark)
        if math.isfinite(self.twin.exponent) and not trainer.sanity_checking:
            pl_module.log(self.key, self.twin.exponent, on_step=False, on_epoch=True)

    # -- persistence ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"twin": self.twin.state_dict(), "epoch_exponents": list(self.epoch_exponents)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: every field is checked here, at restore (a ValueError naming the field)."""
        if not state_dict:
            return
        schema = {"twin": ANY_DICT, "epoch_exponents": ListOf(Real(nan=True, neg_inf=True, pos_inf=True))}
        twin_state, epochs = check_state(state_dict, schema, "The LyapunovMonitor state").values()
        twin = TwinTrajectory(**self.twin.settings, sync_gradients=self.twin.sync_gradients)
        twin.load_state_dict(twin_state)  # raises, naming the field, before anything here changes
        shapes = sorted(twin.trainable_shapes())
        if self._trainable_shapes is not None and shapes and shapes != self._trainable_shapes:
            raise ValueError(
                f"`twin.shadow_params` holds parameters of shapes {shapes}; the model trains {self._trainable_shapes}."
            )
        self.twin = twin
        self.epoch_exponents = [float(v) for v in epochs]


def _never_called() -> Tensor:
    raise AssertionError("the twin trajectory called its loss closure outside a window")


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
