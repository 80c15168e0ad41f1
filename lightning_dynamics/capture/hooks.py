"""Forward hooks that feed a :class:`SummaryAccumulator` (no Lightning import)."""

from __future__ import annotations

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
        self.disabled: dict[int, str] = {}  # layer index -> the error that disabled it
        self._handles: list[RemovableHandle] = []

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
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.enabled = False

    def _make_hook(self, index: int, module: nn.Module) -> Any:
        add = self.accumulator.add
        first_only = isinstance(module, _FIRST_OUTPUT_ONLY)

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self.enabled or index in self.disabled:
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
