"""Twin-trajectory (Benettin) estimate of the maximum Lyapunov exponent of training (no Lightning import).

Training maps the state (weights and optimizer state) at step t to the state at step t + 1; its maximum
Lyapunov exponent says whether two nearby runs that see the same batches converge (:math:`\\lambda < 0`,
stable training) or separate exponentially (:math:`\\lambda > 0`, chaotic training). Danovski, Soriano &
Lacasa, arXiv:2404.05782, find it turns positive at large learning rates under SGD. Under adaptive optimizers
(Adam) a positive exponent is no sign of chaos: the update is normalised per parameter, so small separations grow
in healthy runs too, and a dead run (nothing moves) reads about 0 (see
:class:`~lightning_dynamics.callbacks.lyapunov.LyapunovMonitor`). docs/method.md section 9:

.. code-block:: python

    twin = TwinTrajectory(d0=1e-3, renorm_every=1).attach(model, optimizer)
    for batch in loader:
        loss = loss_fn(model, batch); loss.backward(); optimizer.step(); optimizer.zero_grad()
        twin.step(lambda: loss_fn(model, batch))  # the same batch, on the shadow's weights
    twin.exponent  # lambda per optimizer step

The shadow is one more copy of the trained parameters, of the module's buffers and of the optimizer's
per-parameter state. Its step swaps these into the real model and optimizer, runs the loss closure,
backward and ``optimizer.step()`` (the same optimizer object: same hyper-parameters, same learning-rate
schedule, any optimizer whose state can be deep-copied), then swaps back: the real run is left exactly
as it was (its gradients, buffers, optimizer state and random-number streams).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeGuard

import torch
from torch import Tensor, nn

from lightning_dynamics.capture.hooks import side_forward
from lightning_dynamics.validation import (
    ANY_DICT,
    Bool,
    Constrained,
    DictOf,
    Equals,
    Int,
    ListOf,
    OrNone,
    Real,
    StateSchema,
    TensorOf,
    check_bool,
    check_finite_real,
    check_int,
    check_state,
    field_error,
)

# Relative separation kept at every renormalisation. Float32 rounding adds spurious growth that falls as d0 grows:
# on digits (benchmarks/lyapunov.md, SmallMLP, plain SGD, 20 epochs) lambda at lr 0.01 was 1.1e-4 in float64
# (d0 = 1e-4) and with float32 at d0 = 1e-3 (within 3e-6, seeds 0-4), but 1.8e-4 with float32 at d0 = 1e-4 (a
# +7e-5 bias, 60% of lambda; +3e-5 at lr 0.1) and 0.016 against 0.0024 at lr 0.1 with d0 = 1e-6. 1e-3 is still in
# the linear regime there (it agrees with float64 at 1e-4) and out of the rounding.
DEFAULT_D0 = 1e-3
DEFAULT_RENORM_EVERY = 1
WEIGHTS = "weights"  # the name of the parameters' block in the separation metric
_MAX_SEED = 2**63 - 1
# Optimizer-state fields that are non-negative by construction (running sums and averages of squares, Adamax's
# infinity norm): a renormalised shadow keeps them non-negative.
_SETTINGS = ("d0", "renorm_every", "seed", "duty_on", "duty_period", "warmup")  # a saved state must match them
_COUNTS = ("steps", "pending", "real_steps", "window_steps")  # the step counts of a state, checked together
NON_NEGATIVE_STATE = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta", "exp_inf"})


def check_duty(duty_on: Any, duty_period: Any) -> tuple[int | None, int | None]:
    """Validate a duty cycle: both None (always on), or integers ``1 <= duty_on <= duty_period``.

    Example:
        >>> check_duty(2, 10), check_duty(None, None)
        ((2, 10), (None, None))
        >>> check_duty(3, 2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `duty_on` must be <= `duty_period` (the twin runs duty_on of every duty_period), got ...
    """
    if duty_on is None and duty_period is None:
        return None, None
    if duty_on is None or duty_period is None:
        raise ValueError(
            f"`duty_on` and `duty_period` must be given together (or both None: always on), got duty_on={duty_on!r}, "
            f"duty_period={duty_period!r}."
        )
    on = check_int("duty_on", duty_on, 1)
    period = check_int("duty_period", duty_period, 1)
    assert on is not None and period is not None
    if on > period:
        raise ValueError(
            "`duty_on` must be <= `duty_period` (the twin runs duty_on of every duty_period), "
            f"got duty_on={on}, duty_period={period}."
        )
    return on, period


def check_d0(d0: Any) -> float:
    """``d0`` as a relative distance in (0, 1); a ValueError naming it otherwise."""
    value = check_finite_real("d0", d0, positive=True)
    assert value is not None
    if value >= 1:
        raise ValueError(f"`d0` must be a relative distance in (0, 1), got {d0!r}.")
    return value


def min_d0(dtype: torch.dtype) -> float:
    """The smallest ``d0`` a computation in ``dtype`` resolves: its machine epsilon (bfloat16 ``2**-7``, float16
    ``2**-10``, float32 ``2**-23``).

    A relative separation below it is rounded away in every product of the forward and backward pass, and the
    twin measures rounding noise (``benchmarks/lyapunov_dense.py``: an MLP under CPU bfloat16 autocast, docs/method.md
    section 9). Float32 needs ``d0`` far above its epsilon (``1e-4`` already biases ``lambda`` upward on digits),
    which is why the default is ``1e-3``.

    Example:
        >>> min_d0(torch.bfloat16), min_d0(torch.float32) < 1e-6
        (0.0078125, True)
    """
    return float(torch.finfo(dtype).eps)


def check_d0_resolution(d0: float, dtype: torch.dtype, where: str) -> None:
    """A ValueError when ``d0`` is below :func:`min_d0` of ``dtype`` (naming ``where`` that dtype comes from)."""
    floor = min_d0(dtype)
    if d0 < floor:
        raise ValueError(
            f"`d0` must be >= {floor:.3g}, the resolution of {dtype} ({where}), got {d0!r}: a smaller separation is "
            "rounded away and the twin measures rounding noise. Pass a larger d0 (e.g. 1e-2 for bfloat16)."
        )


def check_seed(seed: Any) -> int:
    """``seed`` as an integer in [0, 2**63 - 1]; a ValueError naming it otherwise."""
    value = check_int("seed", seed, 0)
    assert value is not None
    if value > _MAX_SEED:
        raise ValueError(f"`seed` must be an integer in [0, 2**63 - 1], got {seed!r}.")
    return value


class PooledSlope:
    r"""Least-squares slope of ``y`` on ``x``, pooled over segments that each have their own intercept.

    .. math:: \hat\lambda = \frac{\sum_s \sum_{j \in s} (x_j - \bar x_s)(y_j - \bar y_s)}
                                 {\sum_s \sum_{j \in s} (x_j - \bar x_s)^2}

    (the within-segment, "fixed effects" slope), with Welford updates: O(1) memory over any run length.

    Example:
        >>> fit = PooledSlope()
        >>> for x in range(4):
        ...     fit.add(x, 2.0 * x + 1.0)
        >>> fit.close()
        >>> for x in range(3):
        ...     fit.add(x, 2.0 * x - 5.0)
        >>> fit.slope
        2.0
    """

    #: Its state, as :meth:`state_dict` writes it: the sums of squares are never negative.
    STATE = StateSchema(
        {
            "closed_sxx": Real(minimum=0.0),
            "closed_sxy": Real(),
            "n": Int(0),
            "mean_x": Real(),
            "mean_y": Real(),
            "sxx": Real(minimum=0.0),
            "sxy": Real(),
        }
    )

    def __init__(self) -> None:
        self.closed_sxx = self.closed_sxy = 0.0
        self.n = 0
        self.mean_x = self.mean_y = self.sxx = self.sxy = 0.0

    def add(self, x: float, y: float) -> None:
        """Add the point ``(x, y)`` to the current segment."""
        self.n += 1
        dx = x - self.mean_x
        self.mean_x += dx / self.n
        self.mean_y += (y - self.mean_y) / self.n
        self.sxx += dx * (x - self.mean_x)
        self.sxy += dx * (y - self.mean_y)

    def close(self) -> None:
        """End the current segment; the next point starts a new one with its own intercept."""
        self.closed_sxx += self.sxx
        self.closed_sxy += self.sxy
        self.n = 0
        self.mean_x = self.mean_y = self.sxx = self.sxy = 0.0

    @property
    def slope(self) -> float:
        """The pooled slope; NaN until some segment holds two distinct ``x``."""
        sxx = self.closed_sxx + self.sxx
        return (self.closed_sxy + self.sxy) / sxx if sxx > 0 else math.nan

    def state_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.STATE.fields}

    def load_state_dict(self, state: Any, name: str, where: str = "the saved twin trajectory state") -> None:
        """Restore :meth:`state_dict`; a ValueError naming ``name.<field>`` for a missing or invalid field."""
        for field, value in check_state(state, self.STATE, where, field=name).items():
            setattr(self, field, value)


class TwinTrajectory:
    r"""A shadow copy of a training run at a small distance, renormalised every ``renorm_every`` steps.

    **The state and its separation.** The state that training evolves is the weights *and* the optimizer's
    per-parameter state (momentum buffers, Adam's moments; every floating tensor of the parameter's shape).
    The shadow is a perturbed copy of all of it: its optimizer state is its own, evolved by the shadow's own
    steps, and its separation from the real state is measured and renormalised as a whole. (Re-synchronising
    the shadow's optimizer state at each renormalisation would be wrong: with momentum ``m`` it turns the
    map's spectral radius into ``|1 - lr a|``, e.g. ``ln 0.9`` instead of ``ln sqrt(0.9)``.) The distance is

    .. math:: d = \Big(\|\delta w\|_2^2 + \sum_f \kappa_f^2 \|\delta s_f\|_2^2\Big)^{1/2}, \qquad
              \kappa_f = \frac{\|w\|_2}{\|s_f\|_2}\ \text{(real run, frozen when the window starts or } f
              \text{ first appears)},

    one block per state field ``f`` (``"momentum_buffer"``, ``"exp_avg"``, ``"exp_avg_sq"``, ...) in the units of
    the weights. The metric is fixed while a window lasts, so the log-growths of a linear map telescope exactly
    (a metric that changed with the run's scales would add a bias of the size of their per-step changes).

    **Benettin renormalisation** (Benettin et al. 1980, Meccanica 15:9). Every ``k = renorm_every`` optimizer
    steps, :math:`g_j = \ln(d / d_{\mathrm{start}})` is recorded and the whole separation (weights, optimizer
    state, floating buffers) is scaled along itself so that its largest block, relative to the *current*
    size of that block in the real run (:math:`\max(\|\delta w\|/\|w\|, \max_f \|\delta s_f\|/\|s_f\|)`), is
    ``d0``. Relative to the current scale, the separation stays ``d0 / 6e-8`` above float32 rounding when the
    weights grow or shrink by orders of magnitude (a separation fixed at the start falls below float32
    resolution once the weights grow: that bug gave -0.06 for a true ``ln 2``). The state fields that are
    non-negative by construction (``NON_NEGATIVE_STATE``: Adam's second moment, RMSprop's and Adagrad's sums)
    stay non-negative.

    **The estimate** is the least-squares slope of the cumulative log-growth :math:`G(t) = \sum_{j} g_j` against
    the optimizer step :math:`t`, pooled over windows with one intercept per window:

    .. math:: \lambda = \text{slope of } G(t) \text{ against } t \quad \text{(per optimizer step)}

    For a linear map :math:`G(t) = \lambda t + c + o(1)` exactly; the slope drops the constant ``c`` (the share
    of the starting direction on the leading mode) that biases the plain mean :math:`G(t)/t` by ``c / t``, and
    averages down the bounded oscillation of a rotating separation (complex eigenvalues, e.g. momentum).
    :attr:`mean_exponent` keeps the plain mean. Units: per optimizer step; per epoch = per step x steps per epoch.

    **Differences from arXiv:2404.05782 and arXiv:2506.08523**: they start a second run in an epsilon-ball
    around the *initialisation*, measure the L1 distance of the weights (no optimizer state), never
    renormalise (the distance saturates once it is no longer small) and train full-batch. Here the pair sees the
    same mini-batches, the separation is renormalised, includes the optimizer state and uses the L2 metric
    above; the exponent is the one of the stochastic training map along the real run.

    **Duty cycle** (``duty_on`` of every ``duty_period`` optimizer steps): outside its windows the shadow takes no
    step (the loss closure is not called: no cost but a counter). At each window start it is re-seeded from the
    real run's current state plus ``d0`` along the separation the previous window ended with (a random
    direction the first time), which is close to the leading direction and shortens the transient. The first
    ``warmup`` shadow steps of each window (and of the run) are left out of the estimate: a fresh separation
    needs them to turn towards the fastest-growing direction, and short windows without a warm-up underestimate
    :math:`\lambda` (benchmarks/lyapunov.md).

    Cost: memory of one more copy of the trained parameters, the buffers and the optimizer state (about
    1x the parameters for SGD, 2x with momentum, 3x for Adam/AdamW), plus the shadow's gradients while it
    steps; compute of one more forward, backward and optimizer step per training step while on, plus a few passes
    over the parameters and optimizer state at each renormalisation.

    Under data parallelism (``torch.distributed`` initialised, world size > 1) the shadow's gradients are
    averaged across processes, as the real model's are by DDP, so every process keeps the same shadow and
    the same estimate.

    Args:
        d0: the separation after each renormalisation, relative to the current size of the largest block, in (0, 1).
        renorm_every: optimizer steps between renormalisations (>= 1).
        seed: seed of the first separation direction (an integer in [0, 2**63 - 1]).
        sync_gradients: average the shadow's gradients across processes when ``torch.distributed`` runs.
        duty_on: with ``duty_period``, the twin runs ``duty_on`` of every ``duty_period`` optimizer steps
            (both None: always on).
        duty_period: see ``duty_on``.
        warmup: shadow steps at the start of each window (and of the run) that run but are left out of the
            estimate, while the separation turns towards the fastest-growing direction (an integer >= 0).

    Example:
        >>> import torch
        >>> a = torch.tensor([0.5, 1.0, 2.0, 30.0])
        >>> w = torch.nn.Parameter(torch.ones(4))
        >>> optimizer = torch.optim.SGD([w], lr=0.1)
        >>> loss = lambda: 0.5 * (a * w.square()).sum()
        >>> twin = TwinTrajectory().attach(torch.nn.Module(), optimizer)
        >>> for _ in range(60):
        ...     optimizer.zero_grad()
        ...     loss().backward()
        ...     optimizer.step()
        ...     _ = twin.step(loss)
        >>> round(twin.exponent, 2)  # max ln|1 - lr a_i| = ln 2 = 0.693: the step along a = 30 overshoots and grows
        0.69
    """

    def __init__(
        self,
        d0: float = DEFAULT_D0,
        renorm_every: int = DEFAULT_RENORM_EVERY,
        seed: int = 0,
        sync_gradients: bool = True,
        duty_on: int | None = None,
        duty_period: int | None = None,
        warmup: int = 0,
    ) -> None:
        self.d0 = check_d0(d0)
        renorm = check_int("renorm_every", renorm_every, 1)
        assert renorm is not None
        self.renorm_every = renorm
        self.seed = check_seed(seed)
        check_bool("sync_gradients", sync_gradients)
        self.sync_gradients = sync_gradients
        self.duty_on, self.duty_period = check_duty(duty_on, duty_period)
        warm = check_int("warmup", warmup, 0)
        assert warm is not None
        if self.duty_on is not None and warm >= self.duty_on:
            raise ValueError(
                f"`warmup` must be < `duty_on` (steps left to measure), got warmup={warm}, duty_on={duty_on}."
            )
        self.warmup = warm
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._autocast_checked = False  # the compute dtype of the first shadow forward was checked against d0
        self.running = False  # a window is open: the shadow exists and steps
        self.shadow_params: list[Tensor] = []
        self.shadow_buffers: list[Tensor] = []
        self.shadow_state: list[dict[str, Any]] = []
        # Between windows: the separation the last window ended with (weights, buffers, state), or None.
        self.direction: dict[str, list[Any]] | None = None
        self.kappa: dict[str, float] = {}  # metric weight of each optimizer-state field, frozen per window
        self.separation0 = math.nan  # metric distance right after the last renormalisation
        self.real_steps = 0  # calls of step(): the real run's optimizer steps since attach
        self.restarts = 0  # random directions drawn so far
        self.window_steps = 0  # shadow steps counted in the current window
        self.window_log_growth = 0.0  # their cumulative log-growth
        self.sum_log_growth = 0.0
        self.steps = 0  # optimizer steps covered by the recorded renormalisations
        self.pending = 0  # shadow steps since the last renormalisation
        self.log_growth: list[float] = []  # ln(d / d_start) at each renormalisation
        self.fit = PooledSlope()  # G(t) against t, over the run
        self.fit_since_mark = PooledSlope()  # the same since mark()

    # -- set-up ---------------------------------------------------------------------------------------------

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> TwinTrajectory:
        """Bind to ``model`` and ``optimizer``; open a window now if the schedule says so (and none is loaded)."""
        self.model, self.optimizer = model, optimizer
        params = self._params()
        if not params:
            raise ValueError("The optimizer holds no parameters that require gradients: nothing to perturb.")
        for dtype in sorted({p.dtype for p in params if p.is_floating_point()}, key=str):
            check_d0_resolution(self.d0, dtype, "the dtype of the trained parameters")
        self._autocast_checked = False
        if self.running or self.direction is not None:
            self._check_loaded(params)
        if not self.running and self._scheduled(self.real_steps):
            self.start_window()
        return self

    def _scheduled(self, step: int) -> bool:
        if self.duty_on is None or self.duty_period is None:
            return True
        return step % self.duty_period < self.duty_on

    def _params(self) -> list[Tensor]:
        assert self.optimizer is not None, "call attach(model, optimizer) first"
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.requires_grad]

    def _buffers(self) -> list[Tensor]:
        assert self.model is not None, "call attach(model, optimizer) first"
        return list(self.model.buffers())

    def _real_states(self, params: list[Tensor]) -> list[dict[str, Any]]:
        assert self.optimizer is not None, "call attach(model, optimizer) first"
        return [self.optimizer.state.get(p, {}) for p in params]

    def _check_loaded(self, params: list[Tensor]) -> None:
        shapes = [tuple(p.shape) for p in params]
        tensors = self.shadow_params if self.running else (self.direction or {}).get("params", [])
        loaded = [tuple(s.shape) for s in tensors]
        if shapes != loaded:
            raise ValueError(f"The loaded shadow holds parameters of shapes {loaded}, the optimizer {shapes}.")
        buffers = self._buffers()
        loaded_buffers = self.shadow_buffers if self.running else (self.direction or {}).get("buffers", [])
        if len(loaded_buffers) != len(buffers):
            raise ValueError(f"The loaded shadow holds {len(loaded_buffers)} buffers, the model {len(buffers)}.")
        moved_params = [s.to(device=p.device, dtype=p.dtype) for s, p in zip(tensors, params, strict=True)]
        moved_buffers: list[Any] = [
            s if s is None else s.to(b.device) for s, b in zip(loaded_buffers, buffers, strict=True)
        ]
        states = self.shadow_state if self.running else (self.direction or {}).get("state", [])
        moved_states = [_to_device(state, p.device) for state, p in zip(states, params, strict=True)]
        if self.running:
            self.shadow_params, self.shadow_buffers, self.shadow_state = moved_params, moved_buffers, moved_states
        else:
            self.direction = {"params": moved_params, "buffers": moved_buffers, "state": moved_states}

    # -- windows --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def start_window(self) -> None:
        """Re-seed the shadow from the real run's current state plus ``d0`` along the last separation.

        The first time (and after a divergence) the direction is random in the weights, fixed by ``seed`` and the
        number of directions drawn so far, identical on every process.
        """
        if self.running:
            return
        params, buffers = self._params(), self._buffers()
        real_states = self._real_states(params)
        direction = self.direction
        if direction is not None and not _any_nonzero(direction["params"]) and not _any_nonzero_state(direction):
            direction = None
        if direction is None:
            generator = torch.Generator().manual_seed((self.seed + self.restarts) % (_MAX_SEED + 1))
            self.restarts += 1
            direction = {
                "params": [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params],
                "buffers": [None for _ in buffers],
                "state": [{} for _ in params],
            }
        u_params = [u.to(p.device, torch.float64) for u, p in zip(direction["params"], params, strict=True)]
        u_norms, sizes = _block_norms(
            params, u_params, _fields(real_states, params), _fields(direction["state"], params)
        )
        alpha = self.d0 / _largest_relative(u_norms, sizes)
        self.shadow_params = [
            (p.detach().double() + alpha * u).to(p.dtype) for p, u in zip(params, u_params, strict=True)
        ]
        self.shadow_buffers = []
        for b, u in zip(buffers, direction["buffers"], strict=True):
            shadow = b.detach().clone()
            if u is not None and shadow.is_floating_point():
                shadow.add_(u.to(shadow.device, shadow.dtype), alpha=alpha)
            self.shadow_buffers.append(shadow)
        self.shadow_state = [copy.deepcopy(state) for state in real_states]
        for state, u_state in zip(self.shadow_state, direction["state"], strict=True):
            for key, u in u_state.items():
                value = state.get(key)
                if _is_field(value) and isinstance(u, Tensor) and value.shape == u.shape:
                    value.add_(u.to(value.device, value.dtype), alpha=alpha)
                    if key in NON_NEGATIVE_STATE:
                        value.clamp_(min=0)
        self.direction = None
        self.running = True
        self.kappa = {}
        self.separation0 = self._metric(self._separation_norms()[0])
        self.window_steps, self.window_log_growth = 0, 0.0
        self._record_point()

    @torch.no_grad()
    def end_window(self) -> float | None:
        """Close the window: renormalise what is pending, keep the separation as the next window's direction.

        Returns:
            ``ln(d / d_start)`` of the pending steps, if any, else ``None``.
        """
        if not self.running:
            return None
        growth = self.renormalize() if self.pending else None
        params, buffers = self._params(), self._buffers()
        real_states = self._real_states(params)
        for s, p in zip(self.shadow_params, params, strict=True):
            s.sub_(p)
        direction_buffers: list[Tensor | None] = []
        for s, b in zip(self.shadow_buffers, buffers, strict=True):
            direction_buffers.append(s.sub_(b) if s.is_floating_point() else None)
        direction_state: list[dict[str, Tensor]] = []
        for state, real in zip(self.shadow_state, real_states, strict=True):
            kept = {}
            for key, value in state.items():
                other = real.get(key)
                if _is_field(value) and isinstance(other, Tensor) and other.shape == value.shape:
                    kept[key] = value.sub_(other)
            direction_state.append(kept)
        self.direction = {"params": self.shadow_params, "buffers": direction_buffers, "state": direction_state}
        self.shadow_params, self.shadow_buffers, self.shadow_state = [], [], []
        self.running = False
        self.separation0 = math.nan
        self.fit.close()
        self.fit_since_mark.close()
        return growth

    def mark(self) -> None:
        """Start :attr:`exponent_since_mark` afresh here (e.g. at an epoch start)."""
        self.fit_since_mark = PooledSlope()
        if self.running:
            self._record_point(run=False)

    # -- the step -------------------------------------------------------------------------------------------

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Within this block the model and the optimizer hold the shadow's weights, buffers and state.

        The real gradients are set aside (the shadow starts from none) and everything is swapped back on
        exit, also on an exception.
        """
        assert self.model is not None and self.optimizer is not None, "call attach(model, optimizer) first"
        assert self.running, "no window is open: call start_window() first"
        params, buffers = self._params(), self._buffers()
        real_data = [p.data for p in params]
        real_grads = [p.grad for p in params]
        real_buffers = [b.data for b in buffers]
        real_state = [self.optimizer.state.get(p) for p in params]
        for p, shadow, state in zip(params, self.shadow_params, self.shadow_state, strict=True):
            p.data, p.grad = shadow, None
            self.optimizer.state[p] = state
        for b, shadow in zip(buffers, self.shadow_buffers, strict=True):
            b.data = shadow
        try:
            yield
        finally:
            self.shadow_params = [p.data for p in params]
            self.shadow_buffers = [b.data for b in buffers]
            self.shadow_state = [self.optimizer.state.get(p, {}) for p in params]
            for p, data, grad, real in zip(params, real_data, real_grads, real_state, strict=True):
                p.data, p.grad = data, grad
                if real is None:
                    self.optimizer.state.pop(p, None)
                else:
                    self.optimizer.state[p] = real
            for b, data in zip(buffers, real_buffers, strict=True):
                b.data = data

    def step(
        self,
        loss_closure: Callable[[], Tensor],
        before_optimizer_step: Callable[[torch.optim.Optimizer], None] | None = None,
    ) -> float | None:
        """Count one real optimizer step and, inside a window, advance the shadow on the same batch.

        Call it after every real optimizer step, with a closure that computes the loss of the same batch on the
        model as it stands (the shadow's weights are swapped in while it runs); outside a duty window the closure
        is not called. Random-number streams are the caller's business: the closure must draw the same dropout
        masks as the real step did.

        Args:
            loss_closure: returns the scalar loss of the batch.
            before_optimizer_step: called with the optimizer after the shadow's gradients are averaged and
                before its step (gradient clipping, as the real step had).

        Returns:
            ``ln(d / d_start)`` when this step renormalised, else ``None``.
        """
        assert self.optimizer is not None, "call attach(model, optimizer) first"
        self.real_steps += 1
        growth = None
        if self.running:
            # The shadow's forward is not training: no layer monitor records it.
            with self.swapped(), side_forward(self):
                with torch.enable_grad(), self._autocast_probe():
                    loss = loss_closure()
                    if not isinstance(loss, Tensor) or loss.numel() != 1:
                        raise TypeError(f"`loss_closure` must return a scalar tensor, got {type(loss).__name__}.")
                    loss.backward()
                if self.sync_gradients:
                    _average_across_processes([p.grad for p in self._params() if p.grad is not None])
                if before_optimizer_step is not None:
                    before_optimizer_step(self.optimizer)
                self.optimizer.step()
                for p in self._params():
                    p.grad = None
            self.pending += 1
            if self.pending >= self.renorm_every:
                growth = self.renormalize()
        if self.duty_period is not None:
            if self._scheduled(self.real_steps):
                self.start_window()  # no-op while a window is open
            elif self.running:
                closed = self.end_window()
                growth = closed if closed is not None else growth
        return growth

    @contextmanager
    def _autocast_probe(self) -> Iterator[None]:
        """Until a shadow forward has been seen: warn when it runs under an autocast dtype that ``d0`` is below.

        Autocast is entered inside the loss closure (Lightning's precision plugin does), so it is seen from a
        forward pre-hook (on every module: a training step need not call the root module), during the closure only.
        A warning, not an error: the run is under way by then.
        """
        if self._autocast_checked:
            yield
            return
        seen: list[torch.dtype | None] = []

        def hook(module: nn.Module, args: Any) -> None:
            for device_type in ("cpu", "cuda"):
                if torch.is_autocast_enabled(device_type):
                    seen.append(torch.get_autocast_dtype(device_type))
            seen.append(None)

        handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()
        if not seen:
            return
        self._autocast_checked = True
        dtypes = [dtype for dtype in seen if dtype is not None]
        if dtypes:
            dtype = max(dtypes, key=min_d0)
            if self.d0 < min_d0(dtype):
                warnings.warn(
                    f"TwinTrajectory: `d0` = {self.d0!r} is below {min_d0(dtype):.3g}, the resolution of {dtype} "
                    "that the forward runs in under autocast: the exponent then measures rounding noise "
                    "(benchmarks/lyapunov.md). Pass d0 >= the resolution, e.g. 1e-2 for bfloat16.",
                    UserWarning,
                    stacklevel=4,
                )

    @torch.no_grad()
    def _separation_norms(self) -> tuple[dict[str, float], dict[str, float]]:
        """``||delta||`` and the real run's size of each block (weights, each optimizer-state field).

        Freezes :attr:`kappa` of a field the first time it has a non-zero size in this window.
        """
        params = self._params()
        deltas = [s - p for p, s in zip(params, self.shadow_params, strict=True)]
        real_fields = _fields(self._real_states(params), params)
        shadow_fields = _fields(self.shadow_state, params)
        delta_fields = {
            key: [None if r is None or s is None else s - r for r, s in zip(real, shadow_fields[key], strict=True)]
            for key, real in real_fields.items()
            if key in shadow_fields
        }
        norms, sizes = _block_norms(params, deltas, real_fields, delta_fields)
        for key, size in sizes.items():
            if key != WEIGHTS and key not in self.kappa and size > 0:
                kappa = sizes[WEIGHTS] / size
                self.kappa[key] = kappa if math.isfinite(kappa) and kappa > 0 else 1.0
        return norms, sizes

    def _metric(self, norms: dict[str, float]) -> float:
        total = norms[WEIGHTS] ** 2 + sum((self.kappa[k] * v) ** 2 for k, v in norms.items() if k in self.kappa)
        return math.sqrt(total)

    def distance(self) -> float:
        """Current distance :math:`d` between the real run and the shadow, in the metric above (NaN between windows)."""
        return self._metric(self._separation_norms()[0]) if self.running else math.nan

    @torch.no_grad()
    def renormalize(self) -> float:
        """Record :math:`\\ln(d / d_{start})` and pull the separation back to ``d0`` relative to the current scale."""
        assert self.running, "no window is open"
        params, buffers = self._params(), self._buffers()
        real_states = self._real_states(params)
        norms, sizes = self._separation_norms()
        d = self._metric(norms)
        growth = math.log(d / self.separation0) if d > 0 else (-math.inf if d == 0 else math.nan)
        self.log_growth.append(growth)
        if not math.isfinite(growth):
            # Diverged (NaN/Inf) or merged (d = 0): no direction to pull back along. The interval is left out of the
            # estimate (it stays visible in log_growth); a new window starts from a fresh random direction.
            self.pending = 0
            self.shadow_params, self.shadow_buffers, self.shadow_state = [], [], []
            self.direction = None
            self.running = False
            self.fit.close()
            self.fit_since_mark.close()
            self.start_window()
            return growth
        factor = self.d0 / _largest_relative(norms, sizes)
        for p, s in zip(params, self.shadow_params, strict=True):
            s.sub_(p).mul_(factor).add_(p)
        for b, s in zip(buffers, self.shadow_buffers, strict=True):
            if s.is_floating_point():
                s.sub_(b).mul_(factor).add_(b)
        for state, real in zip(self.shadow_state, real_states, strict=True):
            for key, value in state.items():
                other = real.get(key)
                if _is_field(value) and isinstance(other, Tensor) and value.shape == other.shape:
                    value.sub_(other).mul_(factor).add_(other)
                    if key in NON_NEGATIVE_STATE:
                        value.clamp_(min=0)
        self.separation0 = factor * d
        self.window_steps += self.pending
        self.window_log_growth += growth
        self.steps += self.pending
        self.sum_log_growth += growth
        self._record_point()
        self.pending = 0
        return growth

    def _record_point(self, run: bool = True) -> None:
        """Add the window's current ``(t, G(t))`` to the fits, once the window's warm-up is over."""
        if self.window_steps < self.warmup:
            return
        if run:
            self.fit.add(float(self.window_steps), self.window_log_growth)
        self.fit_since_mark.add(float(self.window_steps), self.window_log_growth)

    @property
    def exponent(self) -> float:
        """:math:`\\lambda` per optimizer step: slope of the cumulative log-growth (NaN before a renormalisation)."""
        return self.fit.slope

    @property
    def exponent_since_mark(self) -> float:
        """:math:`\\lambda` per optimizer step from the renormalisations since :meth:`mark` (NaN with fewer than 2)."""
        return self.fit_since_mark.slope

    @property
    def mean_exponent(self) -> float:
        """The plain mean :math:`G(t) / t` per optimizer step (biased by ``c / t``; NaN before a renormalisation)."""
        return self.sum_log_growth / self.steps if self.steps else math.nan

    # -- persistence ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Shadow (or the last direction), optimizer state, metric, schedule and the running sums (for checkpoints)."""
        direction = None
        if self.direction is not None:
            direction = {
                "params": [t.detach().clone() for t in self.direction["params"]],
                "buffers": [None if t is None else t.detach().clone() for t in self.direction["buffers"]],
                "state": copy.deepcopy(self.direction["state"]),
            }
        return {
            "d0": self.d0,
            "renorm_every": self.renorm_every,
            "seed": self.seed,
            "duty_on": self.duty_on,
            "duty_period": self.duty_period,
            "warmup": self.warmup,
            "running": self.running,
            "shadow_params": [t.detach().clone() for t in self.shadow_params],
            "shadow_buffers": [t.detach().clone() for t in self.shadow_buffers],
            "shadow_state": copy.deepcopy(self.shadow_state),
            "direction": direction,
            "kappa": dict(self.kappa),
            "separation0": self.separation0,
            "real_steps": self.real_steps,
            "restarts": self.restarts,
            "window_steps": self.window_steps,
            "window_log_growth": self.window_log_growth,
            "sum_log_growth": self.sum_log_growth,
            "steps": self.steps,
            "pending": self.pending,
            "log_growth": list(self.log_growth),
            "fit": self.fit.state_dict(),
            "fit_since_mark": self.fit_since_mark.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`, validating every field first (a ValueError naming the field).

        Nothing is changed when a field is invalid. The tensors move to the model's device at the next :meth:`attach`
        (which also checks their shapes against the optimizer's parameters).
        """
        where = "the saved twin trajectory state"
        running = check_state(state, {"running": Bool()}, where)["running"]  # which of the two schemas applies
        values = check_state(state, self._state_schema(running), where)
        steps, pending, real_steps, window_steps = (values[k] for k in _COUNTS)
        if steps + pending > real_steps or window_steps > steps:
            complaint = f"({steps}) + `pending` ({pending}) must be <= `real_steps` ({real_steps}), and `window_steps`"
            raise field_error(where, "steps", f"{complaint} ({window_steps}) <= `steps`")
        direction = values["direction"]
        params, states, field = values["shadow_params"], values["shadow_state"], "shadow_state"
        if direction is not None:
            params, states, field = direction["params"], direction["state"], "direction.state"
        if len(states) != len(params):
            raise field_error(where, field, f"must hold one dict per parameter ({len(params)}), got {len(states)}")
        # Everything is valid: apply.
        self.running, self.restarts, self.real_steps, self.steps = running, values["restarts"], real_steps, steps
        self.window_steps, self.pending = window_steps, pending
        self.sum_log_growth = float(values["sum_log_growth"])
        self.window_log_growth = float(values["window_log_growth"])
        self.separation0 = float(values["separation0"])
        self.log_growth = [float(g) for g in values["log_growth"]]
        self.kappa = {str(k): float(v) for k, v in values["kappa"].items()}
        self.shadow_params, self.shadow_buffers = list(values["shadow_params"]), list(values["shadow_buffers"])
        self.shadow_state = [dict(s) for s in values["shadow_state"]]
        if direction is not None:
            buffers = list(direction["buffers"])
            direction = {"params": list(params), "buffers": buffers, "state": [dict(s) for s in states]}
        self.direction = direction
        self.fit, self.fit_since_mark = PooledSlope(), PooledSlope()
        self.fit.load_state_dict(values["fit"], "fit")
        self.fit_since_mark.load_state_dict(values["fit_since_mark"], "fit_since_mark")
        if self.optimizer is not None:
            self._check_loaded(self._params())

    @property
    def settings(self) -> dict[str, Any]:
        """The arguments a saved state must have been made with: ``d0``, ``renorm_every``, ``seed``, the duty cycle
        and ``warmup``."""
        return {name: getattr(self, name) for name in _SETTINGS}

    def _state_schema(self, running: bool) -> StateSchema:
        """The fields of :meth:`state_dict`: the settings must be this twin's; a state saved while a window ran
        holds a finite shadow and no direction, one saved between windows no shadow and maybe a direction."""
        # Between windows there is no shadow and no metric distance (NaN).
        between = Equals([], "between windows")
        tensors, states = ListOf(TensorOf(floating=True)), ListOf(ANY_DICT)
        direction = StateSchema({"params": tensors, "buffers": ListOf(OrNone(TensorOf())), "state": states})
        shadow = "the shadow's parameters while a window runs: a non-empty list of finite floating-point tensors"
        return StateSchema(
            {
                "running": Bool(),
                **{name: Equals(value, "this twin trajectory's setting") for name, value in self.settings.items()},
                **dict.fromkeys(("real_steps", "restarts", "steps", "window_steps"), Int(0)),
                "pending": Int(0, self.renorm_every - 1) if running else Equals(0, "between windows"),
                "sum_log_growth": Real(),
                "window_log_growth": Real(),
                "separation0": Real(positive=True)
                if running
                else Constrained(Real(nan=True), math.isnan, "NaN between windows"),
                "log_growth": ListOf(Real(nan=True, neg_inf=True, pos_inf=True)),
                "kappa": DictOf(Real(positive=True)),
                "shadow_params": Constrained(ListOf(TensorOf(floating=True, finite=True)), bool, shadow)
                if running
                else between,
                "shadow_buffers": ListOf(TensorOf()) if running else between,
                "shadow_state": states if running else between,
                "direction": Equals(None, "while a window runs") if running else OrNone(direction),
                "fit": PooledSlope.STATE,
                "fit_since_mark": PooledSlope.STATE,
            }
        )

    def trainable_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the parameters the loaded state holds (the shadow's or the last direction's), in order."""
        tensors = self.shadow_params if self.running else (self.direction or {}).get("params", [])
        return [tuple(t.shape) for t in tensors]


# -- helpers ------------------------------------------------------------------------------------------------


def _is_field(value: Any) -> TypeGuard[Tensor]:
    """An optimizer-state tensor that is part of the separation (not a step counter or a scalar)."""
    return isinstance(value, Tensor) and value.is_floating_point() and value.ndim > 0


def _fields(states: list[dict[str, Any]], params: list[Tensor]) -> dict[str, list[Tensor | None]]:
    """Per field name, its tensor for each parameter (None where absent): floating tensors of the parameter's shape."""
    fields: dict[str, list[Tensor | None]] = {}
    for i, (state, p) in enumerate(zip(states, params, strict=True)):
        for key, value in state.items():
            if _is_field(value) and value.shape == p.shape:
                fields.setdefault(key, [None] * len(params))[i] = value
    return fields


def _any_nonzero(tensors: list[Tensor]) -> bool:
    return any(bool(t.ne(0).any()) for t in tensors)


def _any_nonzero_state(direction: dict[str, list[Any]]) -> bool:
    return any(_is_field(v) and bool(v.ne(0).any()) for state in direction["state"] for v in state.values())


def _block_norms(
    params: list[Tensor],
    delta_params: list[Tensor],
    real_fields: dict[str, list[Tensor | None]],
    delta_fields: dict[str, list[Tensor | None]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Norms of the separation's blocks and of the real run's blocks, over the parameters where both exist."""
    norms = {WEIGHTS: float(_global_norm(delta_params))}
    sizes = {WEIGHTS: float(_global_norm(params))}
    for key, real in real_fields.items():
        pairs = [
            (r, u) for r, u in zip(real, delta_fields.get(key, []), strict=False) if r is not None and u is not None
        ]
        if pairs:
            norms[key] = float(_global_norm([u for _, u in pairs]))
            sizes[key] = float(_global_norm([r for r, _ in pairs]))
    return norms, sizes


def _largest_relative(norms: dict[str, float], sizes: dict[str, float]) -> float:
    """``max_b ||delta_b|| / ||x_b||`` over the blocks with a non-zero real size (absolute if none has one)."""
    ratios = [norms[key] / size for key, size in sizes.items() if size > 0 and math.isfinite(size)]
    largest = max(ratios, default=0.0)
    if largest > 0 and math.isfinite(largest):
        return largest
    return norms[WEIGHTS] if norms[WEIGHTS] > 0 else 1.0


def _global_norm(tensors: list[Tensor]) -> Tensor:
    if not tensors:
        return torch.zeros((), dtype=torch.float64)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.double()) for t in tensors]))


def _to_device(state: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) and v.ndim > 0 else v for k, v in state.items()}


def _average_across_processes(grads: list[Tensor]) -> None:
    """Average gradients over the default process group in one collective (no-op without distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    if world < 2 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
