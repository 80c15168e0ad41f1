"""Per-layer activation summaries accumulated on the device (METHOD.md section 0; no Lightning import).

Each hooked output adds one fused reduction to a preallocated ``[L]`` accumulator; element counts come
from tensor shapes and stay on the host, so nothing in the hot path waits for the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

SUMMARY_CHOICES = ("rms", "mean", "abs_mean", "std")


def floating_tensors(output: Any) -> Iterator[Tensor]:
    """The floating-point tensors of a module output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(output, Tensor):
        if output.is_floating_point() and output.numel() > 0:
            yield output
    elif isinstance(output, (tuple, list)):
        for item in output:
            yield from floating_tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from floating_tensors(item)


class SummaryAccumulator:
    """Running sums of one summary for ``L`` layers between two sample points.

    ``sums[:, 0]`` holds the main sum (``sum a^2`` for ``rms``, ``sum a`` for ``mean``, ``sum |a|`` for
    ``abs_mean``, ``sum a`` for ``std``), ``sums[:, 1]`` ``sum a^2`` for ``std``. Sums are float64 on the
    device (float32 where the device has no float64, e.g. MPS); counts are host integers.
    """

    def __init__(self, n_layers: int, summary: str, device: torch.device) -> None:
        if summary not in SUMMARY_CHOICES:
            raise ValueError(f"`summary` must be one of {SUMMARY_CHOICES}, got {summary!r}.")
        self.summary = summary
        self.n_layers = n_layers
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(n_layers, 2 if summary == "std" else 1, dtype=dtype, device=device)
        self.counts = [0] * n_layers

    @torch.no_grad()
    def add(self, index: int, activation: Tensor) -> None:
        """Add one output tensor of layer ``index``: one fused reduction, no host synchronisation."""
        a = activation.detach()
        row = self.sums[index]  # a view: the in-place ops below write the accumulator directly
        if self.summary == "rms":
            if a.dtype in (torch.float32, torch.float64) and a.is_contiguous():
                flat = a.view(-1)
                row.add_(torch.dot(flat, flat))  # BLAS dot: one read, ~2x faster than vector_norm on CPU
            else:  # half/bfloat16 (autocast) or strided: accumulate in float32
                norm = torch.linalg.vector_norm(a, 2, dtype=torch.float32)
                row.addcmul_(norm, norm)
        elif self.summary == "abs_mean":
            row.add_(torch.linalg.vector_norm(a, 1, dtype=torch.float32))
        elif self.summary == "mean":
            row.add_(a.sum(dtype=torch.float32))
        else:
            var, mean = torch.var_mean(a.float(), correction=0)
            n = a.numel()
            row.add_(torch.stack([mean * n, (var + mean.square()) * n]))
        self.counts[index] += a.numel()

    def packed(self) -> Tensor:
        """``[L, k + 1]``: the sums with the counts as last column, ready for one all-reduce."""
        counts = torch.tensor(self.counts, dtype=self.sums.dtype).to(self.sums.device, non_blocking=True)
        return torch.cat([self.sums, counts.unsqueeze(-1)], dim=-1)

    def reset(self) -> None:
        self.sums.zero_()
        self.counts = [0] * self.n_layers

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.detach().cpu().clone(), "counts": list(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums.copy_(state["sums"].to(self.sums))
        self.counts = [int(c) for c in state["counts"]]


def summarize(packed: Tensor, summary: str) -> Tensor:
    r"""Summary values ``[L]`` in float32 from packed sums ``[L, k + 1]`` (counts last).

    .. math:: \mathrm{rms} = \sqrt{\textstyle\sum a^2 / n},\ \mathrm{mean} = \textstyle\sum a / n,\
              \mathrm{abs\_mean} = \textstyle\sum |a| / n,\ \mathrm{std} = \sqrt{\textstyle\sum a^2/n - (\sum a/n)^2}

    A layer with ``n = 0`` (not called in the interval) gives NaN.
    """
    counts = packed[:, -1]
    n = torch.where(counts > 0, counts, torch.full_like(counts, float("nan")))
    first = packed[:, 0] / n
    if summary == "rms":
        value = first.clamp(min=0).sqrt()
    elif summary == "std":
        value = (packed[:, 1] / n - first.square()).clamp(min=0).sqrt()
    else:
        value = first
    return value.to(torch.float32)
