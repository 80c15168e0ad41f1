"""DynamicsMonitor: the Lightning adapter of :class:`~lightning_dynamics.DynamicsTracker`.

The tracker owns the data flow (hooks -> summaries -> history -> measures -> history file); this callback only
maps Lightning's lifecycle onto it, reduces across processes with ``trainer.strategy.reduce`` and logs with
``pl_module.log``, as Lightning's ``SpikeDetection`` callback wraps its Fabric core.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_dynamics.capture.layer_selection import LayerSelection, is_compiled_module
from lightning_dynamics.config import DynamicsConfig, check_finite_real, check_int, layers_key
from lightning_dynamics.distributed import StoreRendezvous, process_group_timeout
from lightning_dynamics.tracker import DynamicsTracker

_STEP_HINT = (
    "Every process must run the same number of training batches per epoch: shard map-style data with a "
    "DistributedSampler (Trainer(use_distributed_sampler=True), the default, does it) or give every process an "
    "iterable of the same length; with uneven batches DDP's own gradient all-reduces are mismatched too."
)

# Paths claimed by monitors of this process that have not written their file yet (two runs in one directory).
_CLAIMED_PATHS: set[Path] = set()


def default_probe_forward(pl_module: pl.LightningModule, batch: Any) -> Any:
    """Run the module on a batch's input: the first element of a tuple/list batch, else the batch itself."""
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return pl_module(inputs)


class DynamicsMonitor(Callback):
    r"""Watch training as a dynamical system: integration, metastability and a stability index.

    Forward hooks on the chosen layers accumulate a scalar summary of each layer's output on the model's
    device (one fused reduction per output, no host synchronisation, no activation kept). At each sample
    point (every training epoch, or every ``every_n_steps`` optimizer steps) the sums are all-reduced
    across processes in one collective, appended to an ``[L, T]`` history, and the measures of
    :mod:`lightning_dynamics.functional` are computed on the device and logged with ``pl_module.log``
    under ``<prefix>/``: ``integration``, ``integration_alpha``, ``metastability``, ``synchrony``,
    ``phase_integration``, ``n_excluded``, ``nonfinite``, ``stability_index`` and ``stability_volatility``.
    A key is first logged once there are enough sample points to define it (the first sample point says how
    many); from then on it is logged at every sample point, NaN included, so ``callback_metrics`` never holds
    a stale value. All of it is done by a :class:`~lightning_dynamics.DynamicsTracker` (:attr:`tracker`).

    Method and formulas: La Quang, Ugail, Howard et al., arXiv:2604.09716; docs/method.md.

    Args:
        layers: ``"auto"`` (convolutions, linear, recurrent and attention blocks), ``"all"`` (every leaf
            module), a list of module names, fnmatch patterns or module types, or a predicate
            ``(name, module) -> bool``.
        max_layers: cap on the number of layers, kept evenly spread through depth; ``None`` for no cap.
        summary: ``"rms"``, ``"mean"``, ``"abs_mean"`` or ``"std"`` of each layer's outputs per interval.
        every_n_steps: sample every this many optimizer steps instead of every epoch.
        source: ``"train"`` (the batches training sees; no extra forward) or ``"probe"`` (a fixed batch run in
            eval mode under ``no_grad`` at each sample point).
        probe_batch: the probe batch (default: the first training batch).
        probe_forward: ``(pl_module, batch) -> output`` for the probe (default: ``pl_module(batch[0])``).
        window: sliding window ``w`` of the stability index (>= 16, the shortest DFA accepts).
        volatility_window: ``k``, sample points of stability index per volatility value (>= 2).
        weights: ``(w_I, w_M)`` of the stability index, non-negative, summing to 1.
        detrend: preprocessing of the series (``"diff"``, ``"linear"``, ``"mean"`` or ``None``).
        pad: Hilbert edge handling (``"reflect"`` or ``None``).
        h_opt, sigma: the integration map's optimum and width.
        compute_phase_integration: also compute ``phase_integration`` (O(L^2) per sample point).
        history_window: compute the whole-history measures over the last this many sample points only; ``None``
            (default) for the whole history. Bounds the cost of a sample point in long ``every_n_steps`` runs.
        prog_bar: show the logged keys in the progress bar.
        prefix: logging namespace: keys are ``<prefix>/<measure>``; two monitors need different prefixes.
        save_history: write the history to ``<log_dir>/<prefix>_history.pt`` at the end of fit and on an
            exception (versioned ``-v1``, ``-v2``, ... when that name exists: nothing is overwritten), and hand
            it to loggers that keep artifacts (MLflow, W&B).
        save_every_n_samples: also write it every this many sample points (a killed run loses at most that many).
        complexity_every_n_samples: every this many sample points also log ``higuchi_fd``, ``katz_fd`` and
            ``mfdfa_width`` (layer means over the history; docs/method.md section 9); off by default.
        surrogates_every_n_samples: every this many sample points also log ``metastability_z`` and
            ``integration_z`` against 20 phase-randomised surrogates (docs/method.md section 7); off by default.
        log_dashboard: at the end of fit, log the dashboard figure to loggers that take images (rank 0 only;
            needs matplotlib).
        checkpoint_probe_batch: store the probe batch in checkpoints (off: it may be large or private; a resumed
            run then takes a new first batch unless ``probe_batch`` is given).
        ddp_timeout: with several processes, seconds each process waits for the others before the sample
            point's all-reduce (and at each epoch start) before it fails with a
            :class:`~lightning_dynamics.distributed.DistributedMismatchError`; ``None`` (default) for the
            strategy's process-group timeout (``DDPStrategy(timeout=...)``, 30 minutes by default). Processes
            that disagree (e.g. different numbers of training batches) fail at once, whatever the timeout.
        verbose: announce the layers and the points needed.

    Example::

        trainer = Trainer(callbacks=[DynamicsMonitor()])
    """

    def __init__(
        self,
        layers: LayerSelection = "auto",
        max_layers: int | None = 64,
        summary: Literal["rms", "mean", "abs_mean", "std"] = "rms",
        every_n_steps: int | None = None,
        source: Literal["train", "probe"] = "train",
        probe_batch: Any = None,
        probe_forward: Callable[[pl.LightningModule, Any], Any] | None = None,
        window: int = 16,
        volatility_window: int = 5,
        weights: tuple[float, float] = (0.5, 0.5),
        detrend: Literal["diff", "linear", "mean"] | None = "diff",
        pad: Literal["reflect"] | None = "reflect",
        h_opt: float = 0.70,
        sigma: float = 0.15,
        compute_phase_integration: bool = True,
        history_window: int | None = None,
        prog_bar: bool = False,
        prefix: str = "dynamics",
        save_history: bool = True,
        save_every_n_samples: int | None = None,
        complexity_every_n_samples: int | None = None,
        surrogates_every_n_samples: int | None = None,
        log_dashboard: bool = True,
        checkpoint_probe_batch: bool = False,
        ddp_timeout: float | None = None,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        config = DynamicsConfig.from_arguments(locals())  # validates every measure setting
        self.tracker = DynamicsTracker(
            layers=layers,
            max_layers=max_layers,
            config=config,
            prefix=prefix,
            source=source,
            save_every_n_samples=save_every_n_samples,
            complexity_every_n_samples=complexity_every_n_samples,
            surrogates_every_n_samples=surrogates_every_n_samples,
            warn=rank_zero_warn,
            info=rank_zero_info,
        )
        self.every_n_steps = check_int("every_n_steps", every_n_steps, 1, allow_none=True)
        self.probe_batch = probe_batch
        self.probe_forward = probe_forward or default_probe_forward
        self.prog_bar = prog_bar
        self.save_history = save_history
        self.log_dashboard = log_dashboard
        self.checkpoint_probe_batch = checkpoint_probe_batch
        self.ddp_timeout = None if ddp_timeout is None else check_finite_real("ddp_timeout", ddp_timeout, positive=True)
        self.verbose = verbose
        self._rendezvous: StoreRendezvous | None = None
        self._batches_this_epoch = 0
        self._pending_state: dict[str, Any] | None = None
        self._last_sample_step = -1
        self._defined: set[str] = set()
        self._announced = False
        self._other_prefixes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ views of the tracker

    @property
    def config(self) -> DynamicsConfig:
        return self.tracker.config

    @property
    def prefix(self) -> str:
        return self.tracker.prefix

    @property
    def source(self) -> str:
        return self.tracker.source

    @property
    def layers(self) -> LayerSelection:
        return self.tracker.layers

    @property
    def history(self) -> Any:
        return self.tracker.history

    @property
    def metrics(self) -> dict[str, list[float]]:
        return self.tracker.metrics

    @property
    def history_path(self) -> Path | None:
        """Where the history file goes (chosen at fit start; may be set to another path before fit end)."""
        return self.tracker.history_path

    @history_path.setter
    def history_path(self, path: str | Path | None) -> None:
        self.tracker.history_path = None if path is None else Path(path)

    @property
    def layer_names(self) -> list[str]:
        return self.tracker.layer_names

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys this monitor logs: ``<prefix>/<measure>``."""
        return tuple(f"{self.prefix}/{key}" for key in self.tracker.keys)

    def points_needed(self) -> dict[str, int]:
        """Sample points before each key is first logged."""
        return self.config.points_needed()

    # ------------------------------------------------------------------ Lightning plumbing

    @property
    def state_key(self) -> str:
        # The prefix identifies a monitor (two with one prefix are an error); the layer selection is named
        # without memory addresses, so a predicate keeps its key across processes and resume finds the state.
        return self._generate_state_key(prefix=self.prefix, layers=layers_key(self.layers))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        monitors = [c for c in trainer.callbacks if isinstance(c, DynamicsMonitor)]  # type: ignore[attr-defined]
        same = [m for m in monitors if m.prefix == self.prefix]
        if len(same) > 1:
            raise ValueError(
                f"{len(same)} DynamicsMonitor callbacks share prefix={self.prefix!r}: their keys would overwrite "
                "each other. Give each monitor its own prefix, e.g. DynamicsMonitor(prefix='dynamics_probe')."
            )
        self._other_prefixes = tuple(f"{m.prefix}/" for m in monitors if m is not self)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After strategy setup and configure_model: the modules are the final ones, on their device.
        self.tracker.attach(pl_module, device=pl_module.device, capture_training_forwards=False)
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self._restore(state)
        if self.source == "train":
            self._recompile_if_compiled(trainer, pl_module)
        self._rendezvous = StoreRendezvous.for_default_group(
            namespace=self.prefix,
            timeout=self.ddp_timeout or process_group_timeout(trainer.strategy),
            owner=f"DynamicsMonitor[{self.prefix}]",
        )
        # trainer.log_dir is a collective under DDP: resolve it here, where every rank passes, not at the end.
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            path = self.tracker.claim_history_path(log_dir, taken=_CLAIMED_PATHS)
            _CLAIMED_PATHS.add(path)
        log_every = int(getattr(trainer, "log_every_n_steps", 1))  # set by Trainer.__init__, untyped
        if self.every_n_steps and trainer.loggers and self.every_n_steps % log_every != 0:
            rank_zero_warn(
                f"DynamicsMonitor(every_n_steps={self.every_n_steps}) logs at steps that "
                f"Trainer(log_every_n_steps={log_every}) does not write to the loggers; the values "
                "still reach callback_metrics and the saved history. Set log_every_n_steps to a divisor of "
                f"{self.every_n_steps} to see them in the logger."
            )
        if self.verbose:
            names = self.layer_names
            rank_zero_info(
                f"DynamicsMonitor[{self.prefix}]: {len(names)} layers ({names[0]} ... {names[-1]}), "
                f"summary={self.config.summary!r}, source={self.source!r}, sampling every "
                + (f"{self.every_n_steps} steps." if self.every_n_steps else "epoch.")
            )

    @staticmethod
    def _is_compiled(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        return (
            getattr(pl_module, "_compiler_ctx", None) is not None
            or is_compiled_module(trainer.model if trainer.model is not None else pl_module)
            or any(is_compiled_module(m) for m in pl_module.modules())
        )

    def _recompile_if_compiled(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Make compiled code run the hooks just attached.

        torch.compile does not guard on module hooks (``torch._dynamo.config.skip_nnmodule_hook_guards``):
        code compiled before the hooks existed would silently skip them. Resetting dynamo's caches makes
        the next call recompile with the hooks traced in (a one-off recompilation; a model compiled after
        this point traces them anyway).
        """
        if self._is_compiled(trainer, pl_module):
            torch._dynamo.reset()
            if self.verbose:
                rank_zero_info("DynamicsMonitor: compiled model detected; dynamo caches reset so the hooks run.")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches_this_epoch = 0
        if self._rendezvous is not None:
            # Uneven batches per process would pair our epoch-end all-reduce with a gradient all-reduce.
            self._rendezvous.agree(
                f"the start of epoch {trainer.current_epoch}",
                {
                    "epoch": trainer.current_epoch,
                    "step": trainer.global_step,
                    "num_training_batches": str(trainer.num_training_batches),
                },
                hint=_STEP_HINT,
            )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.source == "train":
            self.tracker.capture_enabled = True
        elif self.probe_batch is None:
            self.probe_batch = _detached_copy(batch)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.source == "train":
            self.tracker.capture_enabled = False
        self._batches_this_epoch += 1
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_sample_step:
            self._last_sample_step = step
            self._sample(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.every_n_steps:
            self._sample(trainer, pl_module, on_step=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker.detach()
        path = self._write_history(trainer)
        if trainer.is_global_zero and path is not None:
            self._hand_to_loggers(trainer, path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.tracker.detach()
        self._write_history(trainer)  # never raises: a failing save must not mask the user's exception

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.tracker.detach()
        self._rendezvous = None

    def state_dict(self) -> dict[str, Any]:
        if self.tracker.history is None:
            return {} if self._pending_state is None else dict(self._pending_state)
        state = self.tracker.state_dict(
            include_probe_batch=self.checkpoint_probe_batch and self.source == "probe",
            probe_batch=_to_cpu(self.probe_batch),
        )
        state["every_n_steps"] = self.every_n_steps
        state["last_sample_step"] = self._last_sample_step
        state["defined"] = sorted(self._defined)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.tracker.history is None:
            self._pending_state = dict(state_dict)  # applied in on_fit_start, once the layers are known
        else:
            self._restore(state_dict)

    def _restore(self, state: dict[str, Any]) -> None:
        saved_every = state.get("every_n_steps")
        if saved_every != self.every_n_steps:
            raise ValueError(
                f"DynamicsMonitor[{self.prefix}]: the checkpoint was recorded with every_n_steps={saved_every!r}, "
                f"this monitor samples with every_n_steps={self.every_n_steps!r}; one history cannot mix sampling "
                "intervals. Use the same every_n_steps, or resume without the callback's state."
            )
        self.tracker.load_state_dict(state)
        self._last_sample_step = int(state.get("last_sample_step", -1))
        self._defined = set(state.get("defined", []))
        if self.source == "probe" and state.get("probe_batch") is not None and self.probe_batch is None:
            self.probe_batch = state["probe_batch"]

    # ------------------------------------------------------------------ the data flow

    def _sample(self, trainer: pl.Trainer, pl_module: pl.LightningModule, on_step: bool) -> None:
        if self.tracker.history is None or trainer.sanity_checking:
            return
        probe = None
        if self.source == "probe":
            if self.probe_batch is None:
                rank_zero_warn("DynamicsMonitor(source='probe') has no probe batch yet; this sample point is empty.")
            else:
                batch = move_data_to_device(self.probe_batch, pl_module.device)

                def probe() -> Any:
                    self._recompile_if_compiled(trainer, pl_module)  # the probe's hooks exist only now
                    return self.probe_forward(pl_module, batch)

        def reduce(packed: Tensor) -> Tensor:
            if self._rendezvous is not None:  # all processes here, in step, or a clear error: never a hang
                self._rendezvous.agree(
                    f"sample point {self.tracker.n_samples}",
                    {"epoch": trainer.current_epoch, "step": trainer.global_step, "batches": self._batches_this_epoch},
                    hint=_STEP_HINT,
                )
            return trainer.strategy.reduce(packed, reduce_op="sum")  # one collective

        values = self.tracker.sample(
            trainer.current_epoch,
            trainer.global_step,
            reduce=reduce,
            logged=self._trainer_scalars(trainer),
            probe=probe,
            probe_context=trainer.precision_plugin.forward_context,
        )
        self._announce_once()
        for key, value in values.items():
            if math.isnan(value) and key not in self._defined:
                continue  # not defined yet: nothing is logged before a key exists
            self._defined.add(key)
            with warnings.catch_warnings():
                # Lightning suggests sync_dist for epoch-level values under DDP; ours are already global.
                warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
                pl_module.log(
                    f"{self.prefix}/{key}",
                    value,
                    on_step=on_step,
                    on_epoch=not on_step,
                    prog_bar=self.prog_bar,
                    batch_size=1,
                    sync_dist=False,  # already identical on every rank: the sums were all-reduced
                )

    def _trainer_scalars(self, trainer: pl.Trainer) -> dict[str, float]:
        """The other logged scalars (validation accuracy, losses) at this sample point, for the history file."""
        out: dict[str, float] = {}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(f"{self.prefix}/") or key.startswith(self._other_prefixes):
                continue
            if isinstance(value, Tensor) and value.numel() == 1:
                out[key] = float(value)
            elif isinstance(value, (int, float)):
                out[key] = float(value)
        return out

    def _announce_once(self) -> None:
        if self._announced or not self.verbose:
            return
        self._announced = True
        unit = f"{self.every_n_steps}-step sample points" if self.every_n_steps else "epochs"
        rank_zero_info(
            f"DynamicsMonitor[{self.prefix}]: metrics appear once enough sample points exist: "
            + ", ".join(f"{key} after {n}" for key, n in self.points_needed().items())
            + f" {unit} (n_excluded and nonfinite with the first). Nothing is logged before."
        )

    def _write_history(self, trainer: pl.Trainer) -> Path | None:
        if not self.save_history or self.tracker.history is None or not trainer.is_global_zero:
            return None
        path = self.tracker.save()
        if path is not None:
            _CLAIMED_PATHS.discard(path)
            if self.verbose:
                rank_zero_info(
                    f"DynamicsMonitor[{self.prefix}]: history of {self.tracker.n_samples} sample points saved to {path}"
                )
        return path

    def _hand_to_loggers(self, trainer: pl.Trainer, path: Path) -> None:
        """The history file as a run artifact, and the dashboard figure, for loggers that keep them."""
        from lightning_dynamics.callbacks.artifacts import log_history_artifact

        log_history_artifact(trainer.loggers, path, warn=rank_zero_warn)
        if self.log_dashboard:
            try:
                from lightning_dynamics.callbacks import figure_logging
            except ImportError:
                return
            log = getattr(figure_logging, "log_dashboard_from_history", None)
            if log is not None:
                try:
                    log(trainer.loggers, path, prefix=self.prefix)
                except Exception as error:  # a figure must never fail a finished fit
                    rank_zero_warn(f"DynamicsMonitor: could not log the dashboard figure: {error!r}")


def _detached_copy(batch: Any) -> Any:
    if isinstance(batch, Tensor):
        return batch.detach().clone()
    if isinstance(batch, (tuple, list)):
        return type(batch)(_detached_copy(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _detached_copy(v) for k, v in batch.items()}
    return batch


def _to_cpu(batch: Any) -> Any:
    return move_data_to_device(batch, torch.device("cpu")) if batch is not None else None
