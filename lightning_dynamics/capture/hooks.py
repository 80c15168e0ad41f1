"""Forward hooks that feed a :class:`SummaryAccumulator` (no Lightning import)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from lightning_dynamics.capture.summaries import SummaryAccumulator, floating_tensors


class ActivationCapture:
    """Forward hooks on named modules; while :attr:`enabled`, every call adds its output to the accumulator.

    A module called ``k`` times in one forward contributes ``k`` times; tuple, list and dict outputs
    contribute each floating tensor. Nothing is kept but the running sums.

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
        self._handles: list[RemovableHandle] = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> ActivationCapture:
        if self._handles:
            return self
        for index, (_, module) in enumerate(self.layers):
            self._handles.append(module.register_forward_hook(self._make_hook(index)))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.enabled = False

    def _make_hook(self, index: int) -> Any:
        add = self.accumulator.add

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.enabled:
                for tensor in floating_tensors(output):
                    add(index, tensor)

        return hook

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
