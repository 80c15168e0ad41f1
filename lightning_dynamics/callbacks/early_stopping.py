"""DynamicsEarlyStopping: stop when the stability index's volatility drops (docs/method.md section 8)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_dynamics.callbacks.keys import find_producer, full_key
from lightning_dynamics.callbacks.monitor import DynamicsMonitor
from lightning_dynamics.convergence import DynamicsStoppingReason, VolatilityDropRule


class DynamicsEarlyStopping(EarlyStopping):
    r"""Stop training when the volatility of the dynamical stability index drops.

    The rule (:class:`~lightning_dynamics.convergence.VolatilityDropRule`): stop once
    :math:`V(t) \le \text{ratio} \cdot \max_{s \le t} V(s)` for ``patience`` consecutive checks, after
    ``min_epochs``; or once :math:`V(t) \le` ``stopping_threshold``. Checked at the end of every training
    epoch, after :class:`DynamicsMonitor` has logged (it is a monitoring callback, as Lightning's
    ``EarlyStopping`` is); skipped during sanity checks; the decision is agreed across processes with
    ``trainer.strategy.reduce_boolean_decision``. Only fresh values count: a check with no new sample point
    since the previous one (e.g. ``every_n_steps`` sampling slower than epochs) waits and says so; a value
    that is NaN after the key was defined (non-finite activations) stops with ``check_finite``.
    Source: La Quang, Ugail, Howard et al., arXiv:2604.09716.

    Args:
        monitor: the measure (``"stability_volatility"``) or a full ``<prefix>/<measure>`` key.
        prefix: the producing :class:`DynamicsMonitor`'s prefix.
        ratio: relative drop, in ``(0, 1)``.
        patience: consecutive checks the drop must hold.
        min_epochs: never stop before this epoch.
        stopping_threshold: also stop once the value is at or below this absolute level.
        check_finite: stop when the value becomes NaN or infinite.
        strict: raise if no :class:`DynamicsMonitor` logs ``monitor`` (a typo, another prefix, no monitor);
            otherwise warn and wait for the key.
        verbose: log every decision.

    Attributes:
        stopped_epoch: the epoch at which training was stopped (0 if it was not).
        stopping_reason: a :class:`~lightning_dynamics.convergence.DynamicsStoppingReason`.
        stopping_reason_message: the reason in words, also logged.
        waited_checks: checks skipped because no fresh value was logged since the previous one.
    """

    def __init__(
        self,
        monitor: str = "stability_volatility",
        prefix: str = "dynamics",
        ratio: float = 0.25,
        patience: int = 3,
        min_epochs: int = 0,
        stopping_threshold: float | None = None,
        check_finite: bool = True,
        strict: bool = True,
        verbose: bool = False,
        log_rank_zero_only: bool = False,
    ) -> None:
        self.rule = VolatilityDropRule(ratio, patience, min_epochs, stopping_threshold, check_finite)
        super().__init__(
            monitor=full_key(monitor, prefix),
            patience=patience,
            mode="min",
            strict=strict,
            check_finite=check_finite,
            stopping_threshold=stopping_threshold,
            verbose=verbose,
            check_on_train_epoch_end=True,
            log_rank_zero_only=log_rank_zero_only,
        )
        self.prefix = self.monitor.split("/", 1)[0]
        self.ratio = ratio
        self.min_epochs = min_epochs
        self.stopping_reason = DynamicsStoppingReason.NOT_STOPPED  # type: ignore[assignment]
        self.waited_checks = 0
        self._producer: DynamicsMonitor | None = None
        self._seen_samples = 0
        self._epoch = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, ratio=self.ratio)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._producer = find_producer(trainer.callbacks, self.monitor, "DynamicsEarlyStopping", self.strict)  # type: ignore[attr-defined]

    def _validate_condition_metric(self, logs: dict[str, Tensor]) -> bool:
        # The key exists once enough sample points exist (the monitor says how many); until then, wait.
        return self.monitor in logs

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        self._epoch = trainer.current_epoch
        if self._producer is not None:
            samples = self._producer.tracker.n_samples
            if samples == self._seen_samples or self.monitor not in trainer.callback_metrics:
                if self.monitor in trainer.callback_metrics:
                    self.waited_checks += 1
                    if self.verbose:
                        rank_zero_info(
                            f"DynamicsEarlyStopping: no fresh {self.monitor} at epoch {self._epoch} (no sample point "
                            "since the last check); waiting."
                        )
                return
            self._seen_samples = samples
        super()._run_early_stopping_check(trainer)

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, str | None]:
        should_stop, reason, message = self.rule.update(float(current), self._epoch)
        self.wait_count = self.rule.wait_count
        if should_stop:
            self.stopping_reason = reason  # type: ignore[assignment]
            message = f"DynamicsEarlyStopping at epoch {self._epoch}: {message} Signaling Trainer to stop."
        elif self.verbose:
            message = (
                f"DynamicsEarlyStopping: {self.monitor} = {float(current):.4g}, peak {self.rule.peak:.4g}, "
                f"{self.rule.wait_count}/{self.rule.patience} checks at or below {self.rule.ratio:g} x peak."
            )
        return should_stop, message

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
        self.rule.load_state_dict(state_dict["rule"])
        self.wait_count = self.rule.wait_count
        self.stopped_epoch = int(state_dict["stopped_epoch"])
        self.stopping_reason = DynamicsStoppingReason(state_dict["stopping_reason"])  # type: ignore[assignment]
        self.stopping_reason_message = state_dict.get("stopping_reason_message")
        self._seen_samples = int(state_dict.get("seen_samples", 0))
        self.waited_checks = int(state_dict.get("waited_checks", 0))
