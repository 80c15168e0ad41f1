"""Forward hooks that feed a :class:`SummaryAccumulator` (no Lightning import).

Only the training forward is recorded. Other forwards of the same model happen around it: a probe, the shadow of a
twin trajectory (:class:`~lightning_dynamics.decisions.lyapunov.TwinTrajectory`), another callback's evaluation. Two
mechanisms keep them out, whatever order the callbacks run in:

* :func:`side_forward`: a forward that is not training says so; while it runs no capture records (but its owner's:
  a probe records into its own tracker only).
* :meth:`ActivationCapture.record_during` / :meth:`ActivationCapture.pause_during`: a capture that records only
  while a given method runs (the framework's training step: Lightning's ``Strategy.training_step``, the
  ``transformers`` ``Trainer.training_step``), or never while one runs (Fabric's ``Fabric.call``, which runs the
  callbacks' hooks). The method is wrapped by an attribute of that one object, removed when no capture uses it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_dynamics.capture.summaries import SummaryAccumulator, UnitStatsAccumulator, floating_tensors

# Modules returning ``(output, state)``: only the output is the layer's activation (not hidden/cell
# states, not attention weights).
_FIRST_OUTPUT_ONLY: tuple[type[nn.Module], ...] = (nn.RNNBase, nn.MultiheadAttention)

# The owners of the side forwards running now, innermost last (see side_forward).
_SIDE_FORWARDS: list[object] = []


@contextmanager
def side_forward(owner: object = None) -> Iterator[None]:
    """Mark the forward calls made inside this block as not training: no :class:`ActivationCapture` records them,
    except ``owner`` when it is one (a probe records into its own tracker and no other).

    For forwards that run beside training on the same model: a probe batch, the shadow step of a twin trajectory,
    an evaluation run from a callback hook. Nested blocks: the innermost owner decides.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        >>> acc = SummaryAccumulator(2, "mean", torch.device("cpu"))
        >>> with ActivationCapture(list(net.named_children()), acc) as capture, capture.capturing():
        ...     with side_forward():
        ...         _ = net(torch.randn(5, 3))  # e.g. another callback's evaluation: not recorded
        >>> acc.counts
        [0, 0]
    """
    _SIDE_FORWARDS.append(owner)
    try:
        yield
    finally:
        _SIDE_FORWARDS.pop()


class _MethodWindow:
    """Switches captures on (``opens``) or off (``pauses``) while ``owner.<name>(...)`` runs.

    Installed as an attribute of ``owner`` itself (the object's own method is looked up on the instance first, so
    the framework's call reaches this wrapper), shared by every capture that uses the same method, and removed when
    the last one leaves. ``__wrapped__`` is the original method (``inspect`` and Lightning's ``is_overridden`` see
    through it).
    """

    def __init__(self, owner: object, name: str) -> None:
        self.owner, self.name = owner, name
        self.had_attribute = name in vars(owner)
        self.previous = vars(owner).get(name)
        self.method = getattr(owner, name)
        if not callable(self.method):
            raise ValueError(f"`{name}` of {type(owner).__name__} must be a method, got {self.method!r:.80}.")
        self.opens: list[ActivationCapture] = []
        self.pauses: list[ActivationCapture] = []
        functools.update_wrapper(self, self.method)

    @classmethod
    def of(cls, owner: object, name: str) -> _MethodWindow:
        current = vars(owner).get(name)
        if isinstance(current, _MethodWindow):
            return current
        window = cls(owner, name)
        setattr(owner, name, window)
        return window

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # The captures of this call, fixed at its start: one added or removed meanwhile is left as it is.
        opened = [(capture, capture.enabled) for capture in self.opens]
        paused = list(self.pauses)
        for capture, _ in opened:
            capture.enabled = True
        for capture in paused:
            capture.paused += 1
        try:
            return self.method(*args, **kwargs)
        finally:
            for capture, was in opened:
                capture.enabled = was
            for capture in paused:
                capture.paused -= 1

    def discard(self, capture: ActivationCapture) -> None:
        self.opens = [c for c in self.opens if c is not capture]
        self.pauses = [c for c in self.pauses if c is not capture]
        if not self.opens and not self.pauses and vars(self.owner).get(self.name) is self:
            if self.had_attribute:
                setattr(self.owner, self.name, self.previous)
            else:
                delattr(self.owner, self.name)


class LayerCaptureWarning(UserWarning):
    """Summarising a layer's output failed; the layer is disabled and its points are missing."""


class ActivationCapture:
    """Forward hooks on named modules; while :attr:`enabled`, every call adds its output to the accumulator.

    A module called ``k`` times in one forward contributes ``k`` times; tuple, list and dict outputs
    contribute each floating tensor (recurrent layers and ``nn.MultiheadAttention``: their first output
    only), nested tensors their components. Nothing is kept but the running sums.

    A failure inside a hook (an output that cannot be summarised, e.g. a sparse tensor, or any error in
    the reduction) never stops training: the hook warns once with a :class:`LayerCaptureWarning` naming the
    layer and the error, disables that layer (:attr:`disabled`; what it accumulated in the interval is
    dropped, so its points are missing from then on) and returns.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        >>> acc = SummaryAccumulator(2, "mean", torch.device("cpu"))
        >>> with ActivationCapture(list(net.named_children()), acc) as capture:
        ...     with capture.capturing():
        ...         _ = net(torch.randn(5, 3))
        >>> acc.counts
        [20, 10]
        >>> len(net[0]._forward_hooks)
        0
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], accumulator: SummaryAccumulator) -> None:
        self.layers = layers
        self.accumulator = accumulator
        self.enabled = False
        self.paused = 0  # calls of a paused method (pause_during) in progress: nothing is recorded meanwhile
        self.suspended = False  # switched off by hand, whatever the windows say (e.g. to time the hooks' cost)
        self.disabled: dict[int, str] = {}  # layer index -> the error that disabled it
        self._handles: list[RemovableHandle] = []
        self._windows: list[_MethodWindow] = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> ActivationCapture:
        if self._handles:
            return self
        for index, (_, module) in enumerate(self.layers):
            self._handles.append(module.register_forward_hook(self._make_hook(index, module)))
        return self

    def remove(self) -> None:
        """Remove the hooks and leave every method window (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for window in self._windows:
            window.discard(self)
        self._windows = []
        self.enabled = False

    @property
    def windowed(self) -> bool:
        """Whether recording is switched by a method window (:meth:`record_during`) instead of :attr:`enabled`."""
        return any(self in window.opens for window in self._windows)

    def record_during(self, owner: object, name: str) -> None:
        """Record only while ``owner.<name>(...)`` runs (e.g. a Lightning strategy's ``training_step``), until
        :meth:`remove`: the calls of that method are the training forwards, whatever else runs in between."""
        window = _MethodWindow.of(owner, name)
        window.opens.append(self)
        self._windows.append(window)

    def pause_during(self, owner: object, name: str) -> None:
        """Never record while ``owner.<name>(...)`` runs (e.g. ``Fabric.call``, which runs the callbacks' hooks),
        until :meth:`remove`."""
        window = _MethodWindow.of(owner, name)
        window.pauses.append(self)
        self._windows.append(window)

    def _make_hook(self, index: int, module: nn.Module) -> Any:
        add = self.accumulator.add
        first_only = isinstance(module, _FIRST_OUTPUT_ONLY)

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if _SIDE_FORWARDS:
                if _SIDE_FORWARDS[-1] is not self:
                    return  # a probe, a twin's step, a callback's evaluation: not this capture's training forward
            elif not self.enabled or self.paused or self.suspended:
                return
            if index in self.disabled:
                return
            if first_only and isinstance(output, tuple) and output:
                output = output[0]
            try:
                for tensor in floating_tensors(output):
                    add(index, tensor)
            except Exception as error:  # a monitor failure must not stop training
                self._disable(index, error)

        return hook

    def _disable(self, index: int, error: Exception) -> None:
        name, module = self.layers[index]
        self.disabled[index] = f"{type(error).__name__}: {error}"
        self.accumulator.disable(index)
        warnings.warn(
            f"ActivationCapture: summarising the output of layer {name!r} ({type(module).__name__}) failed with "
            f"{self.disabled[index]}. The layer is disabled: its points are missing from now on; training goes "
            "on. Choose other layers with `layers=` to watch it.",
            LayerCaptureWarning,
            stacklevel=3,
        )

    @contextmanager
    def capturing(self) -> Iterator[None]:
        previous, self.enabled = self.enabled, True
        try:
            yield
        finally:
            self.enabled = previous

    def __enter__(self) -> ActivationCapture:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.remove()


class UnitStatsCapture:
    """Forward hooks on activation modules that feed a :class:`UnitStatsAccumulator` (dead and saturated units).

    Records while ``gate()`` is true: the tracker passes the state of its :class:`ActivationCapture`, so the same
    forwards are recorded (training forwards, or the probe). Like :class:`ActivationCapture`, a failure inside a
    hook never stops training: the layer warns once and is left out.

    Args:
        layers: ``(name, module, unit_dim)`` per activation layer.
        accumulator: the counts.
        gate: whether the forward being run is recorded.
    """

    def __init__(
        self,
        layers: list[tuple[str, nn.Module, int]],
        accumulator: UnitStatsAccumulator,
        gate: Callable[[], bool],
    ) -> None:
        self.layers = layers
        self.accumulator = accumulator
        self.gate = gate
        self.disabled: dict[int, str] = {}
        self._handles: list[RemovableHandle] = []

    def attach(self) -> UnitStatsCapture:
        if not self._handles:
            for index, (_, module, unit_dim) in enumerate(self.layers):
                self._handles.append(module.register_forward_hook(self._make_hook(index, unit_dim)))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _make_hook(self, index: int, unit_dim: int) -> Any:
        add = self.accumulator.add

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if index in self.disabled or not self.gate():
                return
            try:
                for tensor in floating_tensors(output):
                    add(index, tensor, unit_dim)
            except Exception as error:  # a monitor failure must not stop training
                name = self.layers[index][0]
                self.disabled[index] = f"{type(error).__name__}: {error}"
                self.accumulator.mixed[index] = True
                warnings.warn(
                    f"UnitStatsCapture: counting the units of layer {name!r} failed with {self.disabled[index]}; its "
                    "dead/saturated fraction is missing from now on, training goes on.",
                    LayerCaptureWarning,
                    stacklevel=2,
                )

        return hook
