"""The convergence signal and the early-stopping rules (docs/method.md section 8).

Framework-neutral (no Lightning import). :class:`RelativeChangeRule` is the default decision of
:class:`~lightning_dynamics.DynamicsEarlyStopping`: at each check it reads the layer-summary history ``x: [L, T]``
and stops once most layers' recent changes are small against their early-training scale *and* significantly so
under the run's own time-shuffle null (:func:`~lightning_dynamics.functional.relative_change_test`). It is built to
stay quiet on runs that never converge (stationary increments: white noise, random walks) at any series length.

:class:`VolatilityDropRule` (a drop in the volatility of the stability index, after La Quang, Ugail, Howard et al.,
arXiv:2604.09716) and :func:`convergence_signal` are kept for analysis of logged runs and for comparison. **It is
noise-prone**: it fires on random-walk histories as often as on real runs (docs/early_stopping.md), because the
phase and DFA measures it is built on are scale-free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor

from lightning_dynamics.functional.change import median_relative_change, relative_change_test
from lightning_dynamics.validation import Int, Real, StateSchema, check_bool, check_finite_real, check_int, check_state


class DynamicsStoppingReason(Enum):
    """Why the rule said stop."""

    NOT_STOPPED = 0
    VOLATILITY_DROP = 1
    STOPPING_THRESHOLD = 2
    NON_FINITE_METRIC = 3
    RELATIVE_CHANGE = 4


#: The checkpoint state of :class:`RelativeChangeRule` (``statistic`` and ``p_value`` are NaN before a check).
RELATIVE_CHANGE_STATE = StateSchema(
    {"wait_count": Int(0), "statistic": Real(nan=True), "p_value": Real(nan=True), "window": Int(0)}
)
#: The checkpoint state of :class:`VolatilityDropRule` (``peak`` is -inf before the first value); nothing else.
VOLATILITY_DROP_STATE = StateSchema({"peak": Real(neg_inf=True), "wait_count": Int(0)}, closed=True)


def _check_probability(name: str, value: Any) -> float:
    value = check_finite_real(name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be a number in (0, 1), got {value!r}.")
    return value


def _check_threshold(value: Any) -> float | None:
    if value is None:
        return None
    value = check_finite_real("stopping_threshold", value)
    if value < 0:
        raise ValueError(f"`stopping_threshold` must be a finite number >= 0 or None, got {value!r}.")
    return value


@dataclass
class RelativeChangeRule:
    r"""Stop once most layers' recent changes are small against their early scale, beyond the run's own null.

    At each check, on the history ``x: [L, T]`` recorded so far (any number of sample points per epoch):

    1. Average the points of each epoch (:meth:`epoch_means`): one point per epoch, ``[L, E]``.
    2. :math:`s` = median over layers of :func:`~lightning_dynamics.functional.relative_change` (mean ``|diff|``
       of the last ``w =`` ``window_epochs`` epoch-to-epoch changes over that of the first half's), and its p-value
       under the time-shuffle null of the changes (:func:`~lightning_dynamics.functional.relative_change_test`,
       ``n_permutations`` surrogates).
    3. The check passes when :math:`s \le` ``ratio`` and :math:`p \le` ``alpha``; the rule stops after
       ``patience`` consecutive passing checks, not before ``min_epochs``. With ``stopping_threshold``, a check
       with :math:`s \le` ``stopping_threshold`` and :math:`p \le` ``alpha`` stops at once.

    Why it stays quiet on noise: increments of white noise or a random walk are stationary, so :math:`s \approx 1`
    at every length (its spread shrinks as ``w`` grows), and a summary that drifts like :math:`\sqrt{t}` (the norm
    of a random walk in weight space) gives :math:`s \approx 0.35`, not below 0.25; ``ratio`` bounds the effect
    size, ``alpha`` the chance of a short noisy window, ``patience`` the number of looks (docs/early_stopping.md
    has the measured false-positive rates). Source of the quantity: Ahmad et al., arXiv:2403.02473 (relative change
    of a layer against its own scale); the null is that of docs/method.md section 8b.

    A check whose newest column holds a value that is non-finite in a layer that was finite before stops with
    :attr:`DynamicsStoppingReason.NON_FINITE_METRIC` when ``check_finite`` (diverged activations).

    Args:
        ratio: largest median relative change that counts as settled, in ``(0, 1)``.
        alpha: significance level of the permutation test, in ``(0, 1)``; at least ``1 / (1 + n_permutations)``.
        patience: consecutive passing checks needed (>= 1).
        window_epochs: ``w``, the recent window in epochs (>= 2); the rule needs ``2 * w + 1`` epochs with points.
        min_epochs: never stop before this epoch (>= 0).
        stopping_threshold: see 3 above; ``None`` (default) for none.
        check_finite: stop on newly non-finite summaries.
        n_permutations: surrogates of the null (>= 1).
        seed: of the permutations (reproducible decisions; every process draws the same ones).

    Attributes:
        wait_count: consecutive passing checks so far.
        statistic, p_value, window: of the last check (NaN, NaN, 0 before the first defined one).

    Example:
        >>> t = torch.arange(60, dtype=torch.float64)
        >>> x = torch.stack([s * (1 - torch.exp(-t / 6)) for s in (1.0, 2.0, 3.0)])  # three settling layers
        >>> rule = RelativeChangeRule(patience=2)
        >>> [rule.update(x[:, : e + 1], list(range(e + 1)))[0] for e in range(15, 20)]
        [False, False, False, True, True]
        >>> rule.update(x[:, :20], list(range(20)))[1].name
        'RELATIVE_CHANGE'
    """

    ratio: float = 0.25
    alpha: float = 0.01
    patience: int = 3
    window_epochs: int = 8
    min_epochs: int = 0
    stopping_threshold: float | None = None
    check_finite: bool = True
    n_permutations: int = 199
    seed: int = 0
    wait_count: int = field(default=0, init=False)
    statistic: float = field(default=math.nan, init=False)
    p_value: float = field(default=math.nan, init=False)
    window: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.ratio = _check_probability("ratio", self.ratio)
        self.alpha = _check_probability("alpha", self.alpha)
        self.patience = check_int("patience", self.patience, 1)  # type: ignore[assignment]
        self.window_epochs = check_int("window_epochs", self.window_epochs, 2)  # type: ignore[assignment]
        self.min_epochs = check_int("min_epochs", self.min_epochs, 0)  # type: ignore[assignment]
        self.stopping_threshold = _check_threshold(self.stopping_threshold)
        self.check_finite = check_bool("check_finite", self.check_finite)
        self.n_permutations = check_int("n_permutations", self.n_permutations, 1)  # type: ignore[assignment]
        self.seed = check_int("seed", self.seed, 0)  # type: ignore[assignment]
        if self.alpha < 1.0 / (1 + self.n_permutations):
            raise ValueError(
                f"`alpha` must be at least 1 / (1 + n_permutations) = {1.0 / (1 + self.n_permutations):.4g} (the "
                f"smallest p-value {self.n_permutations} permutations can give), got {self.alpha!r}."
            )

    @staticmethod
    def epoch_means(x: Tensor, epochs: Sequence[int]) -> Tensor:
        """The history averaged within each epoch: ``[L, T] -> [L, E]`` (``E`` distinct epochs, in order).

        Any number of sample points per epoch (one, several, per step, or one every few epochs) becomes one point
        per epoch that has points. Averaging the points of an epoch removes most batch-to-batch noise of
        sub-epoch sampling (a per-step summary sees one batch), so the rule compares like with like.

        Example:
            >>> RelativeChangeRule.epoch_means(torch.tensor([[1.0, 3.0, 5.0, 6.0, 8.0]]), [0, 0, 1, 1, 3])
            tensor([[2.0000, 5.5000, 8.0000]])
        """
        index = torch.as_tensor([int(e) for e in epochs], dtype=torch.long)
        unique, inverse = torch.unique_consecutive(index, return_inverse=True)
        sums = torch.zeros(x.shape[0], len(unique), dtype=x.dtype).index_add_(1, inverse, x)
        counts = torch.zeros(len(unique), dtype=x.dtype).index_add_(0, inverse, torch.ones_like(index, dtype=x.dtype))
        return sums / counts

    def update(
        self, x: Tensor, epochs: Sequence[int], epoch: int | None = None
    ) -> tuple[bool, DynamicsStoppingReason, str | None]:
        """Take one check: the whole history so far; return ``(should_stop, reason, message)``.

        Args:
            x: the layer-summary history ``[L, T]``.
            epochs: the epoch of each of the ``T`` sample points.
            epoch: the epoch of this check (default: the last point's).
        """
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"`x` must be a tensor shaped [L, T], got {getattr(x, 'shape', type(x).__name__)}.")
        if len(epochs) != x.shape[-1]:
            raise ValueError(f"`epochs` must hold one epoch per sample point ({x.shape[-1]}), got {len(epochs)}.")
        if x.shape[-1] == 0:
            return False, DynamicsStoppingReason.NOT_STOPPED, None
        epoch = int(epochs[-1]) if epoch is None else int(epoch)
        x = x.detach().to("cpu", torch.float64)
        if self.check_finite and x.shape[-1] >= 2:
            newly = ~torch.isfinite(x[:, -1]) & torch.isfinite(x[:, -2])
            if bool(newly.any()) and epoch >= self.min_epochs:
                layers = newly.nonzero().flatten().tolist()
                return (
                    True,
                    DynamicsStoppingReason.NON_FINITE_METRIC,
                    f"the summaries of layers {layers} became non-finite at epoch {epoch}.",
                )
        x = self.epoch_means(x, epochs)
        self.window = self.window_epochs
        if x.shape[-1] < 2 * self.window + 1:
            self.statistic, self.p_value = math.nan, math.nan
            return False, DynamicsStoppingReason.NOT_STOPPED, None
        # The permutations only when the effect size passes (rarely, on noise).
        self.statistic, self.p_value = float(median_relative_change(x, self.window)), math.nan
        threshold = max(self.ratio, self.stopping_threshold or 0.0)
        passed = False
        if self.statistic <= threshold:
            generator = torch.Generator().manual_seed(self.seed)
            self.p_value = float(relative_change_test(x, self.window, self.n_permutations, generator).p_value)
            passed = self.p_value <= self.alpha
        if epoch < self.min_epochs:
            return False, DynamicsStoppingReason.NOT_STOPPED, None
        detail = (
            f"median relative change {self.statistic:.3g} (recent {self.window} sample intervals against the first "
            f"half of the history; p = {self.p_value:.3g} under the time-shuffle null, alpha {self.alpha:g})"
        )
        if passed and self.stopping_threshold is not None and self.statistic <= self.stopping_threshold:
            return (
                True,
                DynamicsStoppingReason.STOPPING_THRESHOLD,
                f"{detail} <= stopping_threshold {self.stopping_threshold:g}.",
            )
        self.wait_count = self.wait_count + 1 if passed and self.statistic <= self.ratio else 0
        if self.wait_count >= self.patience:
            return (
                True,
                DynamicsStoppingReason.RELATIVE_CHANGE,
                f"{detail} <= ratio {self.ratio:g} for {self.wait_count} consecutive checks.",
            )
        return False, DynamicsStoppingReason.NOT_STOPPED, None

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "window": self.window,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; every field is checked (a ValueError names the field and the value)."""
        values = check_state(state, RELATIVE_CHANGE_STATE, "RelativeChangeRule state")
        self.wait_count, self.window = values["wait_count"], values["window"]
        self.statistic, self.p_value = float(values["statistic"]), float(values["p_value"])


@dataclass
class VolatilityDropRule:
    r"""Stop once :math:`V(t) \le \text{ratio} \cdot \max_{s \le t} V(s)` for ``patience`` consecutive checks.

    Or once :math:`V(t) \le` ``stopping_threshold`` (absolute). Checks at epochs before ``min_epochs`` update
    the running peak but never stop and never count towards ``patience``.

    Example:
        >>> rule = VolatilityDropRule(ratio=0.25, patience=2)
        >>> [rule.update(v, epoch)[0] for epoch, v in enumerate([0.2, 0.4, 0.09, 0.08, 0.3])]
        [False, False, False, True, False]
    """

    ratio: float = 0.25
    patience: int = 3
    min_epochs: int = 0
    stopping_threshold: float | None = None
    check_finite: bool = True
    peak: float = field(default=-math.inf, init=False)
    wait_count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.ratio = _check_probability("ratio", self.ratio)
        self.patience = check_int("patience", self.patience, 1)  # type: ignore[assignment]
        self.min_epochs = check_int("min_epochs", self.min_epochs, 0)  # type: ignore[assignment]
        self.stopping_threshold = _check_threshold(self.stopping_threshold)
        self.check_finite = check_bool("check_finite", self.check_finite)

    def update(self, value: float, epoch: int) -> tuple[bool, DynamicsStoppingReason, str | None]:
        """Take one check's value; return ``(should_stop, reason, message)``."""
        if not math.isfinite(value):
            if self.check_finite and epoch >= self.min_epochs:
                return True, DynamicsStoppingReason.NON_FINITE_METRIC, f"volatility is not finite ({value})."
            return False, DynamicsStoppingReason.NOT_STOPPED, None
        self.peak = max(self.peak, value)
        if epoch < self.min_epochs:
            return False, DynamicsStoppingReason.NOT_STOPPED, None
        if self.stopping_threshold is not None and value <= self.stopping_threshold:
            return (
                True,
                DynamicsStoppingReason.STOPPING_THRESHOLD,
                (f"volatility {value:.4g} <= stopping_threshold {self.stopping_threshold:.4g}."),
            )
        if value <= self.ratio * self.peak:
            self.wait_count += 1
        else:
            self.wait_count = 0
        if self.wait_count >= self.patience:
            return (
                True,
                DynamicsStoppingReason.VOLATILITY_DROP,
                (
                    f"volatility {value:.4g} <= {self.ratio:g} x its peak {self.peak:.4g} for {self.wait_count} "
                    "consecutive checks."
                ),
            )
        return False, DynamicsStoppingReason.NOT_STOPPED, None

    def state_dict(self) -> dict[str, Any]:
        return {"peak": self.peak, "wait_count": self.wait_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; every field is checked (a ValueError names the field and the value)."""
        values = check_state(state, VOLATILITY_DROP_STATE, "VolatilityDropRule state")
        self.wait_count, self.peak = values["wait_count"], float(values["peak"])


def convergence_signal(
    volatility: Iterable[float],
    epochs: Iterable[int] | None = None,
    ratio: float = 0.25,
    patience: int = 3,
    min_epochs: int = 0,
    stopping_threshold: float | None = None,
) -> int | None:
    """Replay :class:`VolatilityDropRule` over a logged series; return the epoch it first says stop, or None.

    NaN entries (epochs before the volatility exists) are skipped, as the callback skips missing keys.

    Example:
        >>> convergence_signal([float("nan"), 0.2, 0.4, 0.05, 0.04, 0.03], patience=3)
        5
    """
    values = list(volatility)
    epochs = list(range(len(values))) if epochs is None else list(epochs)
    rule = VolatilityDropRule(ratio, patience, min_epochs, stopping_threshold, check_finite=False)
    for epoch, value in zip(epochs, values, strict=True):
        if value is None or math.isnan(value):
            continue
        stop, _, _ = rule.update(float(value), int(epoch))
        if stop:
            return int(epoch)
    return None
