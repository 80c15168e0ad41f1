"""DynamicsEarlyStopping: stop when the layers' summaries have settled (docs/method.md section 8).

A plain Lightning ``Callback`` on public hooks only (``setup``, ``on_train_epoch_end``, ``state_dict`` /
``load_state_dict``, ``state_key``, ``trainer.should_stop``, ``trainer.strategy.reduce_boolean_decision``): the
decision lives in the framework-neutral rules of :mod:`lightning_dynamics.decisions.stopping`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_deprecation, rank_zero_info

from lightning_dynamics.callbacks.keys import (
    RELATIVE_CHANGE,
    STOPPING_P_VALUE,
    STOPPING_STATISTIC,
    find_producer,
    find_producer_by_prefix,
    full_key,
)
from lightning_dynamics.callbacks.monitor import DynamicsMonitor
from lightning_dynamics.decisions.stopping import (
    DynamicsStoppingReason,
    LearningRateOutlook,
    RelativeChangeRule,
    VolatilityDropRule,
    learning_rate_outlook,
)
from lightning_dynamics.validation import (
    ANY_DICT,
    Choice,
    Default,
    Int,
    OrNone,
    Str,
    check_bool,
    check_choice,
    check_state,
)

StoppingRule = Literal["relative_change", "volatility"]
RULES: tuple[str, ...] = get_args(StoppingRule)
VOLATILITY_KEY = "stability_volatility"  # the key the volatility rule reads unless `monitor` names another
# Recorded in the producing monitor's history at the point where the run was stopped (the epoch), for the report.
STOPPED_KEY = "stopped_epoch"


class DynamicsEarlyStopping(pl.Callback):
    r"""Stop training once the hooked layers' summaries have settled, beyond the run's own noise.

    Default (``rule="relative_change"``): :class:`~lightning_dynamics.decisions.stopping.RelativeChangeRule` on the
    producing :class:`DynamicsMonitor`'s history (any number of sample points per epoch): the median over layers of
    the last ``window_epochs`` epoch-to-epoch changes of each layer's summary, relative to the first half of the
    history's, must be at most ``ratio`` and significant at ``alpha`` under a time-shuffle null, for ``patience``
    consecutive checks, after ``min_epochs``. Measured false-positive rate on runs that never converge (white-noise
    and random-walk histories at 40 and 200 epochs, random-walk weights at epoch and per-step sampling): 0%
    (docs/early_stopping.md). Its statistic and p-value are logged as ``<prefix>/stopping_relative_change`` and
    ``<prefix>/stopping_p_value`` (the monitor's own ``relative_change`` is the same quantity on the raw sample
    points, for the dashboard).

    ``rule="volatility"`` selects the legacy :class:`~lightning_dynamics.decisions.stopping.VolatilityDropRule` on
    the logged key ``monitor`` (default ``"stability_volatility"``): stop once
    :math:`V(t) \le \text{ratio} \cdot \max_{s \le t} V(s)` for ``patience`` checks, or :math:`V(t) \le`
    ``stopping_threshold``. **It fires on noise** (random-walk histories: 39/200 at 40 epochs, 199/200 at 200);
    use it to study the signal, not to save compute.

    Checked at the end of every training epoch, after the other callbacks' ``on_train_epoch_end`` (at ``setup``
    the stopper moves itself after every callback that is not a checkpoint callback in ``trainer.callbacks``, so a
    monitor listed after it has already sampled). Only fresh values count: a check with no new sample point since
    the previous one waits and says so. The decision is agreed across processes with
    ``trainer.strategy.reduce_boolean_decision`` (one process that says stop stops all). With ``verbose=False``
    it says once, on rank 0, why and when it stopped; ``verbose=True`` logs every check.

    Args:
        monitor: the measure or ``<prefix>/<measure>`` key the ``"volatility"`` rule reads (``None``:
            ``"stability_volatility"``); the ``"relative_change"`` rule reads the monitor's history and no key.
            Deprecated: a rule chosen by ``monitor`` alone (``rule`` left out: ``monitor="relative_change"``, or
            another key, which meant the volatility rule) still works, with a ``DeprecationWarning`` that gives the
            new spelling. With ``rule="relative_change"``, ``monitor`` may only name ``[<prefix>/]relative_change``.
        prefix: the producing :class:`DynamicsMonitor`'s prefix.
        ratio: in ``(0, 1)``: largest median relative change that counts as settled (default rule), or the
            volatility drop (legacy rule).
        patience: consecutive passing checks (>= 1).
        min_epochs: never stop before this epoch (>= 0).
        stopping_threshold: ``None`` or a finite number >= 0: stop at once when the statistic is at or below it
            (default rule: and significant).
        check_finite: stop when the summaries (default rule) or the value (legacy rule) become non-finite.
        alpha: significance level of the default rule's permutation test, in ``(0, 1)``.
        window_epochs: the default rule's recent window, in epochs (>= 2).
        strict: raise if no :class:`DynamicsMonitor` produces what ``monitor`` needs; otherwise warn and wait.
        verbose: log every decision.
        rule: the stopping rule: ``"relative_change"`` (``None``, the default, unless a legacy ``monitor`` picks the
            volatility rule) or ``"volatility"`` (legacy, noise-prone).

    Attributes:
        rule: the :class:`~lightning_dynamics.decisions.stopping.RelativeChangeRule` or ``VolatilityDropRule``.
        monitor: the full key the rule is about (``<prefix>/relative_change`` for the default rule).
        stopped_epoch: the epoch at which training was stopped (0 if it was not).
        stopping_reason: a :class:`~lightning_dynamics.decisions.stopping.DynamicsStoppingReason`.
        stopping_reason_message: the reason in words, also logged.
        waited_checks: checks skipped because no fresh value existed since the previous one.
    """

    def __init__(
        self,
        monitor: str | None = None,
        prefix: str = "dynamics",
        ratio: float = 0.25,
        patience: int = 3,
        min_epochs: int = 0,
        stopping_threshold: float | None = None,
        check_finite: bool = True,
        alpha: float = 0.01,
        window_epochs: int = 8,
        strict: bool = True,
        verbose: bool = False,
        rule: StoppingRule | None = None,
    ) -> None:
        super().__init__()
        chosen: str | None = None if rule is None else check_choice("rule", rule, RULES)
        if monitor is not None and chosen is None:
            # Before `rule` existed, `monitor` picked the rule: its own name, or any other key for the volatility rule.
            key_prefix, measure = full_key(monitor, prefix).split("/", 1)
            chosen = RELATIVE_CHANGE if measure == RELATIVE_CHANGE else "volatility"
            if chosen == RELATIVE_CHANGE:
                new = f"rule={chosen!r}" + (f", prefix={key_prefix!r}" if key_prefix != prefix else "")
            else:
                new = f"rule={chosen!r}, monitor={monitor!r}"
            rank_zero_deprecation(
                f"DynamicsEarlyStopping(monitor={monitor!r}) chooses the stopping rule by its key, which is deprecated:"
                f" `rule` chooses it and `monitor` only names the key the volatility rule reads. Write "
                f"DynamicsEarlyStopping({new}).",
                stacklevel=6,  # past rank_zero_deprecation's own frames and this __init__: the user's line
            )
            if chosen == RELATIVE_CHANGE:
                monitor, prefix = None, key_prefix
        elif monitor is not None and chosen == RELATIVE_CHANGE:
            key_prefix, measure = full_key(monitor, prefix).split("/", 1)
            if measure != RELATIVE_CHANGE:
                raise ValueError(
                    f"`monitor` names the key the 'volatility' rule reads; rule='relative_change' reads the monitor's "
                    f"history and no key: leave `monitor` out or pass rule='volatility', got monitor={monitor!r}."
                )
            monitor, prefix = None, key_prefix
        chosen = chosen or RELATIVE_CHANGE
        self.monitor = full_key(monitor or (RELATIVE_CHANGE if chosen == RELATIVE_CHANGE else VOLATILITY_KEY), prefix)
        self.prefix = self.monitor.split("/", 1)[0]
        self.uses_history = chosen == RELATIVE_CHANGE
        self.strict = check_bool("strict", strict)
        self.verbose = check_bool("verbose", verbose)
        check_finite = check_bool("check_finite", check_finite)
        self.rule: RelativeChangeRule | VolatilityDropRule
        # Every argument is validated by the default rule, whichever rule runs (one rule set, one error format).
        default_rule = RelativeChangeRule(
            ratio=ratio,
            alpha=alpha,
            patience=patience,
            window_epochs=window_epochs,
            min_epochs=min_epochs,
            stopping_threshold=stopping_threshold,
            check_finite=check_finite,
        )
        if self.uses_history:
            self.rule = default_rule
        else:
            self.rule = VolatilityDropRule(ratio, patience, min_epochs, stopping_threshold, check_finite)
        self.ratio = float(ratio)
        self.patience = int(patience)
        self.min_epochs = int(min_epochs)
        self.stopped_epoch = 0
        self.stopping_reason = DynamicsStoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None
        self.waited_checks = 0
        self._producer: DynamicsMonitor | None = None
        self._seen_samples = 0
        self._said_waiting = False

    @property
    def state_key(self) -> str:
        # The format of Lightning's Callback._generate_state_key, written out to stay on the public surface.
        return f"{type(self).__qualname__}{ {'monitor': self.monitor, 'ratio': self.ratio}!r}"

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]
        if self.uses_history:
            self._producer = find_producer_by_prefix(callbacks, self.prefix, "DynamicsEarlyStopping", self.strict)
        else:
            self._producer = find_producer(callbacks, self.monitor, "DynamicsEarlyStopping", self.strict)
        # Run after every other callback's epoch end (as Lightning runs its EarlyStopping), before checkpoints:
        # a new list, so a hook loop iterating over the old one is not disturbed.
        others = [c for c in callbacks if c is not self]
        position = next((i for i, c in enumerate(others) if isinstance(c, Checkpoint)), len(others))
        trainer.callbacks = [*others[:position], self, *others[position:]]  # type: ignore[attr-defined]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        decision = self._check(trainer, pl_module, epoch)
        should_stop = trainer.strategy.reduce_boolean_decision(decision[0], all=False)
        if should_stop and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_epoch = epoch
            reason, message = decision[1], decision[2]
            if not decision[0]:  # this process's check did not say stop; another one's did
                message = "the check of another process said stop (reduce_boolean_decision)."
            self.stopping_reason = reason
            self.stopping_reason_message = f"DynamicsEarlyStopping stopped training at epoch {epoch}: {message}"
            rank_zero_info(self.stopping_reason_message)  # once, whatever `verbose` says
            tracker = None if self._producer is None else self._producer.tracker
            if tracker is not None and tracker.n_samples:  # the report says where the run was stopped
                tracker.record(f"{self.prefix}/{STOPPED_KEY}", float(epoch))

    # ------------------------------------------------------------------ the decision

    def _check(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int
    ) -> tuple[bool, DynamicsStoppingReason, str | None]:
        not_stopped = (False, DynamicsStoppingReason.NOT_STOPPED, None)
        if self._producer is not None:
            samples = self._producer.tracker.n_samples
            if samples == self._seen_samples:
                if samples > 0 and (self.uses_history or self.monitor in trainer.callback_metrics):
                    self.waited_checks += 1
                    self._say(f"no new sample point of {self.prefix} since the last check at epoch {epoch}; waiting.")
                return not_stopped
            self._seen_samples = samples
        if isinstance(self.rule, RelativeChangeRule):
            history = None if self._producer is None else self._producer.tracker.history
            if history is None:
                return not_stopped
            outlook = self._lr_outlook(trainer) if self.rule.schedule != "ignore" else None
            decision = self.rule.update(history.values, list(history.epochs), epoch, lr_outlook=outlook)
            self._log_statistic(pl_module)
            if not decision[0] and decision[2] is not None:  # settled, held by the schedule: say it once
                if self.rule.held_by_schedule == 1:
                    rank_zero_info(f"DynamicsEarlyStopping at epoch {epoch}: {decision[2]}")
                else:
                    self._say(f"epoch {epoch}: {decision[2]}")
            elif not decision[0] and math.isnan(self.rule.statistic):
                if not self._said_waiting:  # an undefined statistic every epoch would say nothing new
                    self._said_waiting = True
                    self._say(
                        f"epoch {epoch}: the median relative change needs {2 * self.rule.window_epochs + 1} epochs "
                        "with sample points; checks start then. Said once."
                    )
            elif not decision[0]:
                p_value = self.rule.p_value  # tested only at or below the ratio: no p-value to print above it
                self._say(
                    f"epoch {epoch}: median relative change {self.rule.statistic:.3g}"
                    + ("" if math.isnan(p_value) else f" (p = {p_value:.3g})")
                    + f", {self.rule.wait_count}/{self.rule.patience} checks at or below {self.rule.ratio:g}."
                )
            return decision
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return not_stopped
        decision = self.rule.update(float(value), epoch)
        if not decision[0]:
            self._say(
                f"{self.monitor} = {float(value):.4g}, peak {self.rule.peak:.4g}, "
                f"{self.rule.wait_count}/{self.rule.patience} checks at or below {self.rule.ratio:g} x peak."
            )
        return decision

    @staticmethod
    def _lr_outlook(trainer: pl.Trainer) -> LearningRateOutlook | None:
        """The schedulers' outlook (:func:`~lightning_dynamics.decisions.stopping.learning_rate_outlook`) over the
        rest of the budget; the first one that will still lower or raise the learning rate, else the last answer."""
        answer = None
        for config in trainer.lr_scheduler_configs:
            frequency = max(1, int(config.frequency))
            if config.interval == "step":
                total = trainer.estimated_stepping_batches
                left = None if not math.isfinite(total) else max(0, int(total) - trainer.global_step) // frequency
            else:  # epoch schedulers step after this epoch end: epochs current + 1 .. max_epochs - 1 are ahead
                last = trainer.max_epochs
                left = None if last is None or last < 0 else max(0, last - 1 - trainer.current_epoch) // frequency
            answer = learning_rate_outlook(config.scheduler, steps_left=left)
            if answer.changes:
                return answer
        return answer

    def _log_statistic(self, pl_module: pl.LightningModule) -> None:
        assert isinstance(self.rule, RelativeChangeRule)
        for name, value in ((STOPPING_STATISTIC, self.rule.statistic), (STOPPING_P_VALUE, self.rule.p_value)):
            if not math.isnan(value):  # identical on every process (the history is all-reduced)
                pl_module.log(f"{self.prefix}/{name}", value, on_step=False, on_epoch=True, batch_size=1)

    def _say(self, message: str) -> None:
        if self.verbose:
            rank_zero_info(f"DynamicsEarlyStopping: {message}")

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.state_dict(),
            "stopped_epoch": self.stopped_epoch,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
            "seen_samples": self._seen_samples,
            "waited_checks": self.waited_checks,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; every field is checked, and a ValueError names the one that is wrong."""
        schema = {
            "rule": ANY_DICT,  # the rule checks its own fields
            "stopped_epoch": Int(0),
            "stopping_reason": Choice([r.value for r in DynamicsStoppingReason]),
            "stopping_reason_message": OrNone(Str()),
            "seen_samples": Int(0),
            "waited_checks": Default(Int(0), 0),
        }
        rule_state, stopped_epoch, reason, message, seen_samples, waited_checks = check_state(
            state_dict, schema, "DynamicsEarlyStopping checkpoint state"
        ).values()
        self.rule.load_state_dict(rule_state)  # checks its own fields
        self.stopped_epoch, self.stopping_reason = stopped_epoch, DynamicsStoppingReason(reason)
        self.stopping_reason_message = message
        self._seen_samples, self.waited_checks = seen_samples, waited_checks
