"""DynamicsEarlyStopping: stop when the stability index's volatility drops (METHOD.md section 8)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping
from torch import Tensor

from lightning_dynamics.callbacks.monitor import DynamicsMonitor
from lightning_dynamics.convergence import DynamicsStoppingReason, VolatilityDropRule


class DynamicsEarlyStopping(EarlyStopping):
    r"""Stop training when the volatility of the dynamical stability index drops.

    The rule (:class:`~lightning_dynamics.convergence.VolatilityDropRule`): stop once
    :math:`V(t) \le \text{ratio} \cdot \max_{s \le t} V(s)` for ``patience`` consecutive checks, after
    ``min_epochs``; or once :math:`V(t) \le` ``stopping_threshold``. Checked at the end of every training
    epoch, after :class:`DynamicsMonitor` has logged (it is a monitoring callback, as Lightning's
    ``EarlyStopping`` is); skipped during sanity checks; the decision is agreed across processes with
    ``trainer.strategy.reduce_boolean_decision``. Source: La Quang, Ugail, Howard et al., arXiv:2604.09716.

    Args:
        monitor: the logged key (default: the monitor's volatility).
        ratio: relative drop, in ``(0, 1)``.
        patience: consecutive checks the drop must hold.
        min_epochs: never stop before this epoch.
        stopping_threshold: also stop once the value is at or below this absolute level.
        check_finite: stop when the value becomes NaN or infinite.
        strict: raise if nothing can produce ``monitor`` (e.g. no :class:`DynamicsMonitor` among the callbacks).
        verbose: log every decision.

    Attributes:
        stopped_epoch: the epoch at which training was stopped (0 if it was not).
        stopping_reason: a :class:`~lightning_dynamics.convergence.DynamicsStoppingReason`.
        stopping_reason_message: the reason in words, also logged.
    """

    def __init__(
        self,
        monitor: str = "dynamics/stability_volatility",
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
            monitor=monitor,
            patience=patience,
            mode="min",
            strict=strict,
            check_finite=check_finite,
            stopping_threshold=stopping_threshold,
            verbose=verbose,
            check_on_train_epoch_end=True,
            log_rank_zero_only=log_rank_zero_only,
        )
        self.ratio = ratio
        self.min_epochs = min_epochs
        self.stopping_reason = DynamicsStoppingReason.NOT_STOPPED  # type: ignore[assignment]
        self._has_producer = False
        self._epoch = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, ratio=self.ratio)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._has_producer = any(isinstance(c, DynamicsMonitor) for c in getattr(trainer, "callbacks", []))
        if self.strict and self.monitor.startswith("dynamics/") and not self._has_producer:
            raise RuntimeError(
                f"DynamicsEarlyStopping(monitor={self.monitor!r}) needs a DynamicsMonitor among the Trainer's "
                "callbacks to log that key; add DynamicsMonitor() or pass strict=False."
            )

    def _validate_condition_metric(self, logs: dict[str, Tensor]) -> bool:
        if self.monitor in logs:
            return True
        if self.strict and not self._has_producer:
            raise RuntimeError(
                f"DynamicsEarlyStopping could not find the monitored key {self.monitor!r} in the logged metrics "
                f"(available: {sorted(logs)}); pass strict=False to wait for it silently."
            )
        return False  # the monitor logs the key once enough sample points exist (it says how many)

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        self._epoch = trainer.current_epoch
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
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rule.load_state_dict(state_dict["rule"])
        self.wait_count = self.rule.wait_count
        self.stopped_epoch = int(state_dict["stopped_epoch"])
        self.stopping_reason = DynamicsStoppingReason(state_dict["stopping_reason"])  # type: ignore[assignment]
        self.stopping_reason_message = state_dict.get("stopping_reason_message")
