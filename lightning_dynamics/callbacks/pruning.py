"""DiagnosisPruning: prune an Optuna trial when :class:`DynamicsDiagnosis` names a problem it cannot recover from.

A hyperparameter sweep spends most of its time on trials that were lost from their first epoch: a learning rate
that diverges, an initialisation that overflows. :class:`~lightning_dynamics.DynamicsDiagnosis` names those problems
as they happen; this callback reads its findings at each training epoch's end and ends the trial the way Optuna's
own ``optuna_integration.PyTorchLightningPruningCallback`` does on Lightning 2.x: it raises
:class:`optuna.TrialPruned` out of ``trainer.fit`` (one process), or, under DDP, stops every process through
``trainer.should_stop`` and leaves the decision in the study's storage for :meth:`DiagnosisPruning.check_pruned`.
The reason is recorded on the trial: ``trial.user_attrs["pruned_by"]``.

Optionally it also reports an objective (``monitor=``, e.g. ``"val_acc"``) each validation, so the study's pruner
(``MedianPruner``, ``HyperbandPruner``...) prunes on it too: one callback, one report per epoch.

Optuna is an optional dependency (``pip install "lightning-dynamics[sweep]"``): importing this module without it
raises an ImportError that says so; ``import lightning_dynamics`` never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_dynamics.callbacks.diagnosis import DynamicsDiagnosis
from lightning_dynamics.decisions.diagnosis import FINDING_KINDS, Finding

try:
    import optuna
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "lightning_dynamics.callbacks.pruning needs Optuna: pip install 'lightning-dynamics[sweep]' "
        "(optuna and optuna-integration)."
    ) from error

#: The kinds a trial does not recover from by training longer with the same hyperparameters (docs/sweeps.md):
#: a non-finite loss or weight stays non-finite; a diverging or oscillating loss and gradients above 100 are the
#: sampled learning rate or initialisation themselves; and parameters that no optimizer moves, broken data and
#: softmaxed outputs are bugs of the code that no hyperparameter fixes (every trial of the sweep will show them:
#: pruning says so at the first epoch). The slow kinds (``lr_too_low``, ``vanishing_gradients``,
#: ``weight_decay_too_strong``) and the partial ones (``dying_relu``, ``saturation``, ``label_noise``) are left to
#: the study's pruner on the objective: such trials can still end well, or end poorly but slowly.
HOPELESS_KINDS: tuple[str, ...] = (
    "nonfinite",
    "lr_too_high",
    "exploding_gradients",
    "not_training",
    "data_bug",
    "wrong_output",
)

#: The user attribute that says why a trial was pruned.
PRUNED_BY_KEY = "pruned_by"


class DiagnosisPruning(Callback):
    r"""Prune an Optuna trial when the diagnosis names a hopeless problem; optionally report an objective too.

    Put it in ``Trainer(callbacks=...)`` beside a :class:`~lightning_dynamics.DynamicsMonitor` and a
    :class:`~lightning_dynamics.DynamicsDiagnosis`. At each training epoch's end, after the diagnosis has run, the
    first finding of a kind in ``kinds`` prunes the trial: ``trial.user_attrs["pruned_by"]`` is set to the finding
    (``{"by": "diagnosis", "kind", "epoch", "step", "layers", "evidence", "action"}``) and
    :class:`optuna.TrialPruned` is raised out of ``trainer.fit``, as ``PyTorchLightningPruningCallback`` does.

    With ``monitor`` set, ``trainer.callback_metrics[monitor]`` is reported to the trial at each validation's end
    (``trial.report(value, step=epoch)``) and the study's pruner is asked (``trial.should_prune()``); a prune there
    records ``{"by": "pruner", "pruner", "monitor", "value", "epoch"}``. Do not use it together with
    ``PyTorchLightningPruningCallback``: both would report the same step.

    Under DDP (``trainer.world_size > 1``) the study needs a storage every process reaches (RDB, e.g.
    ``sqlite:///sweep.db`` or a shared PostgreSQL/MySQL server); the processes agree through
    ``trainer.strategy.reduce_boolean_decision``, every one stops (``trainer.should_stop``), rank 0 writes the reason
    to the storage, and the objective must call :meth:`check_pruned` right after ``trainer.fit`` to raise
    :class:`optuna.TrialPruned` (Optuna's own DDP caveat). The DDP path is not covered by a multi-process test yet.

    Args:
        trial: the trial of the objective (:class:`optuna.trial.Trial`).
        diagnosis: the diagnosis to read; ``None`` finds the one :class:`DynamicsDiagnosis` in
            ``Trainer(callbacks=...)`` (an error if there is none or more than one).
        kinds: the finding kinds that prune; ``None`` is :data:`HOPELESS_KINDS`; an empty list prunes on the
            objective only.
        monitor: the objective reported to the study's pruner at each validation's end (``None``: no report).

    Attributes:
        pruned_by: why the trial was pruned (the dict stored on the trial), ``None`` while it was not.

    Example::

        def objective(trial):
            lr = trial.suggest_float("lr", 1e-4, 10.0, log=True)
            pruning = DiagnosisPruning(trial, monitor="val_acc")
            trainer = Trainer(max_epochs=20, callbacks=[DynamicsMonitor(), DynamicsDiagnosis(), pruning])
            trainer.fit(Model(lr), data)
            pruning.check_pruned()  # needed under DDP only; harmless otherwise
            return trainer.callback_metrics["val_acc"].item()
    """

    def __init__(
        self,
        trial: optuna.trial.Trial,
        diagnosis: DynamicsDiagnosis | None = None,
        kinds: Iterable[str] | None = None,
        monitor: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(trial, optuna.trial.Trial):
            raise TypeError(
                f"`trial` must be the optuna.trial.Trial given to the objective, got {type(trial).__name__} "
                "(a FrozenTrial or FixedTrial cannot be pruned)."
            )
        if diagnosis is not None and not isinstance(diagnosis, DynamicsDiagnosis):
            raise TypeError(
                f"`diagnosis` must be a lightning_dynamics.DynamicsDiagnosis or None, got {type(diagnosis).__name__}."
            )
        if kinds is None:
            chosen: tuple[str, ...] = HOPELESS_KINDS
        else:
            if isinstance(kinds, str):
                raise TypeError(f"`kinds` must be a list of finding kinds, got the string {kinds!r}; use [{kinds!r}].")
            chosen = tuple(kinds)
            unknown = [k for k in chosen if k not in FINDING_KINDS]
            if unknown:
                raise ValueError(f"`kinds` must name kinds from {FINDING_KINDS}, got {unknown}.")
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise ValueError(f"`monitor` must be a metric name in trainer.callback_metrics or None, got {monitor!r}.")
        if not chosen and monitor is None:
            raise ValueError("`kinds` is empty and `monitor` is None: nothing would prune; give kinds or a monitor.")
        self.trial = trial
        self.kinds = chosen
        self.monitor = monitor
        self.pruned_by: dict[str, Any] | None = None
        self._diagnosis = diagnosis
        self._distributed = False

    # ------------------------------------------------------------------ the decision

    @staticmethod
    def hopeless_finding(findings: Sequence[Finding], kinds: Iterable[str]) -> Finding | None:
        """The first finding of one of ``kinds`` (the one that prunes), or ``None``.

        Example:
            >>> from lightning_dynamics import Finding
            >>> found = [Finding("dying_relu", ["model.1"], 20, 0, "83% dead", "..."),
            ...          Finding("nonfinite", [], 44, 1, "loss is nan", "...")]
            >>> DiagnosisPruning.hopeless_finding(found, HOPELESS_KINDS).kind
            'nonfinite'
            >>> DiagnosisPruning.hopeless_finding(found[:1], HOPELESS_KINDS) is None
            True
        """
        wanted = set(kinds)
        return next((f for f in findings if f.kind in wanted), None)

    @staticmethod
    def reason_of(finding: Finding) -> dict[str, Any]:
        """The JSON-safe record of a pruning finding, as stored in ``trial.user_attrs["pruned_by"]``."""
        return {
            "by": "diagnosis",
            "kind": finding.kind,
            "epoch": int(finding.epoch),
            "step": int(finding.step),
            "layers": list(finding.layers),
            "evidence": finding.evidence,
            "action": finding.action,
        }

    # ------------------------------------------------------------------ Lightning hooks

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]
        if self.kinds:
            found = [c for c in callbacks if isinstance(c, DynamicsDiagnosis)]
            if self._diagnosis is None:
                if len(found) != 1:
                    raise ValueError(
                        f"DiagnosisPruning reads a DynamicsDiagnosis in Trainer(callbacks=...), found {len(found)}: "
                        "add one (beside a DynamicsMonitor), or pass the one to read as `diagnosis=`."
                    )
                self._diagnosis = found[0]
            elif not any(c is self._diagnosis for c in callbacks):
                raise ValueError(
                    "DiagnosisPruning(diagnosis=...) is not in Trainer(callbacks=...): add that DynamicsDiagnosis "
                    "to the trainer's callbacks, or leave `diagnosis=None` to use the one there."
                )
            # Run right after the diagnosis at each epoch's end (it places itself in its `setup`, which has run).
            others = [c for c in callbacks if c is not self]
            position = next(i for i, c in enumerate(others) if c is self._diagnosis) + 1
            trainer.callbacks = [*others[:position], self, *others[position:]]  # type: ignore[attr-defined]
        self._distributed = trainer.world_size > 1
        if self._distributed and isinstance(self.trial.storage, optuna.storages.InMemoryStorage):
            raise ValueError(
                "DiagnosisPruning under DDP needs a study storage every process reaches (an RDB such as "
                "'sqlite:///sweep.db' or a shared PostgreSQL/MySQL URL), got the in-memory storage."
            )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning also calls this after the sanity check: no report at epoch 0 twice.
        if self.monitor is None or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            rank_zero_warn(
                f"DiagnosisPruning: `monitor={self.monitor!r}` is not in trainer.callback_metrics "
                f"({sorted(trainer.callback_metrics)}): nothing reported to the study's pruner."
            )
            return
        epoch = trainer.current_epoch
        score = float(value)
        prune = False
        if trainer.is_global_zero:
            self.trial.report(score, step=epoch)
            prune = self.trial.should_prune()
        if self._distributed:
            prune = bool(trainer.strategy.broadcast(prune))
        if prune:
            pruner = type(self.trial.study.pruner).__name__
            value_out = score if math.isfinite(score) else str(score)
            self._prune(
                trainer,
                {"by": "pruner", "pruner": pruner, "monitor": self.monitor, "value": value_out, "epoch": epoch},
                f"{pruner} on {self.monitor}={score:.4g} at epoch {epoch}",
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.kinds or self._diagnosis is None or self.pruned_by is not None:
            return
        finding = self.hopeless_finding(self._diagnosis.findings, self.kinds)
        hopeless = finding is not None
        if self._distributed:  # the diagnosis sums the epoch's numbers first, so the ranks agree; make sure
            hopeless = trainer.strategy.reduce_boolean_decision(hopeless, all=False)
        if not hopeless:
            return
        if finding is None:
            reason: dict[str, Any] = {"by": "diagnosis", "kind": "another process's finding"}
            self._prune(trainer, reason, "a finding of another process")
        else:
            self._prune(trainer, self.reason_of(finding), str(finding))

    # ------------------------------------------------------------------ pruning

    def _prune(self, trainer: pl.Trainer, reason: dict[str, Any], words: str) -> None:
        self.pruned_by = reason
        message = f"DiagnosisPruning: trial {self.trial.number} pruned at epoch {trainer.current_epoch}: {words}"
        if not self._distributed:
            self.trial.set_user_attr(PRUNED_BY_KEY, reason)
            rank_zero_info(message)
            raise optuna.TrialPruned(message)
        # DDP: an exception on one process would leave the others waiting in a collective; every process stops
        # instead, and the main process raises in check_pruned() after fit.
        trainer.should_stop = True
        if trainer.is_global_zero:
            self.trial.set_user_attr(PRUNED_BY_KEY, reason)
            rank_zero_info(message)

    def check_pruned(self) -> None:
        """Raise :class:`optuna.TrialPruned` if this trial was pruned; call it right after ``trainer.fit``.

        Needed under DDP, where the callback stops the processes instead of raising (Optuna's
        ``PyTorchLightningPruningCallback.check_pruned`` is the same idea); the reason is read back from the
        study's storage, so it works when the fit ran in other processes (``ddp_spawn``). Does nothing for a trial
        that was not pruned.
        """
        reason = self.pruned_by
        if reason is None:
            # the storage, not the trial's cache: under ddp_spawn another process set it (as optuna_integration reads)
            reason = self.trial.storage.get_trial_user_attrs(self.trial._trial_id).get(PRUNED_BY_KEY)
        if reason is not None:
            raise optuna.TrialPruned(f"DiagnosisPruning: trial {self.trial.number} pruned: {reason}")

    def state_dict(self) -> dict[str, Any]:
        return {"pruned_by": self.pruned_by}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a ValueError says what was wrong."""
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("pruned_by"), (dict, type(None))):
            raise ValueError(
                f"DiagnosisPruning checkpoint state must be {{'pruned_by': dict | None}}, got {state_dict!r:.80}."
            )
        self.pruned_by = state_dict["pruned_by"]
