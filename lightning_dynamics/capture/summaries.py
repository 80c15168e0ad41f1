"""Per-layer activation summaries accumulated on the device (docs/method.md section 0; no Lightning import).

Each hooked output adds one fused reduction to a preallocated ``[L]`` accumulator; element counts come
from tensor shapes and stay on the host, so nothing in the hot path waits for the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

SUMMARY_CHOICES = ("rms", "mean", "abs_mean", "std")

# rms: a layer whose last value lies outside [2^-50, 2^50] (or whose sum of squares overflowed or was 0) is
# summed with scaling from then on: float32 squares overflow above ~1.8e19 and underflow below ~1e-19.
_RMS_SAFE_LOW, _RMS_SAFE_HIGH = 2.0**-50, 2.0**50
# Below this rms, float32 squares of the values are subnormal or zero: an unscaled sum is not the value.
_RMS_UNDERFLOW = 2.0**-60


def floating_tensors(output: Any) -> Iterator[Tensor]:
    """The floating-point tensors of a module output (a tensor, or tuples, lists and dicts of them).

    A nested tensor (e.g. ``nn.TransformerEncoder`` with a padding mask in eval) yields its components:
    the real tokens, without padding.
    """
    if isinstance(output, Tensor):
        if output.is_nested:
            if output.is_floating_point():
                yield from (part for part in output.unbind() if part.numel() > 0)
        elif output.is_floating_point() and output.numel() > 0:
            yield output
    elif isinstance(output, (tuple, list)):
        for item in output:
            yield from floating_tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from floating_tensors(item)


class SummaryAccumulator:
    r"""Running sums of one summary for ``L`` layers between two sample points.

    ``sums[:, 0]`` holds the main sum (``sum a^2`` for ``rms``, ``sum a`` for ``mean``, ``sum |a|`` for
    ``abs_mean``, ``sum (a - K)`` for ``std``), ``sums[:, 1]`` ``sum (a - K)^2`` for ``std``. Sums are
    float64 on the device (float32 where the device has no float64, e.g. MPS); counts are host integers.
    :meth:`packed` is sum-reducible: under DDP one all-reduce with a plain SUM gives the global sums.

    ``std`` is accurate where ``|mean| >> std`` (docs/method.md section 0): each output is reduced around
    its own first element (``var_mean`` of ``a - a_0`` in float32: exact subtraction, no cancellation), and
    its mean and variance are added as sums around a per-layer shift ``K`` (Chan et al. 1979's pairwise
    update written as shifted sums). ``K`` is the previous sample point's global mean, set by
    :meth:`summarize` from the all-reduced sums, so it is identical on every rank; the first sample interval
    has ``K = 0``. With ``K`` within ~1e4 std of the mean the result is exact to float32 rounding (tested
    at ``|mean|/std = 1e6`` after the first interval); the first interval is exact up to ``|mean|/std``
    ~1e4 (float64 cancellation of ``sum (a-K)^2 / n - mean^2`` beyond).

    ``rms`` uses a BLAS dot product (one read of the output). A layer whose values reach the limits of
    float32 squares (rms above ``2^50`` or below ``2^-50``, or an overflowed/zero sum of squares) is
    flagged by :meth:`summarize` and summed with scaling by its largest magnitude from the next sample
    interval on (about 3x the cost, for that layer only); the interval in which an unscaled layer's squares
    overflow or underflow is reported as NaN (a missing point that the measures bridge), never as a wrong
    number.

    Example:
        >>> import torch
        >>> acc = SummaryAccumulator(1, "std", torch.device("cpu"))
        >>> acc.add(0, torch.tensor([1.0, 2.0, 3.0]) + 1e4)
        >>> acc.summarize(acc.packed())
        tensor([0.8165])
    """

    def __init__(self, n_layers: int, summary: str, device: torch.device) -> None:
        if summary not in SUMMARY_CHOICES:
            raise ValueError(f"`summary` must be one of {SUMMARY_CHOICES}, got {summary!r}.")
        self.summary = summary
        self.n_layers = n_layers
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(n_layers, 2 if summary == "std" else 1, dtype=dtype, device=device)
        self.counts = [0] * n_layers
        # std: per-layer shift K (float64 where available); rms: layers summed with scaling (host flags).
        self.shift = torch.zeros(n_layers, dtype=dtype, device=device)
        self.scaled = [False] * n_layers
        # Layers whose capture failed: their packed count is NaN, which survives the all-reduce (SUM), so the
        # layer is missing on every rank, as in one process, instead of summarising the other ranks' data.
        self.disabled = [False] * n_layers

    @torch.no_grad()
    def add(self, index: int, activation: Tensor) -> None:
        """Add one output tensor of layer ``index``: one fused reduction, no host synchronisation.

        Raises:
            TypeError: a sparse or nested output (the capture hook summarises nested outputs through their
                components and disables a layer whose outputs cannot be summarised).
        """
        a = activation.detach()
        if a.layout != torch.strided or a.is_nested:
            raise TypeError(f"cannot summarise a {a.layout} tensor{' (nested)' if a.is_nested else ''}.")
        row = self.sums[index]  # a view: the in-place ops below write the accumulator directly
        if self.summary == "rms":
            if self.scaled[index]:
                row.add_(_scaled_square_sum(a, row.dtype))
            elif a.dtype in (torch.float32, torch.float64) and a.is_contiguous():
                flat = a.view(-1)
                row.add_(torch.dot(flat, flat))  # BLAS dot: one read of the output
            else:  # half/bfloat16 (autocast) or strided: accumulate in float32
                norm = torch.linalg.vector_norm(a, 2, dtype=torch.float32)
                row.addcmul_(norm, norm)
        elif self.summary == "abs_mean":
            row.add_(torch.linalg.vector_norm(a, 1, dtype=torch.float32))
        elif self.summary == "mean":
            row.add_(a.sum(dtype=torch.float32))
        else:
            a = a.float()
            first = a[(0,) * a.ndim].reshape(1)  # the output's own shift: exact subtraction near it (no copy)
            var, mean = torch.var_mean(a - first, correction=0)
            n = a.numel()
            offset = (first.to(row.dtype) - self.shift[index : index + 1]) + mean.to(row.dtype)  # mean - K
            row.add_(torch.cat([offset * n, (var.to(row.dtype) + offset.square()) * n]))
        self.counts[index] += a.numel()

    def discard(self, index: int) -> None:
        """Drop what layer ``index`` accumulated in this interval (its point becomes missing); no host sync."""
        self.sums[index].zero_()
        self.counts[index] = 0

    def disable(self, index: int) -> None:
        """Drop layer ``index``'s interval and mark it missing from now on, on every rank (count NaN)."""
        self.discard(index)
        self.disabled[index] = True

    def packed(self) -> Tensor:
        """``[L, k + 1]``: the sums with the counts as last column, ready for one all-reduce (SUM).

        A disabled layer's count is NaN: after the all-reduce its value is NaN on every rank.
        """
        marked = [math.nan if off else float(n) for n, off in zip(self.counts, self.disabled, strict=True)]
        counts = torch.tensor(marked, dtype=self.sums.dtype).to(self.sums.device, non_blocking=True)
        return torch.cat([self.sums, counts.unsqueeze(-1)], dim=-1)

    def summarize(self, packed: Tensor) -> Tensor:
        """Summary values ``[L]`` float32 from (all-reduced) ``packed`` sums, and the state for the next interval.

        Equal to the module-level :func:`summarize`; in addition it moves the ``std`` shift ``K`` to this
        interval's global mean and flags ``rms`` layers that need scaled squares. Identical on every rank
        given the same ``packed``. ``rms`` reads the flags on the host: one small synchronisation per
        sample point (none in :meth:`add`).
        """
        values = summarize(packed, self.summary)
        counts = packed[:, -1]
        if self.summary == "std":
            mean_offset = packed[:, 0] / counts.clamp(min=1)
            moved = self.shift + mean_offset.to(self.shift)
            self.shift = torch.where((counts > 0) & torch.isfinite(moved), moved, self.shift)
        elif self.summary == "rms":
            sum_squares = packed[:, 0]
            extreme = (counts > 0) & (
                (sum_squares == float("inf")) | (values == 0) | (values > _RMS_SAFE_HIGH) | (values < _RMS_SAFE_LOW)
            )
            # A layer summed unscaled whose squares overflowed or underflowed has no usable value: missing.
            unscaled = ~torch.tensor(self.scaled, dtype=torch.bool).to(values.device, non_blocking=True)
            broken = extreme & unscaled & ((sum_squares == float("inf")) | (values < _RMS_UNDERFLOW))
            values = torch.where(broken, torch.full_like(values, float("nan")), values)
            self.scaled = [old or new for old, new in zip(self.scaled, extreme.tolist(), strict=True)]
        return values

    def reset(self) -> None:
        """Zero the sums and counts for the next sample interval (the ``std`` shift and ``rms`` flags stay)."""
        self.sums.zero_()
        self.counts = [0] * self.n_layers

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": self.sums.detach().cpu().clone(),
            "counts": list(self.counts),
            "shift": self.shift.detach().cpu().clone(),
            "scaled": list(self.scaled),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums.copy_(state["sums"].to(self.sums))
        self.counts = [int(c) for c in state["counts"]]
        if "shift" in state:  # states saved before the shift existed start from K = 0
            self.shift.copy_(state["shift"].to(self.shift))
        if "scaled" in state:
            self.scaled = [bool(flag) for flag in state["scaled"]]


def _scaled_square_sum(a: Tensor, dtype: torch.dtype) -> Tensor:
    """``sum a^2`` without float32 overflow or underflow: ``|a / max|a||^2``, scaled back in ``dtype``."""
    if a.numel() == 0:
        return torch.zeros((), dtype=dtype, device=a.device)
    low, high = torch.aminmax(a)  # one read, no |a| copy
    largest = torch.maximum(-low, high).to(torch.float32)
    scale = torch.where((largest > 0) & torch.isfinite(largest), largest, torch.ones_like(largest))
    scaled = (a / scale.to(a.dtype)).reshape(-1)
    squares = torch.dot(scaled, scaled) if scaled.dtype in (torch.float32, torch.float64) else None
    if squares is None:  # half/bfloat16: accumulate in float32
        norm = torch.linalg.vector_norm(scaled, 2, dtype=torch.float32)
        squares = norm.square()
    return squares.to(dtype) * scale.to(dtype).square()


def summarize(packed: Tensor, summary: str) -> Tensor:
    r"""Summary values ``[L]`` in float32 from packed sums ``[L, k + 1]`` (counts last).

    .. math:: \mathrm{rms} = \sqrt{\textstyle\sum a^2 / n},\ \mathrm{mean} = \textstyle\sum a / n,\
              \mathrm{abs\_mean} = \textstyle\sum |a| / n,\
              \ \mathrm{std} = \sqrt{\textstyle\sum (a-K)^2/n - (\sum (a-K)/n)^2}

    (``std`` is shift-invariant: any ``K`` gives the same value.) A layer with ``n = 0`` (not called in the
    interval) gives NaN. Stateless; :meth:`SummaryAccumulator.summarize` also keeps the accumulator's
    accuracy state up to date and is what a training loop should call.
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
