"""The convergence signal: a drop in the volatility of the stability index (METHOD.md section 8).

Framework-neutral (no Lightning import): :class:`VolatilityDropRule` is the decision that
:class:`~lightning_dynamics.DynamicsEarlyStopping` makes at each check, and :func:`convergence_signal`
replays it over a logged series for analysis. Source of the claim: La Quang, Ugail, Howard et al.,
arXiv:2604.09716 (a falling volatility of the stability index precedes the accuracy plateau).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class DynamicsStoppingReason(Enum):
    """Why the rule said stop."""

    NOT_STOPPED = 0
    VOLATILITY_DROP = 1
    STOPPING_THRESHOLD = 2
    NON_FINITE_METRIC = 3


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
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"`ratio` must be in (0, 1), got {self.ratio!r}.")
        if int(self.patience) != self.patience or self.patience < 1:
            raise ValueError(f"`patience` must be an integer >= 1, got {self.patience!r}.")
        if int(self.min_epochs) != self.min_epochs or self.min_epochs < 0:
            raise ValueError(f"`min_epochs` must be an integer >= 0, got {self.min_epochs!r}.")
        if self.stopping_threshold is not None and not self.stopping_threshold >= 0:
            raise ValueError(f"`stopping_threshold` must be >= 0 or None, got {self.stopping_threshold!r}.")

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
        self.peak = float(state["peak"])
        self.wait_count = int(state["wait_count"])


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
