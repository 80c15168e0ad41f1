"""Twin-trajectory (Benettin) estimate of the maximum Lyapunov exponent of training (no Lightning import).

Training maps the state (weights and optimizer state) at step t to the state at step t + 1; its maximum
Lyapunov exponent says whether two nearby runs that see the same batches converge (:math:`\\lambda < 0`,
stable training) or separate exponentially (:math:`\\lambda > 0`, chaotic training). Danovski, Soriano &
Lacasa, arXiv:2404.05782, find it turns positive at large learning rates. docs/method.md section 9:

.. code-block:: python

    twin = TwinTrajectory(d0=1e-4, renorm_every=1).attach(model, optimizer)
    for batch in loader:
        loss = loss_fn(model, batch); loss.backward(); optimizer.step(); optimizer.zero_grad()
        twin.step(lambda: loss_fn(model, batch))  # the same batch, on the shadow's weights
    twin.exponent  # mean log(d / d0) per optimizer step

The shadow is one more copy of the trained parameters, of the module's buffers and of the optimizer's
per-parameter state. Its step swaps these into the real model and optimizer, runs the loss closure,
backward and ``optimizer.step()`` (the same optimizer object: same hyper-parameters, same learning-rate
schedule, any optimizer whose state can be deep-copied), then swaps back: the real run is left exactly
as it was (its gradients, buffers, optimizer state and random-number streams).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

# docs/method.md section 9 says 1e-6; in float32 that is too close to rounding: the real and the shadow run each
# round their updates to ~6e-8 relative, a random kick of a few percent of d0 per step that reads as growth. On
# digits (benchmarks/lyapunov_sweep.py) lambda at lr 0.1 was 0.0158 with d0 = 1e-6, 0.0034 with 1e-5 and 0.0024
# with both 1e-4 and 1e-3 (converged); 1e-4 keeps the pair in the linear regime and out of the rounding.
DEFAULT_D0 = 1e-4
DEFAULT_RENORM_EVERY = 1


class TwinTrajectory:
    r"""A shadow copy of a training run at a small distance, renormalised every ``renorm_every`` steps.

    Every ``k = renorm_every`` optimizer steps the weight-space distance :math:`d = \|w - w'\|_2` between
    the real weights :math:`w` and the shadow's :math:`w'` is recorded and the shadow is pulled back along
    the separation to distance :math:`d_0` (Benettin et al. 1980, Meccanica 15:9), its optimizer state and
    floating-point buffers by the same factor :math:`d_0 / d` (a state tensor that is non-negative in both
    runs, such as Adam's second moment, stays non-negative):

    .. math:: \lambda = \frac{1}{t} \sum_{j} \ln \frac{d(j k)}{d_0}\quad \text{(per optimizer step)}

    :math:`d_0` is ``d0`` times the norm of the weights when the shadow is made; the first separation is
    a random direction (fixed by ``seed``, identical on every process). The default ``d0 = 1e-4`` (not the
    1e-6 of docs/method.md section 9) keeps float32 rounding, about 6e-8 relative per update, out of the
    estimate: with 1e-6 it adds a spurious positive exponent (see ``benchmarks/README.md``).

    Cost: memory of one more copy of the trained parameters, the buffers and the optimizer state (about
    1x the parameters for SGD, 2x with momentum, 3x for Adam/AdamW), plus the shadow's gradients while it
    steps; compute of one more forward, backward and optimizer step per training step (about 2x the time
    of the training step), plus a few passes over the parameters at each renormalisation.

    Under data parallelism (``torch.distributed`` initialised, world size > 1) the shadow's gradients are
    averaged across processes, as the real model's are by DDP, so every process keeps the same shadow and
    the same estimate.

    Args:
        d0: initial and renormalised distance, relative to the norm of the weights.
        renorm_every: optimizer steps between renormalisations.
        seed: seed of the initial separation direction.
        sync_gradients: average the shadow's gradients across processes when ``torch.distributed`` runs.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> x, y = torch.randn(32, 4), torch.randn(32, 1)
        >>> twin = TwinTrajectory().attach(model, optimizer)
        >>> for _ in range(20):
        ...     optimizer.zero_grad()
        ...     torch.nn.functional.mse_loss(model(x), y).backward()
        ...     optimizer.step()
        ...     _ = twin.step(lambda: torch.nn.functional.mse_loss(model(x), y))
        >>> bool(twin.exponent < 0)  # least squares with a small step contracts: stable
        True
    """

    def __init__(
        self,
        d0: float = DEFAULT_D0,
        renorm_every: int = DEFAULT_RENORM_EVERY,
        seed: int = 0,
        sync_gradients: bool = True,
    ) -> None:
        if not (isinstance(d0, (int, float)) and 0 < d0 < 1):
            raise ValueError(f"`d0` must be a relative distance in (0, 1), got {d0!r}.")
        if isinstance(renorm_every, bool) or not isinstance(renorm_every, int) or renorm_every < 1:
            raise ValueError(f"`renorm_every` must be an integer >= 1, got {renorm_every!r}.")
        self.d0 = float(d0)
        self.renorm_every = renorm_every
        self.seed = int(seed)
        self.sync_gradients = sync_gradients
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.distance0 = math.nan  # absolute d0, set when the shadow is made
        self.shadow_params: list[Tensor] = []
        self.shadow_buffers: list[Tensor] = []
        self.shadow_state: list[dict[str, Any]] = []
        self.sum_log_growth = 0.0
        self.steps = 0  # optimizer steps covered by the recorded renormalisations
        self.pending = 0  # shadow steps since the last renormalisation
        self.log_growth: list[float] = []  # ln(d / d0) at each renormalisation

    # -- set-up ---------------------------------------------------------------------------------------------

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> TwinTrajectory:
        """Bind to ``model`` and ``optimizer`` and make the shadow (unless a loaded state already holds one)."""
        self.model, self.optimizer = model, optimizer
        params = self._params()
        if not params:
            raise ValueError("The optimizer holds no parameters that require gradients: nothing to perturb.")
        if self.shadow_params:
            self._check_loaded(params)
            return self
        with torch.no_grad():
            norm = _global_norm(params)
            self.distance0 = self.d0 * float(norm) if norm > 0 else self.d0
            generator = torch.Generator().manual_seed(self.seed)
            directions = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
            scale = self.distance0 / float(torch.sqrt(sum((u.square().sum() for u in directions), torch.zeros(()))))
            self.shadow_params = [
                (p.detach().double() + scale * u.to(p.device)).to(p.dtype)
                for p, u in zip(params, directions, strict=True)
            ]
        self.shadow_buffers = [b.detach().clone() for b in self._buffers()]
        self.shadow_state = [copy.deepcopy(self.optimizer.state.get(p, {})) for p in params]
        return self

    def _params(self) -> list[Tensor]:
        assert self.optimizer is not None, "call attach(model, optimizer) first"
        return [p for group in self.optimizer.param_groups for p in group["params"] if p.requires_grad]

    def _buffers(self) -> list[Tensor]:
        assert self.model is not None, "call attach(model, optimizer) first"
        return list(self.model.buffers())

    def _check_loaded(self, params: list[Tensor]) -> None:
        shapes = [tuple(p.shape) for p in params]
        loaded = [tuple(s.shape) for s in self.shadow_params]
        if shapes != loaded:
            raise ValueError(f"The loaded shadow holds parameters of shapes {loaded}, the optimizer {shapes}.")
        self.shadow_params = [
            s.to(device=p.device, dtype=p.dtype) for s, p in zip(self.shadow_params, params, strict=True)
        ]
        self.shadow_buffers = [s.to(b.device) for s, b in zip(self.shadow_buffers, self._buffers(), strict=True)]
        self.shadow_state = [_to_device(state, p.device) for state, p in zip(self.shadow_state, params, strict=True)]

    # -- the step -------------------------------------------------------------------------------------------

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Within this block the model and the optimizer hold the shadow's weights, buffers and state.

        The real gradients are set aside (the shadow starts from none) and everything is swapped back on
        exit, also on an exception.
        """
        assert self.model is not None and self.optimizer is not None, "call attach(model, optimizer) first"
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
        """Advance the shadow by one optimizer step on the batch that ``loss_closure`` evaluates.

        Call it after the real optimizer step, with a closure that computes the loss of the same batch on the
        model as it stands (the shadow's weights are swapped in while it runs). Random-number streams are
        the caller's business: the closure must draw the same dropout masks as the real step did.

        Args:
            loss_closure: returns the scalar loss of the batch.
            before_optimizer_step: called with the optimizer after the shadow's gradients are averaged and
                before its step (gradient clipping, as the real step had).

        Returns:
            ``ln(d / d0)`` when this step renormalised, else ``None``.
        """
        assert self.optimizer is not None, "call attach(model, optimizer) first"
        with self.swapped():
            with torch.enable_grad():
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
        if self.pending < self.renorm_every:
            return None
        return self.renormalize()

    @torch.no_grad()
    def distance(self) -> float:
        """Current weight-space distance :math:`\\|w - w'\\|_2` between the real run and the shadow."""
        return float(_global_norm([s - p for p, s in zip(self._params(), self.shadow_params, strict=True)]))

    @torch.no_grad()
    def renormalize(self) -> float:
        """Record :math:`\\ln(d / d_0)` and pull the shadow back to distance :math:`d_0` along the separation."""
        params = self._params()
        d = self.distance()
        growth = math.log(d / self.distance0) if d > 0 else (-math.inf if d == 0 else math.nan)
        if not math.isfinite(d) or d == 0:
            # Diverged (NaN/Inf) or merged: no direction to pull back along; restart from a fresh direction.
            self.shadow_params, self.shadow_buffers, self.shadow_state = [], [], []
            assert self.model is not None and self.optimizer is not None
            self.attach(self.model, self.optimizer)
        else:
            factor = self.distance0 / d
            for p, s in zip(params, self.shadow_params, strict=True):
                s.sub_(p).mul_(factor).add_(p)
            for b, s in zip(self._buffers(), self.shadow_buffers, strict=True):
                if s.is_floating_point():
                    s.sub_(b).mul_(factor).add_(b)
            for p, state in zip(params, self.shadow_state, strict=True):
                real = self.optimizer.state.get(p, {}) if self.optimizer is not None else {}
                for key, value in state.items():
                    other = real.get(key)
                    if isinstance(value, Tensor) and value.is_floating_point() and isinstance(other, Tensor):
                        if value.shape != other.shape or value.ndim == 0:
                            continue  # step counters and scalars: not part of the separation
                        non_negative = bool((value >= 0).all() and (other >= 0).all())
                        value.sub_(other).mul_(factor).add_(other)
                        if non_negative:
                            value.clamp_(min=0)
        self.log_growth.append(growth)
        if math.isfinite(growth):
            self.sum_log_growth += growth
            self.steps += self.pending
        # else: the runs diverged (non-finite weights) or merged exactly (d = 0); that interval is left out of the
        # estimate and stays visible in log_growth.
        self.pending = 0
        return growth

    @property
    def exponent(self) -> float:
        """Running estimate :math:`\\lambda` per optimizer step (NaN before the first renormalisation)."""
        return self.sum_log_growth / self.steps if self.steps else math.nan

    # -- persistence ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Shadow weights, buffers, optimizer state and the running sums (for checkpoints)."""
        return {
            "d0": self.d0,
            "renorm_every": self.renorm_every,
            "seed": self.seed,
            "distance0": self.distance0,
            "shadow_params": [t.detach().clone() for t in self.shadow_params],
            "shadow_buffers": [t.detach().clone() for t in self.shadow_buffers],
            "shadow_state": copy.deepcopy(self.shadow_state),
            "sum_log_growth": self.sum_log_growth,
            "steps": self.steps,
            "pending": self.pending,
            "log_growth": list(self.log_growth),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the tensors move to the model's device at the next :meth:`attach`."""
        if state.get("d0", self.d0) != self.d0 or state.get("renorm_every", self.renorm_every) != self.renorm_every:
            raise ValueError(
                f"The saved twin trajectory used d0={state.get('d0')}, renorm_every={state.get('renorm_every')}; "
                f"this one has d0={self.d0}, renorm_every={self.renorm_every}."
            )
        self.distance0 = float(state["distance0"])
        self.shadow_params = list(state["shadow_params"])
        self.shadow_buffers = list(state["shadow_buffers"])
        self.shadow_state = list(state["shadow_state"])
        self.sum_log_growth = float(state["sum_log_growth"])
        self.steps = int(state["steps"])
        self.pending = int(state["pending"])
        self.log_growth = list(state["log_growth"])
        if self.optimizer is not None:
            self._check_loaded(self._params())


def _global_norm(tensors: list[Tensor]) -> Tensor:
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
