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

from lightning_dynamics.validation import Bool, Default, Int, ListOf, OrNone, TensorOf, check_state

SUMMARY_CHOICES = ("rms", "mean", "abs_mean", "std")

# rms: a layer whose last value lies outside [2^-50, 2^50] (or whose sum of squares overflowed or was 0) is
# summed with scaling from then on: float32 squares overflow above ~1.8e19 and underflow below ~1e-19.
_RMS_SAFE_LOW, _RMS_SAFE_HIGH = 2.0**-50, 2.0**50
# Below this rms, float32 squares of the values are subnormal or zero: an unscaled sum is not the value.
_RMS_UNDERFLOW = 2.0**-60
# mean/abs_mean: a layer whose |value| exceeds 2^50 (or whose sum overflowed) is summed with scaling from then
# on: a float32 sum of n values of magnitude m overflows once n*m > ~3.4e38, and 2^50 leaves n up to 2^78.
# (No lower limit: sums of small values do not underflow, and a value below float32's normal range cannot be
# held by the float32 history to more digits anyway.)
_SUM_SAFE_HIGH = 2.0**50


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
    float64 on the device (float32 where the device has no float64, e.g. MPS), and so are the element counts
    (``count_sums``; :attr:`counts` reads them to the host): nothing in :meth:`add` is a Python number that
    changes from step to step, so ``torch.compile`` traces the hooks once instead of recompiling at every step.
    :meth:`packed` is sum-reducible: under DDP one all-reduce with a plain SUM gives the global sums.

    Each output is reduced in float64 if it is float64 (``precision="64-true"``, ``model.double()``), in
    float32 otherwise (also for float16/bfloat16 under autocast); any layout (channels-last, transposed,
    sliced) is reduced in place, without a copy. So a float64 model's summaries are exact to float64 in the
    sums; the value is rounded once to float32 in :meth:`summarize`, as the history is float32 (docs/method.md
    section 0), a relative error of at most 6e-8.

    ``std`` is accurate where ``|mean| >> std`` (docs/method.md section 0): each output is reduced around
    its own first element (``var_mean`` of ``a - a_0`` in float32, float64 for float64 outputs: exact
    subtraction, no cancellation), and its mean and variance are added as sums around a per-layer shift ``K``
    (Chan et al. 1979's pairwise update written as shifted sums). ``K`` is the previous sample point's global
    mean, set by :meth:`summarize` from the all-reduced sums, so it is identical on every rank; the first
    sample interval has ``K = 0``. With ``K`` within ~1e4 std of the mean the result is exact to float32
    rounding (tested at ``|mean|/std = 1e6`` after the first interval); the first interval is exact up to
    ``|mean|/std`` ~1e4 (float64 cancellation of ``sum (a-K)^2 / n - mean^2`` beyond).

    ``rms`` uses a BLAS dot product (one read of the output), ``mean`` a sum and ``abs_mean`` a 1-norm. A
    layer whose values reach the limits of float32 sums (``rms`` above ``2^50`` or below ``2^-50``, ``mean``
    or ``abs_mean`` above ``2^50`` in magnitude, or a sum that overflowed) is
    flagged by :meth:`summarize` and summed with scaling by its largest magnitude from the next interval on
    (about 3x the cost, for that layer only), so no finite activation makes a sum overflow; an interval in which
    an unscaled layer's sum overflows (or its squares underflow) is reported as NaN (a missing point that the
    measures bridge), never as a wrong number. The tracker closes intervals with :meth:`close` (no kernel) and
    summarises the pending ones at once (:meth:`take`) when it computes the measures, so a layer is flagged at
    that computation and the intervals closed before it may be missing too.

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
        k = 2 if summary == "std" else 1
        # The open interval, where the hooks add: tensors that stay the same objects for the accumulator's life, so
        # torch.compile traces the hooks once (a hook writing into a view that moves along a buffer is traced with
        # the view's first offset and keeps writing there).
        self.sums = torch.zeros(n_layers, k, dtype=dtype, device=device)
        self.count_sums = torch.zeros(n_layers, dtype=dtype, device=device)
        # [capacity, L, k + 1]: the closed intervals not yet summarised (0 .. closed - 1), packed; zeros beyond.
        self._block = torch.zeros(8, n_layers, k + 1, dtype=dtype, device=device)
        self.closed = 0
        # std: per-layer shift K (float64 where available); rms: layers summed with scaling (host flags).
        self.shift = torch.zeros(n_layers, dtype=dtype, device=device)
        self.scaled = [False] * n_layers
        # Layers whose capture failed: their packed count is NaN, which survives the all-reduce (SUM), so the
        # layer is missing on every rank, as in one process, instead of summarising the other ranks' data.
        self.disabled = [False] * n_layers
        self._disabled_from: dict[int, int] = {}  # layer -> the first pending interval it is disabled in

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
        exact = _reduction_dtype(a)  # float64 for float64 outputs, float32 for the rest
        if self.summary != "std" and self.scaled[index]:
            row.add_(_scaled_sum(a, self.summary, row.dtype))
        elif self.summary == "rms":
            if a.dtype in (torch.float32, torch.float64) and a.is_contiguous():
                flat = a.view(-1)
                row.add_(torch.dot(flat, flat))  # BLAS dot: one read of the output
            else:  # half/bfloat16 (autocast) or strided: one norm, accumulated in float32 or float64
                norm = torch.linalg.vector_norm(a, 2, dtype=exact)
                row.addcmul_(norm, norm)
        elif self.summary == "abs_mean":
            row.add_(torch.linalg.vector_norm(a, 1, dtype=exact))
        elif self.summary == "mean":
            row.add_(a.sum(dtype=exact))
        else:
            a = a.to(exact)
            first = a[(0,) * a.ndim].reshape(1)  # the output's own shift: exact subtraction near it (no copy)
            var, mean = torch.var_mean(a - first, correction=0)
            n = a.numel()
            offset = (first.to(row.dtype) - self.shift[index : index + 1]) + mean.to(row.dtype)  # mean - K
            row.add_(torch.cat([offset * n, (var.to(row.dtype) + offset.square()) * n]))
        self.count_sums[index].add_(a.numel())

    @property
    def counts(self) -> list[int]:
        """The elements summed per layer in this interval (reads the device: for tests and checkpoints)."""
        return [int(c) for c in self.count_sums.tolist()]

    def discard(self, index: int) -> None:
        """Drop what layer ``index`` accumulated in this interval (its point becomes missing); no host sync."""
        self.sums[index].zero_()
        self.count_sums[index].zero_()

    def disable(self, index: int) -> None:
        """Drop layer ``index``'s interval and mark it missing from now on, on every rank (count NaN)."""
        self.discard(index)
        self.disabled[index] = True
        self._disabled_from.setdefault(index, self.closed)

    def packed(self) -> Tensor:
        """``[L, k + 1]``: the open interval's sums with the counts as last column, ready for one all-reduce (SUM).

        A disabled layer's count is NaN: after the all-reduce its value is NaN on every rank.
        """
        packed = torch.cat([self.sums, self.count_sums.unsqueeze(-1)], dim=-1).unsqueeze(0)
        return self._with_disabled(packed, self.closed)[0]

    def close(self) -> None:
        """Close the open interval: its sums become a pending column and the open sums restart at zero (two copies
        and two fills on the device, no host synchronisation; the storage doubles when full). :meth:`pending` and
        :meth:`take` summarise the pending columns later, all at once."""
        if self.closed == self._block.shape[0]:
            grown = torch.zeros(2 * self.closed, *self._block.shape[1:], dtype=self._block.dtype, device=self.device)
            grown[: self.closed] = self._block
            self._block = grown
        column = self._block[self.closed]
        column[:, :-1].copy_(self.sums)
        column[:, -1].copy_(self.count_sums)
        self.sums.zero_()
        self.count_sums.zero_()
        self.closed += 1

    def pending(self) -> Tensor:
        """``[n, L, k + 1]``: the closed intervals not yet summarised, packed as :meth:`packed` (oldest first; a
        copy, which an in-place all-reduce may overwrite)."""
        return self._with_disabled(self._block[: self.closed].clone(), 0)

    def take(self, packed: Tensor) -> Tensor:
        """Summary values ``[n, L]`` float32 of the pending intervals from their (all-reduced) ``packed`` sums
        (:meth:`pending`), and drop them: the open interval becomes the first again."""
        values = self.summarize(packed)
        self._block[: self.closed].zero_()
        self.closed = 0
        self._disabled_from = dict.fromkeys(self._disabled_from, 0)
        return values

    def _with_disabled(self, block: Tensor, first: int) -> Tensor:
        """``block`` (a copy of columns ``first ..``) with NaN counts for the layers disabled in or before each."""
        for index, since in self._disabled_from.items():
            block[max(0, since - first) :, index, -1] = math.nan
        return block

    @property
    def device(self) -> torch.device:
        return self.sums.device

    def summarize(self, packed: Tensor) -> Tensor:
        """Summary values ``[..., L]`` float32 from (all-reduced) ``packed`` sums ``[..., L, k + 1]``, and the state
        for the next interval.

        Equal to the module-level :func:`summarize`; in addition it moves the ``std`` shift ``K`` to the global
        mean of the last interval in which a layer was called, and flags ``rms`` layers that need scaled squares
        (from the next interval on: the pending intervals were all summed with the flags they find). Identical
        on every rank given the same ``packed``. ``rms`` reads the flags on the host: one small synchronisation
        per call (none in :meth:`add` or :meth:`close`).
        """
        block = packed.reshape(-1, *packed.shape[-2:])
        values = summarize(block, self.summary)
        counts = block[..., -1]
        if self.summary == "std":
            moved = self.shift + (block[..., 0] / counts.clamp(min=1)).to(self.shift)
            usable = (counts > 0) & torch.isfinite(moved)
            order = torch.arange(1, len(block) + 1, device=block.device).unsqueeze(-1)
            last = torch.where(usable, order, 0).amax(0)  # 1 + the last usable interval per layer; 0: none
            latest = moved.gather(0, (last - 1).clamp(min=0).unsqueeze(0)).squeeze(0)
            self.shift = torch.where(last > 0, latest, self.shift)
            return values.reshape(packed.shape[:-1])
        total = block[..., 0]
        overflowed = (total == float("inf")) | (total == float("-inf"))
        if self.summary == "rms":
            extreme = overflowed | (values == 0) | (values > _RMS_SAFE_HIGH) | (values < _RMS_SAFE_LOW)
            broken = overflowed | (values < _RMS_UNDERFLOW)
        else:
            # mean: +inf and -inf partial sums of one interval add up to NaN, so NaN counts as an overflow too.
            overflowed = overflowed | (total.isnan() if self.summary == "mean" else torch.zeros_like(overflowed))
            extreme = overflowed | (values.abs() > _SUM_SAFE_HIGH)
            broken = overflowed
        extreme = (counts > 0) & extreme
        # A layer summed unscaled whose sum overflowed (or squares underflowed) has no usable value: missing.
        unscaled = ~torch.tensor(self.scaled, dtype=torch.bool).to(values.device, non_blocking=True)
        values = torch.where(extreme & unscaled & broken, torch.full_like(values, float("nan")), values)
        self.scaled = [old or new for old, new in zip(self.scaled, extreme.any(0).tolist(), strict=True)]
        return values.reshape(packed.shape[:-1])

    def reset(self) -> None:
        """Zero the open interval's sums and counts (the ``std`` shift and ``rms`` flags stay)."""
        self.sums.zero_()
        self.count_sums.zero_()

    @property
    def nbytes(self) -> int:
        """Bytes the accumulator holds on its device (the intervals' sums and counts, and the ``std`` shift)."""
        return sum(t.numel() * t.element_size() for t in (self.sums, self.count_sums, self._block, self.shift))

    def state_dict(self) -> dict[str, Any]:
        """The open interval's sums and the accuracy state. Summarise the pending intervals first (:meth:`take`).

        Raises:
            RuntimeError: closed intervals are still pending.
        """
        if self.closed:
            raise RuntimeError(f"{self.closed} closed interval(s) are not summarised yet: call take(pending()) first.")
        return {
            "sums": self.sums.detach().cpu().clone(),
            "counts": list(self.counts),
            "shift": self.shift.detach().cpu().clone(),
            "scaled": list(self.scaled),
        }

    def load_state_dict(self, state: Any, where: str = "the checkpoint's dynamics accumulator") -> None:
        """Restore from :meth:`state_dict` after checking every field; nothing changes if one is wrong.

        ``shift`` and ``scaled`` may be absent (states saved before they existed: ``K = 0``, unscaled).

        Args:
            state: from :meth:`state_dict`.
            where: how the message names the state.

        Raises:
            ValueError: naming the field: ``state`` is not a dict, or ``sums`` is not a floating-point tensor
                of shape ``[L, k + 1]``, ``counts`` not ``L`` non-negative integers, ``shift`` not ``L``
                finite floats, ``scaled`` not ``L`` booleans.
        """
        n = self.n_layers
        schema = {
            "sums": TensorOf(shape=self.sums.shape, floating=True),
            "counts": ListOf(Int(0), length=n, each="layer"),
            "shift": Default(TensorOf(shape=(n,), floating=True, finite=True), torch.zeros(n)),
            "scaled": Default(ListOf(Bool(), length=n, each="layer"), [False] * n),
        }
        sums, counts, shift, scaled = check_state(state, schema, where).values()
        self.sums.copy_(sums.to(self.sums))
        self.count_sums.copy_(torch.tensor([float(c) for c in counts], dtype=self.count_sums.dtype))
        self.shift.copy_(shift.to(self.shift))
        self.scaled = list(scaled)


def _reduction_dtype(a: Tensor) -> torch.dtype:
    """The dtype an output is reduced in: float64 for float64 outputs, float32 for every other float."""
    return torch.float64 if a.dtype == torch.float64 else torch.float32


def _scaled_sum(a: Tensor, summary: str, dtype: torch.dtype) -> Tensor:
    """The main sum of ``summary`` (``rms``: ``sum a^2``, ``mean``: ``sum a``, ``abs_mean``: ``sum |a|``) in
    ``dtype``, without overflow or underflow: reduce ``a / max|a|`` (values in [-1, 1]), then scale back."""
    if a.numel() == 0:
        return torch.zeros((), dtype=dtype, device=a.device)
    low, high = torch.aminmax(a)  # one read, no |a| copy
    largest = torch.maximum(-low, high)
    scale = torch.where((largest > 0) & torch.isfinite(largest), largest, torch.ones_like(largest))
    scaled = a / scale
    exact = _reduction_dtype(a)
    if summary == "rms":
        if scaled.dtype in (torch.float32, torch.float64) and scaled.is_contiguous():
            flat = scaled.view(-1)
            reduced = torch.dot(flat, flat)
        else:
            reduced = torch.linalg.vector_norm(scaled, 2, dtype=exact).square()
        return reduced.to(dtype) * scale.to(dtype).square()
    if summary == "abs_mean":
        reduced = torch.linalg.vector_norm(scaled, 1, dtype=exact)
    else:
        reduced = scaled.sum(dtype=exact)
    return reduced.to(dtype) * scale.to(dtype)


def summarize(packed: Tensor, summary: str, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Summary values ``[L]`` in ``dtype`` (float32: the history's) from packed sums ``[L, k + 1]`` (counts last).

    .. math:: \mathrm{rms} = \sqrt{\textstyle\sum a^2 / n},\ \mathrm{mean} = \textstyle\sum a / n,\
              \mathrm{abs\_mean} = \textstyle\sum |a| / n,\
              \ \mathrm{std} = \sqrt{\textstyle\sum (a-K)^2/n - (\sum (a-K)/n)^2}

    (``std`` is shift-invariant: any ``K`` gives the same value.) A layer with ``n = 0`` (not called in the
    interval) gives NaN. Stateless; :meth:`SummaryAccumulator.summarize` also keeps the accumulator's
    accuracy state up to date and is what a training loop should call.

    Args:
        packed: ``[..., L, k + 1]`` sums with the counts last (:meth:`SummaryAccumulator.packed`, all-reduced).
        summary: one of :data:`SUMMARY_CHOICES`.
        dtype: of the result; float64 keeps the full accuracy of float64 sums.

    Returns:
        ``[..., L]`` summary values.
    """
    counts = packed[..., -1]
    n = torch.where(counts > 0, counts, torch.full_like(counts, float("nan")))
    first = packed[..., 0] / n
    if summary == "rms":
        value = first.clamp(min=0).sqrt()
    elif summary == "std":
        value = (packed[..., 1] / n - first.square()).clamp(min=0).sqrt()
    else:
        value = first
    return value.to(dtype)


#: Unit statistics of an activation layer: ``"dead"`` counts each unit's non-zero values (ReLU family), ``"saturated"``
#: counts each unit's values near the activation's bounds (sigmoid, tanh, hardtanh, ...).
UNIT_STAT_KINDS = ("dead", "saturated")


class UnitStatsAccumulator:
    r"""Per-unit counts of ``L`` activation layers between two sample points: dead and saturated units.

    A *unit* is a channel (dim 1) of a convolution's ``[B, C, ...]`` output or a feature (last dim) of a linear
    layer's ``[..., F]`` output; each layer's unit dim is given by the caller (:mod:`~lightning_dynamics.capture.
    layer_stats` reads it from the weight layer before the activation). For each unit ``u`` of layer ``l`` the
    interval adds up

    - ``"dead"`` layers (ReLU family): :math:`c_u = \max |a_u|`; the unit is dead when :math:`c_u = 0`, i.e. it
      was zero on every value of the interval (SageMaker Debugger's DeadRelu with ``threshold_inactivity`` at 0);
    - ``"saturated"`` layers (bounded activations, bounds :math:`[lo, hi]`):
      :math:`c_u = \#\{a_u \le lo + \tau (hi - lo)\ \text{or}\ a_u \ge hi - \tau (hi - lo)\}`, the values of
      the unit near a bound, where the activation's slope is small (tanh: :math:`|a| \ge 0.98`, slope at most 4% of
      its largest; sigmoid: :math:`a \le 0.01` or :math:`\ge 0.99`);

    with :math:`n_u` the values each unit saw. :meth:`fractions` gives, per layer, the fraction of its units that are
    dead, or the mean over its units of the share of their values that are saturated,
    :math:`\frac{1}{U}\sum_u c_u / n_u` (Glorot & Bengio 2010 read saturation as this share; a per-unit cut at 99%,
    as SageMaker Debugger's SaturatedActivation makes on its far stricter bounds, stays near 0 even when 90% of a
    layer's values are saturated). Counts are float64 on the device (float32 where there is none), added with one
    reduction per output and no host synchronisation; they are sum-reducible, so under DDP one all-reduce (SUM) of
    :meth:`packed` gives the global counts. A layer's per-unit buffer is allocated at its first output (its width is
    known then); a layer whose outputs change width (a module reused at several widths) is left out (NaN).

    Args:
        kinds: per layer, ``"dead"`` or ``"saturated"``.
        bounds: per layer, ``(lo, hi)`` for ``"saturated"`` layers (ignored for ``"dead"``).
        device: where the counts live.
        tolerance: :math:`\tau`, the part of the range next to each bound that counts as saturated.

    Example:
        >>> acc = UnitStatsAccumulator(["dead"], [None], torch.device("cpu"))
        >>> acc.add(0, torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]), unit_dim=-1)  # 3 units, 1 alive
        >>> acc.fractions(acc.packed())
        tensor([0.6667], dtype=torch.float64)
    """

    def __init__(
        self,
        kinds: list[str],
        bounds: list[tuple[float, float] | None],
        device: torch.device,
        tolerance: float = 0.01,
    ) -> None:
        if len(kinds) != len(bounds) or any(kind not in UNIT_STAT_KINDS for kind in kinds):
            raise ValueError(f"`kinds` must be one of {UNIT_STAT_KINDS} per layer, one bound per layer; got {kinds}.")
        self.kinds = list(kinds)
        self.bounds = list(bounds)
        self.device = device
        self.tolerance = float(tolerance)
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.counts: list[Tensor | None] = [None] * len(kinds)  # per layer: [U] counts, allocated at first output
        # n_u per layer on the device: a host integer changed in a hook makes torch.compile guard on it.
        self.values = torch.zeros(len(kinds), dtype=self.dtype, device=device)
        self.mixed = [False] * len(kinds)  # outputs of changing width: left out

    @property
    def n_layers(self) -> int:
        return len(self.kinds)

    @torch.no_grad()
    def add(self, index: int, activation: Tensor, unit_dim: int) -> None:
        """Add one output of layer ``index`` (units along ``unit_dim``): one reduction, no host synchronisation."""
        if self.mixed[index]:
            return
        a = activation.detach()
        if a.ndim == 0:
            return
        unit_dim = unit_dim % a.ndim
        units = a.shape[unit_dim]
        counts = self.counts[index]
        if counts is None:
            counts = self.counts[index] = torch.zeros(units, dtype=self.dtype, device=a.device)
        elif counts.numel() != units:
            self.mixed[index] = True
            self.counts[index] = None
            return
        dims = [d for d in range(a.ndim) if d != unit_dim]
        if self.kinds[index] == "dead":
            # ReLU outputs are >= 0: a unit is alive once its largest value is above 0 (one reduction, no mask).
            largest = a.abs().amax(dim=dims) if dims else a.abs()
            torch.maximum(counts, largest.to(self.dtype), out=counts)
        else:
            bound = self.bounds[index]
            assert bound is not None
            lo, hi = bound
            hit = (a - (lo + hi) / 2).abs() >= (hi - lo) * (0.5 - self.tolerance)
            counts.add_(hit.sum(dim=dims, dtype=torch.float32) if dims else hit.float())
        self.values[index].add_(a.numel() // units)

    def packed(self) -> Tensor:
        """``[sum_l U_l + L]``: every layer's unit counts, then the values per unit of each layer (NaN: left out).

        Sum-reducible; every process has the same layout once each layer has produced an output.
        """
        parts = [c for c in self.counts if c is not None]
        values = self.values
        if any(self.mixed):
            off = torch.tensor(self.mixed, dtype=torch.bool).to(values.device, non_blocking=True)
            values = torch.where(off, torch.full_like(values, math.nan), values)
        return torch.cat([*parts, values])

    def fractions(self, packed: Tensor) -> Tensor:
        """``[L]`` float64: each layer's fraction of dead units (or share of saturated values), from :meth:`packed`.

        NaN for a layer with no value in the interval or left out.
        """
        n_layers = self.n_layers
        values = packed[-n_layers:] if n_layers else packed[:0]
        out = []
        start = 0
        for index, counts in enumerate(self.counts):
            n = values[index]
            if counts is None:
                out.append(torch.full((), math.nan, dtype=packed.dtype, device=packed.device))
                continue
            part = packed[start : start + counts.numel()]
            start += counts.numel()
            if self.kinds[index] == "dead":
                fraction = (part == 0).to(packed.dtype).mean()
            else:
                fraction = part.mean() / n
            out.append(torch.where(n > 0, fraction, torch.full_like(fraction, math.nan)))
        if not out:
            return torch.zeros(0, dtype=packed.dtype, device=packed.device)
        return torch.stack(out)

    def reset(self) -> None:
        """Zero the counts for the next interval (buffers are kept)."""
        for counts in self.counts:
            if counts is not None:
                counts.zero_()
        self.values.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": [None if c is None else c.detach().cpu().clone() for c in self.counts],
            "values": self.values.detach().cpu().clone(),
            "mixed": list(self.mixed),
        }

    def load_state_dict(self, state: Any, where: str = "the checkpoint's unit statistics") -> None:
        """Restore :meth:`state_dict` after checking every field; nothing changes if one is wrong.

        Raises:
            ValueError: naming the field: not a dict, ``counts`` not ``L`` tensors (or None), ``values`` not a
                tensor of shape ``(L,)``, ``mixed`` not ``L`` booleans.
        """
        n = self.n_layers
        schema = {
            "counts": ListOf(OrNone(TensorOf(ndim=1, floating=True)), length=n, each="layer"),
            "values": TensorOf(shape=(n,), floating=True),
            "mixed": ListOf(Bool(), length=n, each="layer"),
        }
        counts, values, mixed = check_state(state, schema, where).values()
        self.counts = [None if c is None else c.to(self.device, self.dtype) for c in counts]
        self.values = values.to(self.device, self.dtype)
        self.mixed = list(mixed)
