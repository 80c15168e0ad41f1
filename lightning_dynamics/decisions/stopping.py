"""The convergence signal and the early-stopping rules (docs/method.md section 8).

Framework-neutral (no Lightning import). :class:`RelativeChangeRule` is the default decision of
:class:`~lightning_dynamics.DynamicsEarlyStopping`: at each check it reads the layer-summary history ``x: [L, T]``
and stops once most layers' recent changes are small against their early-training scale *and* significantly so
under the run's own time-shuffle null (:func:`~lightning_dynamics.functional.relative_change_test`), and their epoch
means no longer wander (a drift guard). Stationary increments (white noise, random walks from the first step) give
no stop at any series length measured; the classes it still stops on are listed in docs/early_stopping.md.

:class:`VolatilityDropRule` (a drop in the volatility of the stability index, after La Quang, Ugail, Howard et al.,
arXiv:2604.09716) and :func:`convergence_signal` are kept for analysis of logged runs and for comparison. **It is
noise-prone**: it fires on random-walk histories as often as on real runs (docs/early_stopping.md), because the
phase and DFA measures it is built on are scale-free.
"""

from __future__ import annotations

import copy
import math
import warnings
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


def student_t_two_sided(t: Tensor, df: int) -> Tensor:
    r"""Two-sided p-value :math:`P(|T| \ge |t|)` of Student's t with integer ``df >= 1`` (elementwise, any shape).

    The closed forms of Abramowitz & Stegun 26.7.3 (odd ``df``) and 26.7.4 (even ``df``) for
    :math:`A(t | \nu) = P(|T| \le |t|)`, with :math:`\theta = \arctan(|t| / \sqrt{\nu})`; no scipy needed.
    NaN in, NaN out.

    Example:
        >>> [round(v, 4) for v in student_t_two_sided(torch.tensor([0.0, 2.365, 1.0]), 7).tolist()]
        [1.0, 0.05, 0.3506]
    """
    if int(df) < 1:
        raise ValueError(f"`df` must be an integer >= 1, got {df!r}.")
    t = torch.as_tensor(t, dtype=torch.float64)
    theta = torch.atan(t.abs() / math.sqrt(df))
    c2 = torch.cos(theta).square()
    if df % 2:
        total, term = torch.zeros_like(theta), torch.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):  # cos + (2/3) cos^3 + (2*4)/(3*5) cos^5 + ...
            total = total + term
            term = term * c2 * (2 * k) / (2 * k + 1)
        inside = 2 / math.pi * (theta + torch.sin(theta) * total) if df > 1 else 2 / math.pi * theta
    else:
        total, term = torch.zeros_like(theta), torch.ones_like(theta)
        for k in range(1, df // 2 + 1):  # 1 + (1/2) cos^2 + (1*3)/(2*4) cos^4 + ...
            total = total + term
            term = term * c2 * (2 * k - 1) / (2 * k)
        inside = torch.sin(theta) * total
    return (1 - inside).clamp(0.0, 1.0)


@dataclass(frozen=True)
class LearningRateOutlook:
    """What a learning-rate scheduler will still do: the answer of :func:`learning_rate_outlook`.

    Attributes:
        lowers: the scheduler will still lower some parameter group's learning rate by more than the tolerance
            within the steps looked at (for ``ReduceLROnPlateau``: it still can, once its metric stalls).
        steps_until: scheduler steps from now until the first such drop (``None``: not known in advance, as for
            ``ReduceLROnPlateau``, or no drop).
        detail: the answer in words (the scheduler, the learning rate now and the lowest one ahead).
        raises: the scheduler lowers nothing but will raise some group's learning rate above ``(1 + tolerance)`` x
            its value now within the steps looked at: a cyclic schedule at a trough, a warm restart (``steps_until``
            then counts to the rise). A later trough or a new phase of training lies ahead.
    """

    lowers: bool
    steps_until: int | None
    detail: str
    raises: bool = False

    @property
    def changes(self) -> bool:
        """The schedule will still lower or raise the learning rate: what the stopping rule waits for."""
        return self.lowers or self.raises


def _proxy_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """A stand-in optimizer over one dummy parameter with copies of ``optimizer``'s param-group settings."""
    groups = [
        {**{k: copy.deepcopy(v) for k, v in g.items() if k != "params"}, "params": [torch.zeros(1)]}
        for g in optimizer.param_groups
    ]
    return torch.optim.SGD(groups, lr=float(groups[0].get("lr", 0.0)) if groups else 0.0)


def learning_rate_outlook(
    scheduler: Any, steps_left: int | None = None, tolerance: float = 0.1, max_steps: int = 10_000
) -> LearningRateOutlook:
    """Will ``scheduler`` still lower the learning rate, and when? (framework-neutral; any torch scheduler)

    A copy of the scheduler, attached to a stand-in optimizer that holds copies of the real one's param-group
    settings (never its parameters or state), is stepped ahead: ``steps_left`` scheduler steps (the rest of the
    run's budget, in the scheduler's own unit, epochs or optimizer steps), or up to ``max_steps`` when the
    budget is open. It "lowers" when some group's learning rate ahead falls below ``(1 - tolerance)`` x its
    value now: a milestone ahead, a cosine not at its floor, a step decay. Schedules that go up and down
    (cyclic, one-cycle, warm restarts) lower it too whenever a trough lies ahead; at a trough, where nothing
    lower lies ahead, it "raises" when some group's learning rate ahead exceeds ``(1 + tolerance)`` x its value
    now (the next cycle or restart is planned). ``ReduceLROnPlateau`` is
    driven by a metric, not by time: it lowers while some group's ``lr * factor`` is still above its
    ``min_lr`` (by more than its ``eps``), ``steps_until`` unknown. The real scheduler is not touched.

    Args:
        scheduler: a ``torch.optim.lr_scheduler.LRScheduler`` (``SequentialLR`` and ``ChainedScheduler``
            included) or ``ReduceLROnPlateau``.
        steps_left: scheduler steps left in the run (``None``: open budget, ``max_steps`` are looked at).
        tolerance: the relative drop that counts, in ``[0, 1)``.
        max_steps: the most steps simulated (>= 1).

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 60], gamma=0.1)
        >>> learning_rate_outlook(sched, steps_left=80).steps_until  # the first milestone is 30 steps ahead
        30
        >>> learning_rate_outlook(sched, steps_left=20).lowers  # ... beyond a budget of 20
        False
    """
    tolerance = check_finite_real("tolerance", tolerance)  # type: ignore[assignment]  # never None here
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"`tolerance` must be a number in [0, 1), got {tolerance!r}.")
    max_steps = int(check_int("max_steps", max_steps, 1) or 1)
    if steps_left is not None:
        steps_left = int(check_int("steps_left", steps_left, 0) or 0)
    name = type(scheduler).__name__
    optimizer = getattr(scheduler, "optimizer", None)
    if not isinstance(optimizer, torch.optim.Optimizer) or not hasattr(scheduler, "step"):
        raise ValueError(f"`scheduler` must be a torch learning-rate scheduler with an optimizer, got {name}.")
    now = [float(g["lr"]) for g in optimizer.param_groups]
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        floors = [float(m) for m in scheduler.min_lrs]
        lower = [max(lr * scheduler.factor, floor) for lr, floor in zip(now, floors, strict=True)]
        can = any(lr - low > scheduler.eps for lr, low in zip(now, lower, strict=True))
        return LearningRateOutlook(
            can,
            None,
            f"ReduceLROnPlateau can {'still' if can else 'no longer'} lower the learning rate (now {now}, "
            f"min_lr {floors}, factor {scheduler.factor:g}) once its metric stops improving",
        )
    horizon = max_steps if steps_left is None else min(steps_left, max_steps)
    proxy = _proxy_optimizer(optimizer)
    clone = copy.deepcopy(scheduler, memo={id(optimizer): proxy})
    lowest = list(now)
    rise: tuple[int, list[float]] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": the stand-in never steps
        for step in range(1, horizon + 1):
            clone.step()
            ahead = [float(g["lr"]) for g in proxy.param_groups]
            lowest = [min(a, b) for a, b in zip(lowest, ahead, strict=True)]
            if any(a < (1.0 - tolerance) * n for a, n in zip(ahead, now, strict=True)):
                return LearningRateOutlook(
                    True,
                    step,
                    f"{name} lowers the learning rate from {now} to {ahead} in {step} scheduler step(s)",
                )
            if rise is None and any(a > (1.0 + tolerance) * n for a, n in zip(ahead, now, strict=True)):
                rise = (step, ahead)
    span = "the rest of the run" if steps_left is not None and steps_left <= max_steps else f"{horizon} steps"
    if rise is not None:
        return LearningRateOutlook(
            False,
            rise[0],
            f"{name} does not lower the learning rate below {1 - tolerance:g} x {now} within {span}, but raises it "
            f"to {rise[1]} in {rise[0]} scheduler step(s) (a cyclic schedule or a restart: more training is planned)",
            raises=True,
        )
    return LearningRateOutlook(
        False, None, f"{name} does not lower the learning rate below {1 - tolerance:g} x {now} within {span}"
    )


#: What :class:`RelativeChangeRule` does when its check passes while the scheduler will still lower the lr.
SCHEDULE_POLICIES = ("wait", "warn", "ignore")


@dataclass
class RelativeChangeRule:
    r"""Stop once most layers have settled: small moves against their early scale, no drift, nothing scheduled.

    At each check, on the history ``x: [L, T]`` recorded so far (any number of sample points per epoch):

    1. Per epoch and layer (:meth:`epoch_movement`): the mean of its points, and its **movement**
       :math:`m_l(e) = |\bar x_l(e) - \bar x_l(e - 1)| + \text{spread}_l(e)`, the change of the epoch mean plus
       the structured spread of the epoch's points around their mean, batch noise removed (0 with one point per
       epoch). The spread keeps an oscillation faster than an epoch, which the epoch means cancel, counted as
       movement.
    2. :math:`s` = median over layers of the mean movement of the last ``w =`` ``window_epochs`` epochs over that
       of the first half's (:func:`~lightning_dynamics.functional.relative_change` of the movements), and its
       p-value under a time-shuffle null of the movements (:func:`~lightning_dynamics.functional.relative_change_test`,
       ``n_permutations`` surrogates, one permutation shared by all layers).
    3. **Drift guard** (``drift_guard``): a first half that holds the learning transient makes any later motion
       look small, a small random walk included. So the epoch means must also look settled on their own. The guard
       holds when either (a) the drift is practically nil: :attr:`drift_bound`, the median over layers of the
       one-sided 95% upper bound of the mean change per epoch over the last ``w`` epochs in units of the layer's
       mean movement over the first half, is at most ``drift_margin`` (an equivalence claim, as in a TOST: the
       summaries would take more than ``1 / drift_margin`` epochs to move as much as an average early epoch); or
       (b) the changes of the second half are not those of a symmetric random walk: mean-reverting (the median
       over layers of the variance of the levels over the mean squared change is low against the same changes in
       shuffled order: a level with noise), still shrinking (the mean absolute change of the later half of them
       over the earlier half is low against the shuffled order: a decaying trend), or, with ``steady_drift``, a
       steady drift (one-sample t test of the last ``w`` changes of each layer, the median layer's p-value: a
       slow drift of one sign, as a weight norm that keeps growing at a constant learning rate). Its p-value
       :attr:`drift_p_value` is the smallest of these, times their number (Bonferroni), and must be at most
       ``drift_alpha``.
    4. The check passes when :math:`s \le` ``ratio``, :math:`p \le` ``alpha`` and the guard holds; the rule
       stops after ``patience`` consecutive passing checks, not before ``min_epochs``. With
       ``stopping_threshold``, a check with :math:`s \le` ``stopping_threshold`` that passes otherwise stops at once.
    5. **Schedule** (``schedule``): given ``lr_outlook`` (:func:`learning_rate_outlook`: the user's scheduler will
       still lower the learning rate within the run), ``"wait"`` (default) does not stop and says why,
       ``"warn"`` stops and says that the schedule would still lower it, ``"ignore"`` does not look.

    Increments of white noise or a random walk are stationary, so :math:`s \approx 1` at every length, and a
    summary that drifts like :math:`\sqrt{t}` gives :math:`s \approx 0.35`, not below 0.25. The guard covers what
    the ratio cannot: a run whose transient is over but which keeps wandering. It is not quiet on everything that
    has not converged: docs/early_stopping.md has the measured false-stop rates and the classes that remain (an
    oscillation inside the epoch smaller than about a quarter of the early movement; motion below batch noise).
    Source of the quantity: Ahmad et al., arXiv:2403.02473 (relative change of a layer against its own scale); the
    null is that of docs/method.md section 8b; the mean-reversion statistic is von Neumann's ratio (Ann. Math. Stat.
    12:367, 1941) read the other way round; the equivalence bound follows Schuirmann's two one-sided tests (J.
    Pharmacokinet. Biopharm. 15:657, 1987); a weight norm that keeps growing while the classifier has converged:
    Soudry et al., JMLR 19(70), 2018.

    A check whose newest column holds a value that is non-finite in a layer that was finite before stops with
    :attr:`DynamicsStoppingReason.NON_FINITE_METRIC` when ``check_finite`` (diverged activations).

    Args:
        ratio: largest median relative change that counts as settled, in ``(0, 1)``.
        alpha: significance level of the relative-change test, in ``(0, 1)``; at least ``1 / (1 + n_permutations)``.
        patience: consecutive passing checks needed (>= 1).
        window_epochs: ``w``, the recent window in epochs (>= 2); the rule needs ``2 * w + 1`` epochs with points.
        min_epochs: never stop before this epoch (>= 0).
        stopping_threshold: see 4 above; ``None`` (default) for none.
        check_finite: stop on newly non-finite summaries.
        n_permutations: surrogates of the nulls (>= 1).
        seed: of the permutations (reproducible decisions; every process draws the same ones).
        sub_epoch: count the spread of the points within an epoch as movement (step 1).
        drift_guard: apply step 3.
        drift_alpha: the guard's level, in ``(0, 1)``; at least ``k / (1 + drift_permutations)`` for its ``k``
            tests (3 with ``steady_drift``, else 2).
        steady_drift: let a steady drift of one sign pass the guard (step 3).
        drift_permutations: permutations of the guard's tests (>= 1).
        drift_margin: the guard's equivalence margin, in ``[0, 1)`` (step 3; 0: no equivalence bound).
        schedule: ``"wait"``, ``"warn"`` or ``"ignore"`` (step 5).

    Attributes:
        wait_count: consecutive passing checks so far.
        statistic, p_value, window: of the last check (NaN, NaN, 0 before the first defined one).
        drift_bound: the guard's equivalence bound at the last check that reached it (NaN otherwise).
        drift_p_value: the guard's p-value at the last check that needed it (NaN otherwise: not reached, or the
            bound already held).
        held_by_schedule: passing checks that did not stop because the learning rate will still fall.

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
    sub_epoch: bool = True
    drift_guard: bool = True
    drift_alpha: float = 0.02
    steady_drift: bool = True
    drift_permutations: int = 999
    drift_margin: float = 0.1
    schedule: str = "wait"
    wait_count: int = field(default=0, init=False)
    statistic: float = field(default=math.nan, init=False)
    p_value: float = field(default=math.nan, init=False)
    window: int = field(default=0, init=False)
    drift_p_value: float = field(default=math.nan, init=False)
    drift_bound: float = field(default=math.nan, init=False)
    held_by_schedule: int = field(default=0, init=False)

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
        self.sub_epoch = check_bool("sub_epoch", self.sub_epoch)
        self.drift_guard = check_bool("drift_guard", self.drift_guard)
        self.drift_alpha = _check_probability("drift_alpha", self.drift_alpha)
        self.steady_drift = check_bool("steady_drift", self.steady_drift)
        self.drift_permutations = check_int("drift_permutations", self.drift_permutations, 1)  # type: ignore[assignment]
        self.drift_margin = check_finite_real("drift_margin", self.drift_margin)  # type: ignore[assignment]
        if not 0.0 <= self.drift_margin < 1.0:
            raise ValueError(
                f"`drift_margin` must be a number in [0, 1) (0: no equivalence bound), got {self.drift_margin!r}."
            )
        if self.schedule not in SCHEDULE_POLICIES:
            raise ValueError(f"`schedule` must be one of {SCHEDULE_POLICIES}, got {self.schedule!r}.")
        clauses = 3 if self.steady_drift else 2  # the guard's tests, Bonferroni
        for name, level, draws, times in (
            ("alpha", self.alpha, self.n_permutations, 1),
            ("drift_alpha", self.drift_alpha, self.drift_permutations, clauses),
        ):
            smallest = times / (1 + draws)
            if level < smallest:
                raise ValueError(
                    f"`{name}` must be at least {smallest:.4g} (the smallest p-value {draws} permutations can give"
                    f"{f', times {times}' if times > 1 else ''}), got {level!r}."
                )

    @staticmethod
    def epoch_means(x: Tensor, epochs: Sequence[int]) -> Tensor:
        """The history averaged within each epoch: ``[L, T] -> [L, E]`` (``E`` distinct epochs, in order).

        Example:
            >>> RelativeChangeRule.epoch_means(torch.tensor([[1.0, 3.0, 5.0, 6.0, 8.0]]), [0, 0, 1, 1, 3])
            tensor([[2.0000, 5.5000, 8.0000]])
        """
        return RelativeChangeRule.epoch_movement(x, epochs)[0]

    @staticmethod
    def epoch_movement(x: Tensor, epochs: Sequence[int]) -> tuple[Tensor, Tensor]:
        r"""Per epoch: the mean of its points ``[L, E]`` and their structured spread ``[L, E]``.

        Averaging the points of an epoch removes most batch-to-batch noise of sub-epoch sampling; the spread keeps
        what the average cancels (an oscillation inside the epoch, a trend within it) without counting the batch
        noise itself. Of an epoch's ``n`` deviations from their mean, the structured variance is their mean square
        less the white-noise part, read from the median of their periodogram (a flat spectrum for independent
        batches: the median of ``n/2`` exponential ordinates over ``ln 2``, robust to a few peaks). The spread is
        its signed square root: near 0 on batch noise (either sign; on average about 0.13 of the noise sd at 32
        points per epoch, against 0.8 for the plain mean absolute deviation), :math:`A / \sqrt{2}` for an
        oscillation of amplitude ``A``. Epochs with fewer than 4 points: spread 0.

        Example:
            >>> t = torch.arange(64, dtype=torch.float64)
            >>> x = torch.stack([torch.sin(torch.pi * t / 2)])  # period 4 points, amplitude 1, 32 points per epoch
            >>> means, spread = RelativeChangeRule.epoch_movement(x, [i // 32 for i in range(64)])
            >>> [round(v, 3) for v in spread[0].tolist()]
            [0.707, 0.707]
        """
        index = torch.as_tensor([int(e) for e in epochs], dtype=torch.long)
        unique, inverse, counts = torch.unique_consecutive(index, return_inverse=True, return_counts=True)
        means = torch.zeros(x.shape[0], len(unique), dtype=x.dtype).index_add_(1, inverse, x) / counts.to(x.dtype)
        spread = torch.zeros_like(means)
        ends = counts.cumsum(0).tolist()
        for e, (stop, n) in enumerate(zip(ends, counts.tolist(), strict=True)):
            if n < 4:
                continue
            deviation = x[:, stop - n : stop] - means[:, e : e + 1]
            periodogram = torch.fft.rfft(deviation, dim=-1)[:, 1:].abs().square() / n  # [L, n // 2]
            white = periodogram.median(-1).values / math.log(2)
            structured = deviation.square().mean(-1) - white
            spread[:, e] = structured.sign() * structured.abs().sqrt()
        return means, spread

    def _drift_p_value(self, means: Tensor, generator: torch.Generator) -> float:
        """Step 3 on the changes of the second half of the epoch means: min of three permutation p-values, x3."""
        d = means.diff(dim=-1)
        d = d[:, d.shape[-1] // 2 :]  # the changes the reference (the first half) does not hold
        d = d[torch.isfinite(d).all(-1)]
        n = d.shape[-1]
        if d.shape[0] == 0 or n < 4:
            return math.nan
        half = n // 2
        draws = self.drift_permutations
        order = torch.rand(draws, n, generator=generator).argsort(-1)  # draws uniform permutations at once
        shuffled = torch.cat([d.unsqueeze(1), d[:, order]], 1)  # [L, 1 + P, n], the observed order first

        def reversion(v: Tensor) -> Tensor:
            levels = torch.cat([torch.zeros_like(v[..., :1]), v.cumsum(-1)], -1)
            return levels.var(-1, unbiased=False) / v.square().mean(-1)

        def shrinkage(v: Tensor) -> Tensor:
            return v[..., n - half :].abs().mean(-1) / v[..., :half].abs().mean(-1)

        p_values = []
        for statistic in (reversion, shrinkage):
            values = statistic(shuffled)
            values = values.masked_fill(~torch.isfinite(values), math.nan).nanmedian(0).values  # [1 + P]
            if math.isnan(float(values[0])):
                p_values.append(1.0)
                continue
            p_values.append(float((values[1:] <= values[0]).sum() + 1) / (1 + draws))
        if self.steady_drift:
            # A steady drift: the recent changes' mean is far from 0 against their spread (one-sample t test of the
            # last w changes per layer; the median layer's p-value). A permutation of signs could not resolve
            # p-values below 2 / 2**w.
            recent = means.diff(dim=-1)[:, -self.window :]
            recent = recent[torch.isfinite(recent).all(-1)]
            w = recent.shape[-1]
            t = recent.mean(-1) / (recent.std(-1) / math.sqrt(w))
            p_t = student_t_two_sided(t, w - 1)
            p_values.append(float(p_t.nanmedian()) if bool(torch.isfinite(p_t).any()) else 1.0)
        return min(1.0, len(p_values) * min(p_values))

    def _drift_bound(self, means: Tensor, movement: Tensor) -> float:
        r"""Step 3's equivalence bound, the median over layers of :math:`(|\bar d| + t_{0.95,w-1} s_d/\sqrt{w}) / m_0`.

        :math:`\bar d, s_d`: mean and sd of the last ``w`` changes of the layer's epoch means; :math:`m_0`: its mean
        movement over the first half (the reference of the relative change). A one-sided 95% upper bound of the
        recent drift per epoch in units of an early epoch's movement (NaN when no layer has a reference)."""
        d = means.diff(dim=-1)[:, -self.window :]
        w = d.shape[-1]
        z, df = 1.6448536269514722, w - 1  # Cornish-Fisher expansion of Student's t quantile
        t = z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        bound = d.mean(-1).abs() + t * d.std(-1) / math.sqrt(w)
        early = movement[:, : movement.shape[-1] // 2].mean(-1)
        ratio = (bound / early).masked_fill(early <= 0, math.nan)
        ratio = ratio[torch.isfinite(ratio)]
        return float(ratio.median()) if ratio.numel() else math.nan

    def update(
        self,
        x: Tensor,
        epochs: Sequence[int],
        epoch: int | None = None,
        lr_outlook: LearningRateOutlook | None = None,
    ) -> tuple[bool, DynamicsStoppingReason, str | None]:
        """Take one check: the whole history so far; return ``(should_stop, reason, message)``.

        Args:
            x: the layer-summary history ``[L, T]``.
            epochs: the epoch of each of the ``T`` sample points.
            epoch: the epoch of this check (default: the last point's).
            lr_outlook: what the learning-rate schedule will still do (:func:`learning_rate_outlook`); ``None``:
                no scheduler, or not known.

        When the check passes but ``lr_outlook.changes`` (it lowers or raises the learning rate) under
        ``schedule="wait"``, the result is
        ``(False, NOT_STOPPED, message)`` with the message saying why it did not stop.
        """
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"`x` must be a tensor shaped [L, T], got {getattr(x, 'shape', type(x).__name__)}.")
        if len(epochs) != x.shape[-1]:
            raise ValueError(f"`epochs` must hold one epoch per sample point ({x.shape[-1]}), got {len(epochs)}.")
        if lr_outlook is not None and not isinstance(lr_outlook, LearningRateOutlook):
            raise ValueError(f"`lr_outlook` must be a LearningRateOutlook or None, got {type(lr_outlook).__name__}.")
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
        means, spread = self.epoch_movement(x, epochs)
        self.window = self.window_epochs
        self.drift_p_value = self.drift_bound = math.nan
        if means.shape[-1] < 2 * self.window + 1:
            self.statistic, self.p_value = math.nan, math.nan
            return False, DynamicsStoppingReason.NOT_STOPPED, None
        movement = means.diff(dim=-1).abs()
        if self.sub_epoch:
            movement = movement + spread[:, 1:]
        # A series whose absolute changes are the movements: the relative-change functions then read them as is.
        path = torch.cat([torch.zeros_like(movement[:, :1]), movement.cumsum(-1)], -1)
        # The permutations only when the effect size passes (rarely, on noise).
        self.statistic, self.p_value = float(median_relative_change(path, self.window)), math.nan
        threshold = max(self.ratio, self.stopping_threshold or 0.0)
        passed = False
        if self.statistic <= threshold:
            generator = torch.Generator().manual_seed(self.seed)
            self.p_value = float(relative_change_test(path, self.window, self.n_permutations, generator).p_value)
            passed = self.p_value <= self.alpha
            if passed and self.drift_guard:
                self.drift_bound = self._drift_bound(means, movement)
                if not self.drift_bound <= self.drift_margin:
                    self.drift_p_value = self._drift_p_value(means, generator)
                passed = self.drift_bound <= self.drift_margin or self.drift_p_value <= self.drift_alpha
        if epoch < self.min_epochs:
            return False, DynamicsStoppingReason.NOT_STOPPED, None
        detail = (
            f"median relative change {self.statistic:.3g} (recent {self.window} epochs against the first half of the "
            f"history; p = {self.p_value:.3g} under the time-shuffle null, alpha {self.alpha:g}"
            + (
                f"; drift guard: bound {self.drift_bound:.3g} (margin {self.drift_margin:g}), p = "
                f"{self.drift_p_value:.3g} (drift_alpha {self.drift_alpha:g})"
                if self.drift_guard
                else ""
            )
            + ")"
        )
        lowers = lr_outlook is not None and lr_outlook.changes and self.schedule != "ignore"
        if passed and self.stopping_threshold is not None and self.statistic <= self.stopping_threshold:
            return self._decide(
                DynamicsStoppingReason.STOPPING_THRESHOLD,
                f"{detail} <= stopping_threshold {self.stopping_threshold:g}",
                lr_outlook if lowers else None,
            )
        self.wait_count = self.wait_count + 1 if passed and self.statistic <= self.ratio else 0
        if self.wait_count >= self.patience:
            return self._decide(
                DynamicsStoppingReason.RELATIVE_CHANGE,
                f"{detail} <= ratio {self.ratio:g} for {self.wait_count} consecutive checks",
                lr_outlook if lowers else None,
            )
        return False, DynamicsStoppingReason.NOT_STOPPED, None

    def _decide(
        self, reason: DynamicsStoppingReason, message: str, lowering: LearningRateOutlook | None
    ) -> tuple[bool, DynamicsStoppingReason, str | None]:
        if lowering is None:
            return True, reason, f"{message}."
        if self.schedule == "wait":
            self.held_by_schedule += 1
            return (
                False,
                DynamicsStoppingReason.NOT_STOPPED,
                f"settled ({message}), but not stopping: {lowering.detail}.",
            )
        return True, reason, f"{message}; note: {lowering.detail} (schedule='warn')."

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
