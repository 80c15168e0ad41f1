"""Freeze the converged prefix of a network, front to back, from its layers' own dynamics (no Lightning import).

The decision core of :class:`~lightning_dynamics.callbacks.freezing.DynamicsLayerFreezing`; Fabric and plain
PyTorch loops use it directly (docs/freezing.md). It reads the monitor's ``[L, T]`` history (one row per
monitored layer, in the model's registration order) and, at each check, asks of every layer whether its summary
has *settled*:

1. **Scale-aware change** (:func:`layer_change`). The largest movement of the smoothed summary (means of ``lag``
   points) over the last third (``horizon``) of the history, relative to the layer's largest excursion from
   where training started, must be at most ``change_tol``. A layer whose movement has shrunk to a small fraction
   of its early-training movement passes; one that keeps moving, or drifts like a power law (the norm of a random
   walk in weight space grows like :math:`\\sqrt t`), does not.
2. **No drift left.** Over the last ``window`` points, the variance ratio
   :math:`q_l = \\operatorname{var}(x_l) / \\operatorname{mean}((\\Delta x_l)^2)` must be at most
   ``max_variance_ratio``.
   Stationary noise around a level gives :math:`q \\approx 0.5`; a random walk gives :math:`q \\approx n/6`
   (about 8 for ``window = 48``); a trend gives more (Lo & MacKinlay, "Stock market prices do not follow random
   walks", Rev. Financ. Stud. 1988, for variance ratios as a random-walk test).

A layer is *converged* once both hold at ``patience`` consecutive checks; the frozen prefix grows to the longest
run of converged layers from the front (layers whose parameters the user froze, or that have none, do not block
it), and never past the last ``keep_trainable`` monitored layers. Freezing is one-way: nothing is ever unfrozen.

Calibration (the null that never settles; docs/freezing.md, ``tests/test_freezing.py``): on 500 simulated random
walks of 400 points, the defaults (``lag=8, window=48, horizon=1/3, change_tol=0.1, max_variance_ratio=1.0,
patience=4``) call a layer converged at some point in 0.8% of them, a :math:`\\sqrt t` drift in noise in 0.8%,
stationary white noise (no movement to settle from) never, an exponential relaxation ``5 exp(-t/40)`` in noise of
0.2 always (median: point 118). Each layer of a network is one such test; the prefix rule asks the first first.

Mapping layers to parameters: :func:`prefix_parameter_groups`. Freezing layer ``k`` sets ``requires_grad=False``
on the parameters of layers ``0..k`` (so backward stops at the first trainable layer), drops their ``.grad`` (so
no optimizer, with or without momentum, weight decay or parameter groups, updates them), and, with
``freeze_norm_stats``, keeps normalisation layers inside the frozen prefix in eval mode (their running statistics
stop changing and the forward uses them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamics.validation import (
    ANY_DICT,
    Equals,
    Int,
    ListOf,
    check_bool,
    check_finite_real,
    check_int,
    check_state,
    field_error,
    shown,
)

STATE_VERSION = 1
#: The key of the frozen-layer count in the tracker's ``logged`` series (under its prefix): one value per
#: sample point, so the history file says when each layer froze (``frozen_at_from_series``).
FROZEN_LAYERS_KEY = "frozen_layers"


def layer_change(values: Tensor, lag: int = 8, horizon: float = 1 / 3) -> Tensor:
    r"""How far each layer moved lately, relative to its largest excursion from the start: ``[..., L, T] -> [..., L]``.

    .. math::
        c_l = \frac{\max_{j \ge J} |\bar x_l(T-h) - \bar x_l(j)|}{\max_j |\bar x_l(j) - \bar x_l(0)|},\qquad
        \bar x_l(j) = \frac{1}{h}\sum_{i=j}^{j+h-1} x_l(i),\quad J = \min(T - 2h, \lfloor (1 - f) T \rfloor)

    with ``h = lag`` and ``f = horizon``: the largest movement of the smoothed summary over the last fraction ``f``
    of the history (at least the last ``2h`` points), in units of the layer's largest excursion since the start.
    Scale-aware: a layer that once moved by 1.0 and has since moved by 0.01 reads 0.01, whatever its size. A
    horizon that grows with the run makes a power-law drift read a constant (:math:`\sqrt t`, the norm of a
    random walk in weight space, reads :math:`1 - \sqrt{1 - f} \approx 0.13` at ``f = 0.25``, at every ``T``),
    while a layer that settles reads its noise floor over its excursion. A series that never moved reads 0;
    NaN points in the horizon give NaN (not converged); fewer than ``2 * lag`` points give NaN.

    Example:
        >>> x = torch.cat([torch.linspace(0.0, 1.0, 16), torch.ones(48)])[None]  # moved by 1, then still
        >>> layer_change(x, lag=8)
        tensor([0.])
    """
    check_int("lag", lag, 1)
    check_finite_real("horizon", horizon, positive=True)
    n_points = values.shape[-1]
    if n_points < 2 * lag:
        return torch.full(values.shape[:-1], math.nan, dtype=values.dtype, device=values.device)
    smooth = values.unfold(-1, lag, 1).mean(-1)  # [..., L, T - lag + 1]
    start = min(n_points - 2 * lag, int((1.0 - min(horizon, 1.0)) * n_points))
    recent = (smooth[..., -1:] - smooth[..., start:]).abs().amax(-1)
    excursion = (smooth - smooth[..., :1]).abs()
    scale = torch.where(excursion.isnan(), torch.zeros_like(excursion), excursion).amax(-1)
    change = recent / scale
    return torch.where((scale == 0) & (recent == 0), torch.zeros_like(change), change)


def variance_ratio(values: Tensor, window: int = 48) -> Tensor:
    r"""Variance of the last ``window`` points over their mean squared increment: ``[..., L, T] -> [..., L]``.

    .. math:: q_l = \frac{\operatorname{var}_{t}(x_l)}{\operatorname{mean}_t (x_l(t) - x_l(t-1))^2}

    over the last ``window`` points (population variance). White noise around a level: :math:`q \to 1/2`;
    a random walk: :math:`q \approx n/6`; a linear trend: :math:`q \approx n^2/12`. (After Lo & MacKinlay 1988.)
    A constant window reads 0; NaN points give NaN; fewer than ``window`` points give NaN.

    Example:
        >>> walk = torch.arange(48.0)[None]  # a steady trend: far from settled
        >>> bool(variance_ratio(walk, 48) > 100)
        True
    """
    check_int("window", window, 3)
    if values.shape[-1] < window:
        return torch.full(values.shape[:-1], math.nan, dtype=values.dtype, device=values.device)
    segment = values[..., -window:]
    spread = segment.var(-1, unbiased=False)
    steps = segment.diff(dim=-1).pow(2).mean(-1)
    ratio = spread / steps
    return torch.where((spread == 0) & (steps == 0), torch.zeros_like(ratio), ratio)


def settled_layers(
    values: Tensor,
    lag: int = 8,
    window: int = 48,
    change_tol: float = 0.1,
    max_variance_ratio: float = 1.0,
    horizon: float = 1 / 3,
) -> Tensor:
    """Whether each layer has settled at the last point (the module docstring's tests): ``[..., L, T] -> [..., L]``.

    NaN (too few points, missing points) is never settled.
    """
    change = layer_change(values, lag, horizon)
    ratio = variance_ratio(values, window)
    return (change <= change_tol) & (ratio <= max_variance_ratio)


def prefix_parameter_groups(model: nn.Module, layer_names: Sequence[str]) -> list[list[str]]:
    """The parameter names that belong to each monitored layer, front to back, for prefix freezing.

    Walks ``model.named_parameters(remove_duplicate=False)`` (registration order; ``torch.compile``'s ``_orig_mod``
    level removed). A parameter inside a monitored layer belongs to it (the deepest such layer when monitored layers
    nest). A parameter outside every monitored layer (a BatchNorm between two monitored convolutions, a ViT's
    ``pos_embed``) belongs to the monitored layer registered before it, or to the first one if it comes before
    all of them: freezing the prefix up to layer ``k`` freezes everything registered up to the next monitored
    layer. Parameters after the last monitored layer belong to the last one (which is never frozen by default).

    A tensor shared by several layers (tied weights: an output head that reuses the token embedding, as in GPT-2,
    BERT's masked-language-model head and T5) belongs to the *last* monitored layer that uses it, under the name it
    has there: freezing the embedding does not freeze the head's weight, which is frozen only with the head.

    Args:
        model: the network the monitor watches (the same root its layer names are relative to).
        layer_names: the monitored layers, in the history's order (``tracker.layer_names``).

    Returns:
        one list of parameter names per monitored layer; each tensor appears once, in the group that owns it.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3), nn.Linear(2, 2))
        >>> prefix_parameter_groups(net, ["0", "2", "3"])
        [['0.weight', '0.bias', '1.weight', '1.bias'], ['2.weight', '2.bias'], ['3.weight', '3.bias']]
        >>> tied = nn.Sequential(nn.Embedding(5, 2), nn.Linear(2, 2), nn.Linear(2, 5, bias=False))
        >>> tied[2].weight = tied[0].weight  # the head reuses the embedding
        >>> prefix_parameter_groups(tied, ["0", "1", "2"])
        [[], ['1.weight', '1.bias'], ['2.weight']]
    """
    if not layer_names:
        raise ValueError("`layer_names` must name at least one monitored layer, got an empty list.")
    index = {name: i for i, name in enumerate(layer_names)}
    named = list(model.named_parameters(remove_duplicate=False))
    chosen: dict[int, tuple[int, str]] = {}  # id of the tensor -> (its group, its name there)
    owner = 0
    for name, parameter in named:
        clean = ".".join(part for part in name.split(".") if part != "_orig_mod")
        parts = clean.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            layer = ".".join(parts[:cut])
            if layer in index:
                owner = index[layer]
                break
        if id(parameter) not in chosen or owner >= chosen[id(parameter)][0]:
            chosen[id(parameter)] = (owner, name)
    groups: list[list[str]] = [[] for _ in layer_names]
    for name, parameter in named:
        group, chosen_name = chosen[id(parameter)]
        if name == chosen_name:
            groups[group].append(name)
    return groups


def tied_parameter_names(model: nn.Module) -> list[list[str]]:
    """The names of each tensor that several modules share (tied weights), in registration order.

    Example:
        >>> tied = nn.Sequential(nn.Embedding(5, 2), nn.Linear(2, 5, bias=False))
        >>> tied[1].weight = tied[0].weight
        >>> tied_parameter_names(tied)
        [['0.weight', '1.weight']]
    """
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [group for group in names.values() if len(group) > 1]


@dataclass
class FreezeEvent:
    """One freezing decision: which layers froze, where training was, how many parameters stopped training."""

    layers: list[str]
    n_frozen: int
    epoch: int
    step: int
    sample: int
    parameters: int


@dataclass
class LayerFreezer:
    r"""Freeze the converged prefix of a network from the monitor's history; the framework-neutral core.

    Build it (validates), :meth:`attach` it to the model and the :class:`~lightning_dynamics.DynamicsTracker`
    that watches it, and call :meth:`step` after each sample point. The Lightning callback
    :class:`~lightning_dynamics.callbacks.freezing.DynamicsLayerFreezing` does exactly that.

    Args:
        change_tol: largest recent change, as a fraction of the layer's largest excursion, that counts as settled.
        max_variance_ratio: largest variance ratio over ``window`` points that counts as free of drift.
        lag: ``h``, points per smoothed value in the change test.
        horizon: ``f``, the fraction of the history (at least its last ``2 * lag`` points) over which a settled
            layer may have moved at most ``change_tol`` of its largest excursion.
        window: points of the variance-ratio test (also the minimum history before any decision).
        patience: consecutive checks a layer must pass before it may be frozen.
        keep_trainable: the last this many monitored layers are never frozen (>= 1: the head keeps training).
        freeze_norm_stats: keep normalisation layers (modules with running statistics) inside the frozen prefix
            in eval mode (a forward pre-hook; compiled models are reset once so it runs).
        min_samples: no decision before this many sample points (default: ``max(window, 2 * lag)``).

    Example (a plain loop; a Fabric loop is the same with the monitor's tracker)::

        tracker = DynamicsTracker().attach(model)
        freezer = LayerFreezer().attach(model, tracker)
        for step, (x, y) in enumerate(batches):
            train_step(model, optimizer, x, y)
            if step % 4 == 3:
                tracker.sample(epoch=epoch, step=step)
                freezer.step(epoch=epoch, step=step)  # freezes the converged prefix, logs frozen_layers
    """

    change_tol: float = 0.1
    max_variance_ratio: float = 1.0
    lag: int = 8
    window: int = 48
    horizon: float = 1 / 3
    patience: int = 4
    keep_trainable: int = 1
    freeze_norm_stats: bool = False
    min_samples: int | None = None
    info: Callable[[str], None] | None = None
    n_frozen: int = field(default=0, init=False)
    streaks: list[int] = field(default_factory=list, init=False)
    events: list[FreezeEvent] = field(default_factory=list, init=False)
    checked_samples: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        check_finite_real("change_tol", self.change_tol, positive=True)
        check_finite_real("max_variance_ratio", self.max_variance_ratio, positive=True)
        check_int("lag", self.lag, 1)
        check_int("window", self.window, 3)
        check_finite_real("horizon", self.horizon, positive=True)
        if not 0.0 < self.horizon <= 1.0:
            raise ValueError(f"`horizon` must be a number in (0, 1], got {self.horizon!r}.")
        check_int("patience", self.patience, 1)
        check_int("keep_trainable", self.keep_trainable, 1)
        check_int("min_samples", self.min_samples, 1, allow_none=True)
        check_bool("freeze_norm_stats", self.freeze_norm_stats)
        self.change_tol = float(self.change_tol)
        self.max_variance_ratio = float(self.max_variance_ratio)
        self._model: nn.Module | None = None
        self._tracker: Any = None
        self._layer_names: list[str] = []
        self._groups: list[list[str]] = []
        self._params: dict[str, nn.Parameter] = {}
        self._user_frozen: set[str] = set()
        self._norm_hooks: list[Any] = []
        self._pending_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ wiring

    @property
    def samples_needed(self) -> int:
        """Sample points before the first decision."""
        return self.min_samples if self.min_samples is not None else max(self.window, 2 * self.lag)

    @property
    def layer_names(self) -> list[str]:
        return list(self._layer_names)

    @property
    def frozen_layers(self) -> list[str]:
        """The monitored layers frozen so far, front to back."""
        return self._layer_names[: self.n_frozen]

    def attach(self, model: nn.Module, tracker: Any, layer_names: Sequence[str] | None = None) -> LayerFreezer:
        """Bind to ``model`` and the tracker that watches it (after ``tracker.attach``).

        Records which parameters the user froze (they are never touched, and layers made only of them never
        block the prefix) and maps the monitored layers to parameters (:func:`prefix_parameter_groups`). A
        pending :meth:`load_state_dict` is applied here: the restored prefix is frozen again.
        """
        names = list(layer_names) if layer_names is not None else list(tracker.layer_names)
        if not names:
            raise ValueError("LayerFreezer.attach: the tracker watches no layers yet; attach the tracker first.")
        self._model = model
        self._tracker = tracker
        if names != self._layer_names:
            self._layer_names = names
            self.streaks = [0] * len(names)
        self._groups = prefix_parameter_groups(model, names)
        self._params = dict(model.named_parameters(remove_duplicate=False))  # a tied tensor under each of its names
        tied = tied_parameter_names(model)
        if tied and self.info is not None:
            self.info(
                "LayerFreezer: tied parameters "
                + "; ".join(" = ".join(group) for group in tied)
                + ": each belongs to the last monitored layer that uses it and is frozen only with that layer."
            )
        frozen_by_us = {p for group in self._groups[: self.n_frozen] for p in group}
        self._user_frozen = {n for n, p in self._params.items() if not p.requires_grad and n not in frozen_by_us}
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self._restore(state)
        return self

    def blocking(self) -> list[bool]:
        """Per monitored layer: whether it has parameters still trained (layers without any never block)."""
        return [any(name not in self._user_frozen for name in group) for group in self._groups]

    # ------------------------------------------------------------------ the decision

    def decide(self, values: Tensor) -> int:
        """Update the per-layer streaks from a history ``[L, T]`` and return the prefix length to freeze.

        Pure apart from the streaks (one call per sample point). The returned length never shrinks below the
        current one and never reaches the last ``keep_trainable`` layers.
        """
        if values.ndim != 2 or values.shape[0] != len(self._layer_names):
            raise ValueError(
                f"LayerFreezer.decide: `values` must be [L, T] with L = {len(self._layer_names)} monitored layers, "
                f"got shape {tuple(values.shape)}."
            )
        n_points = values.shape[-1]
        limit = max(0, len(self._layer_names) - self.keep_trainable)
        if n_points < self.samples_needed:
            return self.n_frozen
        settled = settled_layers(
            values.double(), self.lag, self.window, self.change_tol, self.max_variance_ratio, self.horizon
        ).tolist()  # one host sync per check
        self.streaks = [s + 1 if ok else 0 for s, ok in zip(self.streaks, settled, strict=True)]
        blocking = self.blocking()
        n = self.n_frozen
        while n < limit and (self.streaks[n] >= self.patience or not blocking[n]):
            n += 1
        return n

    def step(
        self,
        epoch: int,
        step: int,
        agree: Callable[[int], int] | None = None,
        log: Callable[[dict[str, float]], None] | None = None,
    ) -> list[str]:
        """Check the tracker's history once per new sample point; freeze the converged prefix. Returns new layers.

        Args:
            epoch, step: where training is (recorded with the decision).
            agree: makes every process use the same prefix length (e.g. a broadcast from rank 0); the histories
                are identical on every rank already, so this only guards against floating-point drift.
            log: receives ``{"frozen_layers": n}`` at each checked sample point (e.g. ``fabric.log_dict``).
        """
        if self._tracker is None or self._model is None:
            raise RuntimeError("LayerFreezer.step() before attach(model, tracker).")
        history = self._tracker.history
        n_samples = 0 if history is None else int(history.length)
        if n_samples <= self.checked_samples:
            return []
        self.checked_samples = n_samples
        proposed = self.decide(history.values)
        if agree is not None:
            proposed = int(agree(proposed))
        new = self.freeze_prefix(proposed, epoch=epoch, step=step, sample=n_samples - 1)
        self._record(n_samples)
        if log is not None:
            log({FROZEN_LAYERS_KEY: float(self.n_frozen)})
        return new

    # ------------------------------------------------------------------ acting on the model

    def freeze_prefix(self, n: int, epoch: int = -1, step: int = -1, sample: int = -1) -> list[str]:
        """Freeze monitored layers ``0..n-1`` (a no-op for those already frozen; never unfreezes)."""
        if self._model is None:
            raise RuntimeError("LayerFreezer.freeze_prefix() before attach(model, tracker).")
        check_int("n", n, 0)
        n = min(n, len(self._layer_names))
        if n <= self.n_frozen:
            return []
        newly = self._layer_names[self.n_frozen : n]
        count = 0
        for group in self._groups[self.n_frozen : n]:
            for name in group:
                parameter = self._params[name]
                if name in self._user_frozen or not parameter.requires_grad:
                    continue
                parameter.requires_grad_(False)
                parameter.grad = None  # no optimizer step (momentum, weight decay) touches a param without grad
                count += parameter.numel()
        self.n_frozen = n
        if self.freeze_norm_stats:
            self._hold_norm_stats()
        self.events.append(FreezeEvent(newly, n, int(epoch), int(step), int(sample), count))
        self._reset_compiled()
        if self.info is not None:
            self.info(
                f"LayerFreezer: froze {', '.join(newly)} at epoch {epoch}, step {step} (sample point {sample}); "
                f"{n} of {len(self._layer_names)} monitored layers frozen, {count} more parameters stopped training."
            )
        return newly

    def frozen_parameter_names(self) -> list[str]:
        """The parameters this freezer froze (the user's own frozen ones excluded)."""
        return [n for group in self._groups[: self.n_frozen] for n in group if n not in self._user_frozen]

    def _norm_modules(self) -> list[nn.Module]:
        assert self._model is not None
        frozen = set(self.frozen_parameter_names())
        out = []
        for name, module in self._model.named_modules():
            if getattr(module, "track_running_stats", False) and any(
                f"{name}.{p}" in frozen for p, _ in module.named_parameters(recurse=False)
            ):
                out.append(module)
        return out

    def _hold_norm_stats(self) -> None:
        for handle in self._norm_hooks:
            handle.remove()
        self._norm_hooks = []
        for module in self._norm_modules():
            module.eval()
            self._norm_hooks.append(module.register_forward_pre_hook(_stay_in_eval))

    def _reset_compiled(self) -> None:
        """Compiled code guards on ``requires_grad`` (it recompiles by itself), not on hooks added later."""
        if self.freeze_norm_stats and self._model is not None and _is_compiled(self._model):
            torch._dynamo.reset()

    def _record(self, n_samples: int) -> None:
        """The frozen-layer count of this sample point into the tracker's history (``logged`` series)."""
        record = getattr(self._tracker, "record", None)
        if record is not None:
            record(f"{self._tracker.prefix}/{FROZEN_LAYERS_KEY}", float(self.n_frozen), n_samples - 1)

    def detach(self) -> None:
        """Remove the normalisation hooks (the parameters stay frozen: freezing is never undone behind your back)."""
        for handle in self._norm_hooks:
            handle.remove()
        self._norm_hooks = []

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The decisions so far: frozen prefix, streaks, events, and the settings they depend on."""
        if self._pending_state is not None and not self._layer_names:
            return dict(self._pending_state)
        return {
            "version": STATE_VERSION,
            "layer_names": list(self._layer_names),
            "n_frozen": self.n_frozen,
            "streaks": list(self.streaks),
            "checked_samples": self.checked_samples,
            "settings": self._settings(),
            "events": [vars(event).copy() for event in self.events],
        }

    def _settings(self) -> dict[str, Any]:
        return {
            "change_tol": self.change_tol,
            "max_variance_ratio": self.max_variance_ratio,
            "lag": self.lag,
            "window": self.window,
            "horizon": self.horizon,
            "patience": self.patience,
            "keep_trainable": self.keep_trainable,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the decisions (validated); the frozen prefix is frozen again at once, or at :meth:`attach`."""
        if not state:
            return
        if self._model is None:
            self._pending_state = dict(state)
        else:
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        where, n = "LayerFreezer: the checkpoint", len(self._layer_names)
        schema = {
            "version": Equals(STATE_VERSION, "this release's freezer state"),
            "layer_names": Equals(self._layer_names, "the monitored layers"),
            "n_frozen": Int(0, n),
            "streaks": ListOf(Int(0), length=n, each="monitored layer"),
            "checked_samples": Int(0),
            "settings": Equals(self._settings(), "this freezer's settings"),
            "events": ListOf(ANY_DICT),
        }
        _, _, n_frozen, streaks, checked, _, events = check_state(state, schema, where).values()
        try:
            parsed = [FreezeEvent(**event) for event in events]
        except TypeError:
            raise field_error(where, "events", f"must be a list of freeze events, got {shown(events)}") from None
        if sum(len(e.layers) for e in parsed) != n_frozen:
            raise field_error(where, "events", f"must freeze {n_frozen} layers in all, got {shown(events)}")
        self.streaks = list(streaks)
        self.checked_samples = checked
        self.events = []
        last = parsed[-1] if parsed else FreezeEvent([], 0, -1, -1, -1, 0)
        self.freeze_prefix(n_frozen, epoch=last.epoch, step=last.step, sample=last.sample)
        self.events = parsed


def _stay_in_eval(module: nn.Module, args: Any) -> None:
    module.training = False


def _is_compiled(model: nn.Module) -> bool:
    return any(type(m).__name__ == "OptimizedModule" for m in model.modules()) or hasattr(model, "_compiler_ctx")


def frozen_at_from_series(frozen_layers: Sequence[float], n_layers: int) -> list[int | None]:
    """Per layer, the first sample point at which it was frozen (``None``: never), from the logged count series.

    Example:
        >>> frozen_at_from_series([0, 0, 1, 1, 3, 3], 4)
        [2, 4, 4, None]
    """
    out: list[int | None] = [None] * n_layers
    for t, value in enumerate(frozen_layers):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        for layer in range(min(int(value), n_layers)):
            if out[layer] is None:
                out[layer] = t
    return out
