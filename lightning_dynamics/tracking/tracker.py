"""DynamicsTracker: the framework-neutral core of lightning_dynamics (no Lightning import).

One object owns the whole data flow of a run (docs/method.md sections 0-8):
hooks -> per-layer summaries (on the model's device) -> the ``[L, T]`` history -> the measures and their noise
floors (:mod:`lightning_dynamics.measures.registry`) -> the logged series -> the history file; and the sampling loop
that decides when each of these happens (:class:`~lightning_dynamics.tracking.schedule.SampleSchedule`), the processes'
agreement before each all-reduce, the claim of the history file and the state to resume from.

The adapters only map a framework's hooks onto five calls and log what comes back: the Lightning callback
(:class:`~lightning_dynamics.DynamicsMonitor`), Fabric (:class:`~lightning_dynamics.DynamicsFabricMonitor`) and a
plain loop drive the same tracker, so they compute identical histories and values:

.. code-block:: python

    tracker = DynamicsTracker()
    tracker.begin_fit(model, history_dir="runs")
    for epoch in range(epochs):
        tracker.epoch_start(epoch, step, n_batches=len(loader))
        for batch_idx, (x, y) in enumerate(loader):
            with tracker.capturing():  # record the layers' outputs of training forwards only
                loss = loss_fn(model(x), y)
            ...
            step += 1
            tracker.batch_end(epoch, step, batch_idx, n_batches=len(loader))  # closes sub-epoch points
        point = tracker.epoch_end(epoch, step)  # the measures of the epoch: point.values, {key: value}
    tracker.end_fit()  # removes the hooks, writes <history_dir>/dynamics_history.pt
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from lightning_dynamics.capture import (
    ActivationCapture,
    HistorySaveError,
    SummaryAccumulator,
    SummaryHistory,
    claim_path,
    load_history,
    release_claim,
    save_history,
    select_layers,
    side_forward,
)
from lightning_dynamics.capture.history import nan_padded
from lightning_dynamics.capture.layer_selection import LayerSelection
from lightning_dynamics.capture.layer_stats import LayerStatistics
from lightning_dynamics.functional import rolling_volatility
from lightning_dynamics.measures.config import DynamicsConfig
from lightning_dynamics.measures.context import MeasureContext
from lightning_dynamics.measures.readings import fit_summary as summarize_fit
from lightning_dynamics.measures.readings import noise_floor_summary as summarize_noise_floors
from lightning_dynamics.measures.registry import MEASURES, NULL_SUFFIXES, compute_measures, null_bands
from lightning_dynamics.tracking.distributed import StoreRendezvous
from lightning_dynamics.tracking.notes import TrackerNotes
from lightning_dynamics.tracking.schedule import SampleSchedule
from lightning_dynamics.validation import (
    ANY_DICT,
    Bool,
    Default,
    DictOf,
    ListOf,
    Series,
    Str,
    check_bool,
    check_choice,
    check_int,
    check_layers,
    check_prefix,
    check_state,
)

HISTORY_FILENAME = "{prefix}_history.pt"
STATE_VERSION = 3
SOURCE_CHOICES = ("train", "probe")
_STEP_HINT = (
    "Every process must run the same number of training batches per epoch: shard map-style data with a "
    "DistributedSampler (Lightning's Trainer(use_distributed_sampler=True), the default, does it; Fabric: "
    "fabric.setup_dataloaders) or give every process an iterable of the same length; with uneven batches DDP's own "
    "gradient all-reduces are mismatched too."
)

_logger = logging.getLogger("lightning_dynamics")
# Seconds the end-of-fit dashboard took to draw and hand over, last time in this process (the first guess: about 1 s
# on the 2-core machine for the digits demo); what `dashboard_due` weighs against the cost budget.
_DASHBOARD_SECONDS = [1.0]
_clock = time.perf_counter  # the cost budget's clock (a test may hold it still)


def _default_warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def default_probe_forward(model: nn.Module, batch: Any) -> Any:
    """Run the model on a batch's input: the first element of a tuple/list batch, else the batch itself."""
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    return model(inputs)


class LogPoint(NamedTuple):
    """What an adapter logs at a point where the measures were computed.

    Attributes:
        values: ``{"<prefix>/<measure>": value}``: every key defined so far (NaN included once defined, so a
            logger never keeps a stale value).
        on_step: the point closes a step-sampled interval (``every_n_steps``); otherwise an epoch's.
    """

    values: dict[str, float]
    on_step: bool

    @property
    def without_null_edges(self) -> dict[str, float]:
        """The values less the noise-floor edges (``<measure>_null_lo``/``_null_hi``), for loggers that print every
        logged dict (the edges would more than double each line; the history file keeps them)."""
        return {key: value for key, value in self.values.items() if not key.endswith(NULL_SUFFIXES)}


class DynamicsTracker:
    r"""Capture layer summaries of a model, sample them on a schedule and compute the dynamics measures.

    Framework-neutral: no Lightning import. The adapters say where training is (fit, epoch, batch) and how to
    all-reduce across processes; the tracker decides when a sample point closes, what is recorded and computed,
    and what is logged.

    Args:
        layers: ``"auto"`` (convolutions, linear layers, recurrent and attention blocks), ``"all"`` (every leaf),
            a list of module names, fnmatch patterns, module types or predicates, or one predicate
            ``(name, module) -> bool``.
        max_layers: cap on the number of layers, kept evenly spread through depth; ``None`` for no cap.
        config: the measures' settings and the sampling cadence (:class:`~lightning_dynamics.DynamicsConfig`).
        prefix: namespace of the values (``<prefix>/<measure>`` when logged) and of the history file name.
        source: ``"train"`` (forward calls made in training mode, or inside :meth:`capturing`) or ``"probe"`` (a
            fixed batch run in eval mode under ``no_grad`` at each sample point).
        probe_batch: the probe batch (default: the first training batch, see :meth:`batch_start`).
        probe_forward: ``(model, batch) -> output`` for the probe (default: ``model(batch[0])``).
        save_history: write the history file at :meth:`end_fit` (and every ``save_every_n_samples`` points).
        save_every_n_samples: also write the history file every this many sample points (so a killed run
            loses at most that many); ``None``: only at the end.
        verbose: announce the layers, when each measure appears, and the file written.
        warn, info: where warnings and information go (the Lightning adapter passes its rank-zero functions).
        layer_stats: also measure the per-layer statistics of
            :mod:`~lightning_dynamics.capture.layer_stats` (dead and saturated units of the activation layers; the
            watched layers' gradient norm and update-to-weight ratio, read by :meth:`before_optimizer_step`) and log
            their summaries over depth as ``<prefix>/stats/<name>``; the per-layer series go into the history
            file's ``layer_stats``. Off by default (their cost on small models); :meth:`enable_layer_stats` turns
            them on before the tracker is attached.

    Attributes:
        history: the :class:`~lightning_dynamics.capture.SummaryHistory` (``None`` before :meth:`attach`).
        metrics: measure (and null band) -> one value per sample point (NaN where not computed or undefined).
        logged: other scalars recorded with each sample point (e.g. ``val_acc``), NaN where not fresh.
        history_path: where :meth:`save` writes by default (claimed by :meth:`begin_fit`).
    """

    def __init__(
        self,
        layers: LayerSelection = "auto",
        max_layers: int | None = 64,
        config: DynamicsConfig | None = None,
        prefix: str = "dynamics",
        source: str = "train",
        probe_batch: Any = None,
        probe_forward: Callable[[nn.Module, Any], Any] | None = None,
        save_history: bool = True,
        save_every_n_samples: int | None = None,
        verbose: bool = True,
        warn: Callable[[str], None] | None = None,
        info: Callable[[str], None] | None = None,
        layer_stats: bool = False,
    ) -> None:
        self.layers = check_layers(layers)
        self.max_layers = check_int("max_layers", max_layers, 1, allow_none=True)
        self.config = config if config is not None else DynamicsConfig()
        if not isinstance(self.config, DynamicsConfig):
            raise ValueError(f"`config` must be a DynamicsConfig, got {type(self.config).__name__}.")
        self.prefix = check_prefix("prefix", prefix)
        self.source = check_choice("source", source, SOURCE_CHOICES)
        if probe_forward is not None and not callable(probe_forward):
            raise ValueError(
                f"`probe_forward` must be a callable (model, batch) -> output or None, got {probe_forward!r}."
            )
        self.probe_batch = probe_batch
        self.probe_forward = probe_forward or default_probe_forward
        self.save_history = check_bool("save_history", save_history)
        self.save_every_n_samples = check_int("save_every_n_samples", save_every_n_samples, 1, allow_none=True)
        self.verbose = check_bool("verbose", verbose)
        self.statistics = LayerStatistics() if check_bool("layer_stats", layer_stats) else None
        self.keys = self.config.logged_keys()
        self.measure_names = self.config.measure_names()
        self.schedule = SampleSchedule(self.config.every_n_steps, self.config.points_per_epoch)
        self.warn = warn or _default_warn
        self.info = info or _logger.info
        self.notes = TrackerNotes(self.prefix, self.warn, self.info)

        self._history: SummaryHistory | None = None
        self._pending_at: list[tuple[int, int]] = []  # epoch and step of the closed points not yet summarised
        self.metrics: dict[str, list[float]] = {key: [] for key in self.keys}
        self._logged: dict[str, list[float]] = {}
        self._logged_pending: list[
            tuple[list[float], int, Tensor]
        ] = []  # logged tensors, read when the points are summarised
        self.computed: list[bool] = []  # per point: were the measures computed there (a log point)
        self.defined: set[str] = set()
        self.history_path: Path | None = None
        self.last_reason: str | None = None
        self.is_global_zero = True
        self._accumulator: SummaryAccumulator | None = None
        self._capture: ActivationCapture | None = None
        self._modules: list[nn.Module] = []
        self._model: nn.Module | None = None
        self._gate_handle: Any = None
        self._probing = False
        self._probe_failed = False
        self._pending_state: dict[str, Any] | None = None
        self._reduce: Callable[[Tensor], Tensor] | None = None
        self._rendezvous: StoreRendezvous | None = None
        self._probe_context: Callable[[], Any] | None = None
        self._batches_since_start = 0
        self._n_batches: float | int | None = None
        self._flags_since_log: Tensor | None = None  # [3, L] layer flags of the points since the last computation
        self._save_failed = False
        # The cost budget (DynamicsConfig.cost_budget): this fit's training time outside the tracker's own work, and
        # the time its noise floors took.
        self.train_seconds = 0.0
        self.floor_seconds = 0.0
        self.compute_seconds = 0.0  # the whole of the sample points' work (measures, floors, bookkeeping)
        self._floor_cost: float | None = None
        self._epoch_started: float | None = None
        self._epochs_timed = 0

    # ------------------------------------------------------------------ views

    @property
    def history(self) -> SummaryHistory | None:
        """The ``[L, T]`` history, up to the last closed sample point (summarising the pending ones first)."""
        self._summarize_pending()
        return self._history

    @history.setter
    def history(self, value: SummaryHistory | None) -> None:
        self._history = value
        self._pending_at = []

    @property
    def logged(self) -> dict[str, list[float]]:
        """Other scalars recorded with each sample point (e.g. ``val_acc``), NaN where not fresh."""
        self._summarize_pending()
        return self._logged

    @logged.setter
    def logged(self, value: dict[str, list[float]]) -> None:
        self._logged = value
        self._logged_pending = []

    @property
    def layer_names(self) -> list[str]:
        return [] if self._history is None else list(self._history.layer_names)

    @property
    def n_samples(self) -> int:
        if self._history is None:
            return 0
        return self._history.length + (self._accumulator.closed if self._accumulator is not None else 0)

    @property
    def attached(self) -> bool:
        return self._capture is not None and self._capture.attached

    def enable_layer_stats(self) -> bool:
        """Turn the per-layer statistics on (as ``layer_stats=True``) if they are off; ``True`` if this turned them on.

        For a reader that needs them (:class:`~lightning_dynamics.DynamicsDiagnosis`): call it before :meth:`attach`,
        which registers their hooks. A resumed or continued history gets NaN statistics for its earlier points.

        Raises:
            RuntimeError: the tracker is attached already (its hooks are registered without the statistics).
        """
        if self.statistics is not None:
            return False
        if self.attached:
            raise RuntimeError(
                f"DynamicsTracker[{self.prefix}]: enable_layer_stats() must come before attach(); build the tracker "
                "with layer_stats=True instead."
            )
        self.statistics = LayerStatistics()
        return True

    @property
    def accumulator(self) -> SummaryAccumulator | None:
        """The partial sums of the open sample interval (``None`` before :meth:`attach`)."""
        return self._accumulator

    def defined_from(self) -> dict[str, int]:
        """Sample points before each measure is first defined (:meth:`DynamicsConfig.defined_from`)."""
        return self.config.defined_from()

    # ------------------------------------------------------------------ attach / detach

    def attach(
        self,
        model: nn.Module,
        device: torch.device | str | None = None,
        capture_training_forwards: bool = True,
        *,
        record_during: tuple[object, str] | None = None,
        pause_during: tuple[object, str] | None = None,
    ) -> DynamicsTracker:
        """Select the layers of ``model`` and register the hooks (for ``source="train"``).

        Which forwards are recorded (forwards marked as :func:`~lightning_dynamics.capture.side_forward`, such as
        another tracker's probe or a twin trajectory's step, never are):

        * ``record_during=(owner, name)``: the calls made while ``owner.<name>(...)`` runs, and nothing else: the
          framework's training step (the Lightning adapter: its strategy's ``training_step``, which only the
          training loop calls; the transformers adapter: ``Trainer.training_step``). Forwards that other callbacks
          run in their hooks are not recorded, whatever the callbacks' order.
        * otherwise, with ``capture_training_forwards`` (plain loops, Fabric), every call of ``model`` in training
          mode, except while ``pause_during=(owner, name)`` runs (Fabric: ``Fabric.call``, the callbacks' hooks);
          calls in eval mode (validation) are not recorded;
        * otherwise recording is switched on and off explicitly (:meth:`batch_start`, :attr:`capture_enabled`,
          :meth:`capturing`).

        Attaching again to the same modules (e.g. a second ``fit`` of the same model) continues the history in a
        new segment; attaching to other modules starts a fresh one and says so. A pending
        :meth:`load_state_dict` is applied here, once the layers are known.
        """
        self.detach()
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        device = torch.device(device)
        layers = select_layers(model, self.layers, self.max_layers)
        names = [name for name, _ in layers]
        modules = [module for _, module in layers]
        same_modules = len(modules) == len(self._modules) and all(
            a is b for a, b in zip(modules, self._modules, strict=True)
        )
        if self.history is not None and same_modules and self.history.length > 0:
            self.info(
                f"DynamicsTracker[{self.prefix}]: same layers as before; continuing the history of "
                f"{self.history.length} sample points."
            )
            self.history.start_segment()
            if self.history.device != device:
                self._move(device)
        else:
            if self.history is not None and self.history.length > 0:
                self.info(
                    f"DynamicsTracker[{self.prefix}]: attached to other modules than before; starting a fresh "
                    f"history (the previous one had {self.history.length} sample points"
                    + (f", saved to {self.history_path}" if self.history_path is not None else "")
                    + ")."
                )
            self.history = SummaryHistory(names, self.config.summary, device=device)
            self._accumulator = SummaryAccumulator(len(layers), self.config.summary, device)
            self.metrics = {key: [] for key in self.keys}
            self.logged = {}
            self.computed = []
            self.defined = set()
            self.notes.forget()
        assert self._accumulator is not None
        self._modules = modules
        self._model = model
        self._capture = ActivationCapture(layers, self._accumulator)
        if self.statistics is not None:
            capture = self._capture
            self.statistics.attach(model, layers, device, gate=lambda: capture.enabled, max_layers=self.max_layers)
            if self.statistics.n_points < self.history.length:
                self.statistics.pad_to(self.history.length)
        if self.source == "train":
            self._capture.attach()
            if record_during is not None:
                self._capture.record_during(*record_during)
            elif capture_training_forwards:
                self._gate_handle = model.register_forward_pre_hook(self._gate)
            if pause_during is not None:
                self._capture.pause_during(*pause_during)
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self._restore(state)
        return self

    def detach(self) -> None:
        """Remove every hook (idempotent). The history and values stay."""
        if self._capture is not None:
            self._capture.remove()
        if self.statistics is not None:
            self.statistics.detach()
        if self._gate_handle is not None:
            self._gate_handle.remove()
            self._gate_handle = None

    def _gate(self, model: nn.Module, args: Any) -> None:
        """Root forward pre-hook: record this call of the model if it is in training mode (or probing)."""
        if self._capture is not None:
            self._capture.enabled = model.training or self._probing

    def _move(self, device: torch.device) -> None:
        assert self.history is not None and self._accumulator is not None
        state = self.history.state_dict()
        self.history = SummaryHistory(self.history.layer_names, self.config.summary, device=device)
        self.history.load_state_dict(state)
        acc_state = self._accumulator.state_dict()
        self._accumulator = SummaryAccumulator(len(self.history.layer_names), self.config.summary, device)
        self._accumulator.load_state_dict(acc_state)

    @property
    def _switched_by_batches(self) -> bool:
        """Recording is switched on at :meth:`batch_start` and off at :meth:`batch_end` (no gate, no window)."""
        return self._gate_handle is None and not (self._capture is not None and self._capture.windowed)

    @property
    def capture_enabled(self) -> bool:
        """Whether the hooks record now. Set by hand: on or off (with a method window, off suspends recording
        inside the window too, until set on again)."""
        return self._capture is not None and self._capture.enabled and not self._capture.suspended

    @capture_enabled.setter
    def capture_enabled(self, value: bool) -> None:
        if self._capture is None:
            return
        if self._capture.windowed:
            self._capture.suspended = not value
        else:
            self._capture.enabled = bool(value)

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Record the watched layers' outputs of the forward calls made inside this block."""
        if self._capture is None:
            raise RuntimeError("DynamicsTracker.capturing() before attach(model).")
        with self._capture.capturing():
            yield

    def before_optimizer_step(self) -> None:
        """The gradients of a step are ready and the optimizer is about to step (Lightning:
        ``on_before_optimizer_step``; a plain loop: after ``backward`` and ``scaler.unscale_``, before
        ``optimizer.step()``).

        At the first optimizer step of each sample interval, reads the watched layers' gradient norms and copies
        their weights, on the device (no host synchronisation); :meth:`batch_end` then measures the step's
        update-to-weight ratio and frees the copy. Other steps return at once. Without it the gradient statistics
        are NaN.
        """
        if self.statistics is not None:
            self.statistics.before_optimizer_step()

    # ------------------------------------------------------------------ the sampling loop

    def begin_fit(
        self,
        model: nn.Module,
        device: torch.device | str | None = None,
        *,
        reduce: Callable[[Tensor], Tensor] | None = None,
        ddp_timeout: float | None = None,
        history_dir: str | Path | None = None,
        is_global_zero: bool = True,
        capture_training_forwards: bool = True,
        probe_context: Callable[[], Any] | None = None,
        record_during: tuple[object, str] | None = None,
        pause_during: tuple[object, str] | None = None,
    ) -> DynamicsTracker:
        """Start (or continue) a fit: attach the hooks, set up the processes' agreement and claim the history file.

        Args:
            model: the model whose layers are watched (the plain module, not a DDP wrapper).
            device: where the summaries live (default: the model's parameters' device).
            reduce: sums a tensor across processes (one collective); ``None`` in one process.
            ddp_timeout: with several processes, seconds each waits for the others before a sample point's
                all-reduce and at each epoch start, then fails with a
                :class:`~lightning_dynamics.tracking.distributed.DistributedMismatchError` instead of hanging.
            history_dir: where ``<prefix>_history.pt`` goes (claimed now, versioned ``-v1``, ... when taken);
                ``None``: no file.
            is_global_zero: only the first process claims and writes the file.
            capture_training_forwards, record_during, pause_during: which forwards are recorded, see :meth:`attach`.
            probe_context: a context-manager factory around the probe forward (e.g. a precision plugin's).
        """
        self.attach(
            model,
            device=device,
            capture_training_forwards=capture_training_forwards,
            record_during=record_during,
            pause_during=pause_during,
        )
        self.is_global_zero = is_global_zero
        self._reduce = reduce
        self._probe_context = probe_context
        self._rendezvous = (
            StoreRendezvous.for_default_group(
                namespace=self.prefix, timeout=ddp_timeout, owner=f"DynamicsTracker[{self.prefix}]"
            )
            if reduce is not None and ddp_timeout is not None
            else None
        )
        self._save_failed = False
        self.train_seconds = self.floor_seconds = self.compute_seconds = 0.0
        self._floor_cost = self._epoch_started = None
        self._epochs_timed = 0
        if history_dir is not None and is_global_zero and self.save_history:
            try:
                self.history_path = claim_path(history_dir, HISTORY_FILENAME.format(prefix=self.prefix))
            except HistorySaveError as error:
                self.history_path = None
                self.warn(f"DynamicsTracker[{self.prefix}]: {error} The history will not be saved.")
        if self.verbose:
            names = self.layer_names
            cadence = (
                f"every {self.config.every_n_steps} steps"
                if self.schedule.by_step
                else f"{self.config.points_per_epoch} points per epoch"
            )
            needed = self.defined_from()
            self.info(
                f"DynamicsTracker[{self.prefix}]: {len(names)} layers"
                + (f" ({names[0]} ... {names[-1]})" if names else "")
                + f", {cadence}; keys appear after {min(needed.values())}-{max(needed.values())} points. Watch "
                f"{self.prefix}/relative_change (docs/reading_the_dashboard.md)."
            )
        return self

    def epoch_start(self, epoch: int, step: int, n_batches: float | int | None = None) -> None:
        """An epoch begins: with several processes, all agree on where they are (never a hang at the all-reduce)."""
        self._batches_since_start = 0
        self._n_batches = n_batches
        self._epoch_started = _clock()
        if self._rendezvous is not None:
            self._rendezvous.agree(
                f"the start of epoch {epoch}",
                {"epoch": epoch, "step": step, "num_training_batches": str(n_batches)},
                hint=_STEP_HINT,
            )

    def batch_start(self, batch: Any = None) -> None:
        """A training batch begins: record it (adapters that switch recording per batch) or keep it as probe."""
        if self.source == "train":
            if self._switched_by_batches:
                self.capture_enabled = True
        elif self.probe_batch is None and batch is not None:
            self.probe_batch = _detached_copy(batch)

    def batch_end(
        self,
        epoch: int,
        step: int,
        batch_idx: int | None = None,
        n_batches: float | int | None = None,
        logged: Mapping[str, float | Tensor] | Callable[[], Mapping[str, float | Tensor]] | None = None,
    ) -> LogPoint | None:
        """A training batch ended: close a sample point if the schedule says so; the values to log, if any.

        Args:
            epoch, step: where training is (``step``: optimizer steps so far).
            batch_idx: the batch's index in its epoch (default: counted since :meth:`epoch_start`).
            n_batches: batches in the epoch (default: as given to :meth:`epoch_start`; ``None`` or ``inf``: unknown).
            logged: other scalars to record with a point closed here (e.g. the training loss), or a callable that
                returns them, called only when a point closes (reading a framework's metrics has its own cost).
        """
        if self.source == "train" and self._switched_by_batches:
            self.capture_enabled = False
        if self.statistics is not None:
            self.statistics.after_optimizer_step()
        self._batches_since_start += 1
        index = self._batches_since_start - 1 if batch_idx is None else batch_idx
        if not self.schedule.closes_at_batch(index, self._n_batches if n_batches is None else n_batches, step):
            return None
        compute = self.schedule.computes_at_batch()
        values = self.sample(epoch, step, logged=logged() if callable(logged) else logged, compute=compute)
        if not compute:
            return None
        if not self._noise_floors_due("point"):  # not computed here: their NaN is not logged
            values = {k: v for k, v in values.items() if k not in set(self._null_keys())}
        return self.log_point(values, on_step=True)

    def epoch_end(self, epoch: int, step: int, logged: Mapping[str, float | Tensor] | None = None) -> LogPoint | None:
        """A training epoch ended: by epoch, close its last point and compute the measures; the values to log.

        By step, the noise floors of the epoch's last point are computed here (at most once per epoch).
        """
        if self._epoch_started is not None:  # the epoch's training time, before the tracker's own work at its end
            self.train_seconds += _clock() - self._epoch_started
            self._epochs_timed += 1
            self._epoch_started = None
        if self.schedule.closes_at_epoch_end():
            if self._batches_since_start == 0 and self.config.points_per_epoch > 1:
                self.notes.no_batch_ends(self.config.points_per_epoch)
            values = self.sample(epoch, step, logged=logged, compute=True)
            return self.log_point(values, on_step=False)
        if self._noise_floors_due("epoch_end", epoch):
            started = _clock()
            bands = self._timed_null_values()
            self.compute_seconds += _clock() - started
            for key, value in bands.items():
                self.metrics[key][-1] = value
            return self.log_point(bands, on_step=False)
        return None

    def end_fit(self) -> Path | None:
        """The fit ended (or failed): remove the hooks and write the history file; its path, or ``None``.

        A fit that recorded no sample point (e.g. ``limit_train_batches=0``) writes nothing and gives its claimed
        name back. Never raises.
        """
        self.detach()
        self._rendezvous = None
        self._reduce = None
        if not self.is_global_zero or not self.save_history:
            return None
        self._fill_last_floors()
        if self.n_samples == 0:
            if self.history_path is not None:
                release_claim(self.history_path)
                self.info(f"DynamicsTracker[{self.prefix}]: no sample point was recorded; no history file written.")
                self.history_path = None
            return None
        path = self.save()
        if path is not None and self.verbose:
            summary = self.fit_summary()
            self.info(
                f"DynamicsTracker[{self.prefix}]: history of {self.n_samples} sample points saved to {path}."
                + (f" {summary}" if summary else "")
            )
        return path

    def log_point(self, values: Mapping[str, float], on_step: bool) -> LogPoint:
        """The defined values of a point, keyed ``<prefix>/<measure>`` (a key is logged from its first definition)."""
        out = {}
        for key, value in values.items():
            if math.isnan(value) and key not in self.defined:
                continue  # not defined yet: nothing is logged before a key exists
            self.defined.add(key)
            out[f"{self.prefix}/{key}"] = value
        return LogPoint(out, on_step)

    # ------------------------------------------------------------------ sample points

    def sample(
        self,
        epoch: int,
        step: int,
        reduce: Callable[[Tensor], Tensor] | None = None,
        logged: Mapping[str, float | Tensor] | None = None,
        probe: Callable[[], Any] | None = None,
        probe_context: Callable[[], Any] | None = None,
        compute: bool = True,
    ) -> dict[str, float]:
        """Close the current sample interval: summaries -> history (-> measures). Returns the point's values.

        The adapters call it through :meth:`batch_end` / :meth:`epoch_end`; a hand-written loop may call it
        directly at points of its choosing.

        Args:
            epoch, step: where training is (recorded with the point).
            reduce: sums the packed per-layer sums across processes (default: the one given to
                :meth:`begin_fit`); ``None`` in one process.
            logged: other scalars to record with this point (e.g. validation accuracy), for reports; a one-element
                tensor stays on its device until the points are summarised (no host read here).
            probe: for ``source="probe"``: runs the model on the probe batch (default: :attr:`probe_forward` on
                :attr:`probe_batch`). A probe that raises is disabled with a warning; its points are missing.
            probe_context: extra context manager factory around the probe.
            compute: compute the measures (and their noise floors) at this point; otherwise they are NaN here.

        Returns:
            ``{key: value}`` for every key of :attr:`keys` (NaN where not defined, not computed, or failed).
        """
        if self._history is None or self._accumulator is None:
            raise RuntimeError("DynamicsTracker.sample() before attach(model).")
        if self.source == "probe":
            self._run_probe(probe or self._default_probe(), probe_context or self._probe_context)
        units = self.statistics.packed() if self.statistics is not None else None
        reduce = reduce or self._reduce
        if reduce is not None and self._rendezvous is not None:  # all processes here, in step: never a hang
            self._rendezvous.agree(
                f"sample point {self.n_samples}",
                {"epoch": epoch, "step": step, "batches": self._batches_since_start},
                hint=_STEP_HINT,
            )
        # The point's sums stay on the device as a pending column (two copies, no host read); they are summarised
        # into the history in one batch when the measures are computed or the history is read. Under DDP, now: one
        # collective for the summaries and the unit counts.
        self._accumulator.close()
        self._pending_at.append((int(epoch), int(step)))
        if reduce is not None or compute:
            units = self._summarize_pending(reduce, units)
        if self.statistics is not None and units is not None:
            self.statistics.close(units)
        self.computed.append(compute)
        values: dict[str, float] = dict.fromkeys(self.keys, math.nan)
        try:
            started = _clock()
            values.update(self._compute(compute))
            self.compute_seconds += _clock() - started
        except Exception as error:  # a monitor must never break the training it watches
            self.warn(
                f"DynamicsTracker[{self.prefix}]: computing the measures failed at epoch {epoch}, step {step} "
                f"({error!r}); the sample point is kept in the history, its measures are NaN, training goes on."
            )
        for key in self.keys:
            self.metrics[key].append(values[key])
        if compute and self.statistics is not None:
            try:
                stats = self.statistics.summary(self._history.values[:, -1].tolist())
                values.update({f"stats/{key}": value for key, value in stats.items()})
            except Exception as error:  # a monitor must never break the training it watches
                self.warn(f"DynamicsTracker[{self.prefix}]: the layer statistics failed at step {step} ({error!r}).")
        self._record_logged(logged or {})
        if self.save_every_n_samples and self.n_samples % self.save_every_n_samples == 0 and self.is_global_zero:
            self.save()
        return values

    def _summarize_pending(
        self, reduce: Callable[[Tensor], Tensor] | None = None, units: Tensor | None = None
    ) -> Tensor | None:
        """The closed points' sums -> the history, all at once: one (all-reduce and) summary of ``[n, L]``, and
        the layers' flags of those points (NaN/Inf, not called, disabled) kept for the next computation; the
        tensors recorded with them (:meth:`sample`'s ``logged``) read to the host. Returns ``units``, all-reduced
        with the sums where ``reduce`` is given."""
        if self._logged_pending:  # tensors recorded with the points (a loss): one host read for all of them
            devices = {t.device for _, _, t in self._logged_pending}
            for device in devices:
                entries = [e for e in self._logged_pending if e[2].device == device]
                read = torch.stack([t.to(torch.float64) for _, _, t in entries]).tolist()
                for (series, index, _), value in zip(entries, read, strict=True):
                    series[index] = value
            self._logged_pending = []
        acc, history = self._accumulator, self._history
        if acc is None or history is None or not acc.closed:
            return units
        packed = acc.pending()
        if reduce is not None:
            if units is None:
                packed = reduce(packed)
            else:  # one collective for the summaries and the unit counts
                flat = reduce(torch.cat([packed.flatten(), units.to(packed)]))
                packed, units = flat[: packed.numel()].view_as(packed), flat[packed.numel() :]
        values = acc.take(packed)  # [n, L], identical on every rank; may update the std shift and rms flags
        counts = packed[..., -1]
        flags = torch.stack(
            [(~torch.isfinite(values) & (counts > 0)).any(0), (counts == 0).any(0), counts.isnan().any(0)]
        )
        self._flags_since_log = flags if self._flags_since_log is None else flags | self._flags_since_log
        epochs, steps = zip(*self._pending_at, strict=True)
        self._pending_at = []
        history.extend(values.T, epochs, steps)
        return units

    def _default_probe(self) -> Callable[[], Any] | None:
        if self.probe_batch is None or self._model is None:
            self.warn(
                f"DynamicsTracker[{self.prefix}](source='probe') has no probe batch yet; this sample point is empty."
            )
            return None
        model, forward = self._model, self.probe_forward
        batch = _to_device(self.probe_batch, self._history.device if self._history is not None else None)
        return lambda: forward(model, batch)

    def _compute(self, compute: bool) -> dict[str, float]:
        """The point's values: nothing at a point without measures; at a point with measures (the history is
        summarised up to it), one host synchronisation for the measures and the layers' flags, and the noise
        floors."""
        if not compute:
            return {}
        assert self._history is not None
        cfg = self.config
        x = self._history.values
        n_layers, n_points = x.shape
        # Per layer, since the last computation: NaN/Inf activations, not called, disabled (a NaN count).
        flags_of = self._flags_since_log
        if flags_of is None:
            flags_of = torch.zeros(3, n_layers, dtype=torch.bool, device=x.device)
        self._flags_since_log = None
        out: dict[str, Tensor] = {"nonfinite": flags_of[0].sum().to(x.dtype)}
        point = MeasureContext(x, cfg)
        every = cfg.complexity_every_n_samples
        complexity_due = every is not None and n_points % every == 0
        names = tuple(n for n in self.measure_names if MEASURES[n].group == "default" or complexity_due)
        out.update(compute_measures(point, names))
        valid, reason = torch.ones(n_layers, dtype=torch.bool, device=x.device), None
        if "cross_layer" in point.__dict__:  # the shared pass ran: its exclusions and reason
            valid, reason = point.cross_layer.valid, point.cross_layer.reason
        keys = list(out)
        scalars = torch.stack([out[k].to(x.dtype) for k in keys])
        flat = torch.cat([scalars, *(flag.to(x.dtype) for flag in [*flags_of, ~valid])]).tolist()
        values = dict(zip(keys, flat[: len(keys)], strict=True))
        flags = flat[len(keys) :]
        rows = (flags[i * n_layers : (i + 1) * n_layers] for i in range(len(flags_of) + 1))
        self.notes.layers(self._history.layer_names, *rows)  # nonfinite, never called, disabled, excluded
        self.last_reason = reason
        self.notes.reason(reason, n_points, cfg)
        computed = [v for v, c in zip(self.metrics["stability_index"], self.computed[:-1], strict=True) if c]
        stability = [*computed, values.get("stability_index", math.nan)]
        k = cfg.volatility_window
        if len(stability) >= k:
            recent = torch.tensor(stability[-k:], dtype=torch.float64)
            values["stability_volatility"] = float(rolling_volatility(recent, window=k)[-1])
        if self._noise_floors_due("point"):
            values.update(self._timed_null_values())
        self.notes.short_series(values, n_points, cfg, self.measure_names)
        return values

    def _noise_floors_due(self, at: Literal["point", "epoch_end"], epoch: int | None = None) -> bool:
        """The one place that decides when the noise floors are computed (``at`` a computed sample ``"point"`` or an
        ``"epoch_end"``): with ``null_surrogates``, at each point with measures when sampling by epoch (the epoch's
        end); by step, never at a step point but once per epoch, at its end, for its last point if that point's
        measures were computed and its floors are still missing. A band costs ``null_surrogates`` computations of
        the measures, too many for every step."""
        if not self.config.null_surrogates:
            return False
        if not self.schedule.by_step:
            return at == "point" and self._floors_due()
        if at != "epoch_end" or self.history is None or not self.n_samples or not self.computed[-1]:
            return False
        missing = any(math.isnan(self.metrics[key][-1]) for key in self._null_keys())
        return self.history.epochs[-1] == epoch and missing and self._floors_due()

    def _null_keys(self) -> tuple[str, ...]:
        return tuple(key for name in self.measure_names for key in MEASURES[name].null_keys)

    def _null_values(self) -> dict[str, float]:
        """The noise floors of the measures defined at the last point, from the run's own history."""
        assert self.history is not None and self.config.null_surrogates
        x = self.history.values
        names = tuple(
            n for n in self.measure_names if MEASURES[n].null and x.shape[-1] >= MEASURES[n].defined_from(self.config)
        )
        if not names:
            return {}
        # Seeded by the point's index: the same history gives the same band on every process and on a rerun.
        generator = torch.Generator().manual_seed(self.n_samples)
        bands = null_bands(x, self.config, names, self.config.null_surrogates, generator)
        keys = list(bands)
        return dict(zip(keys, torch.stack([bands[k] for k in keys]).tolist(), strict=True))

    def _floors_due(self) -> bool:
        """Whether the noise floors fit in the cost budget now: always the first time (to time them), then while all
        of the tracker's sample-point work (measures, floors, bookkeeping), this band included, stays within
        ``cost_budget`` of the fit's training time. The floors are what the budget thins; the measures run at every
        computation."""
        budget = self.config.cost_budget
        if budget is None or self._floor_cost is None or not self._epochs_timed:  # no epoch timed: nothing to weigh
            return True
        if self._first_band_due():
            return True
        due = self.compute_seconds + self._floor_cost <= budget * self.train_seconds
        if not due and self.verbose:
            self.notes.floors_thinned(self._floor_cost, self.train_seconds / self._epochs_timed, budget)
        return due

    def _first_band_due(self) -> bool:
        """A measure with a noise floor is defined now and no band of it was logged yet: its first band is never
        left out (so every floor key appears in the loggers while the fit runs, not only in the history file)."""
        n = self.n_samples
        return any(
            MEASURES[name].null
            and n >= MEASURES[name].defined_from(self.config)
            and not set(MEASURES[name].null_keys) <= self.defined
            for name in self.measure_names
        )

    def _timed_null_values(self) -> dict[str, float]:
        start = _clock()
        bands = self._null_values()
        if bands:  # a point before any measure with a null is defined costs nothing to learn from
            self._floor_cost = _clock() - start
            self.floor_seconds += self._floor_cost
        return bands

    def _fill_last_floors(self) -> None:
        """The fit's last computed point gets its noise floors if the budget skipped them: the end-of-fit reading
        and the report then hold the band of the final values."""
        if not self.config.null_surrogates or self.history is None or not self.n_samples or not self.computed[-1]:
            return
        keys = self._null_keys()
        if not keys or not any(math.isnan(self.metrics[key][-1]) for key in keys):
            return
        try:
            bands = self._null_values()
        except Exception:  # the history is saved without the last band rather than not at all
            return
        for key, value in bands.items():
            self.metrics[key][-1] = value

    def dashboard_due(self, where: str | Path | None = None) -> bool:
        """Whether the end-of-fit dashboard fits in the cost budget: it costs about as much as the last one drawn in
        this process (1 s before any); says once when it is left out, and how to draw it."""
        budget = self.config.cost_budget
        if budget is None or not self._epochs_timed or _DASHBOARD_SECONDS[0] <= budget * self.train_seconds:
            return True
        if self.verbose:
            command = f"lightning-dynamics report {where}" if where is not None else "lightning-dynamics report RUN_DIR"
            self.info(
                f"DynamicsTracker[{self.prefix}]: dashboard not drawn: about {_DASHBOARD_SECONDS[0]:.1f} s against "
                f"{self.train_seconds:.1f} s of training, over cost_budget={budget:g}. Draw it with `{command}`."
            )
        return False

    @contextmanager
    def dashboard_timer(self, drawn: bool) -> Iterator[None]:
        """Time the end-of-fit dashboard drawn inside the block (when ``drawn``), as :meth:`dashboard_due` weighs it;
        a block that raises is not timed."""
        start = time.perf_counter()
        yield
        if drawn:
            self.note_dashboard_seconds(time.perf_counter() - start)

    @staticmethod
    def note_dashboard_seconds(seconds: float) -> None:
        """Record how long the end-of-fit dashboard took (the estimate of :meth:`dashboard_due`)."""
        if math.isfinite(seconds) and seconds > 0:
            _DASHBOARD_SECONDS[0] = float(seconds)

    def fit_summary(self) -> str | None:
        """The end-of-fit line: what the relative change says, and how many measures left their noise floor."""
        try:
            return summarize_fit(self.history_state())
        except Exception:  # a summary line must never fail a finished fit
            return None

    def noise_floor_summary(self) -> str | None:
        """One line per run: which measures sit inside their noise floor at the last computed point."""
        try:
            return summarize_noise_floors(self.history_state())
        except Exception:  # a summary line must never fail a finished fit
            return None

    def record(self, key: str, value: float, point: int = -1) -> None:
        """Record ``value`` under ``key`` against a sample point already taken (default: the last one).

        For decisions made from a point after :meth:`sample` closed it (e.g. the frozen-layer count of
        :class:`~lightning_dynamics.decisions.freezing.LayerFreezer`): the value goes into the history file's ``logged``
        series (NaN at the points where nothing was recorded), so reports can tell where it changed. Unlike the
        ``logged`` argument of :meth:`sample`, the key may be under this tracker's prefix.

        Args:
            key: the series name, e.g. ``"dynamics/frozen_layers"``.
            value: a real number (NaN allowed: "nothing recorded here").
            point: the sample point's index (negative counts from the end).

        Raises:
            ValueError: an empty key, a non-real value, or a point that was not taken.

        Example:
            >>> tracker = DynamicsTracker()
            >>> tracker.record("dynamics/frozen_layers", 1.0)
            Traceback (most recent call last):
                ...
            ValueError: DynamicsTracker.record: point -1 is not a sample point taken so far (0 taken).
        """
        if not isinstance(key, str) or not key:
            raise ValueError(f"DynamicsTracker.record: `key` must be a non-empty string, got {key!r}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"DynamicsTracker.record: `value` must be a real number, got {value!r}.")
        length = self.n_samples
        if isinstance(point, bool) or not isinstance(point, int) or not -length <= point < length:
            raise ValueError(
                f"DynamicsTracker.record: point {point!r} is not a sample point taken so far ({length} taken)."
            )
        series = self.logged.setdefault(key, [])
        series.extend([math.nan] * (length - len(series)))
        series[point] = float(value)

    def _record_logged(self, logged: Mapping[str, float | Tensor]) -> None:
        length = self.n_samples
        for key, value in logged.items():
            if key.startswith(f"{self.prefix}/"):
                continue  # our own values are in `metrics`
            series = self._logged.setdefault(key, [math.nan] * (length - 1))
            if isinstance(value, Tensor):  # kept on its device: read with the next batch of points, no sync now
                self._logged_pending.append((series, len(series), value.detach().reshape(())))
                series.append(math.nan)
            else:
                series.append(float(value))
        for series in self._logged.values():
            if len(series) < length:
                series.append(math.nan)

    def _run_probe(self, probe: Callable[[], Any] | None, probe_context: Callable[[], Any] | None) -> None:
        assert self._capture is not None
        if self._probe_failed or probe is None:
            return
        model = self._model
        was_training = model.training if model is not None else False
        if model is not None:
            model.eval()
        self._probing = True
        try:
            with (
                self._capture,
                side_forward(self._capture),  # recorded here, by no other tracker
                torch.no_grad(),
                probe_context() if probe_context is not None else nullcontext(),
            ):
                probe()
        except Exception as error:
            self._probe_failed = True
            if self._accumulator is not None:
                self._accumulator.reset()
            self.warn(
                f"DynamicsTracker[{self.prefix}]: the probe forward failed ({error!r}); the probe is disabled, "
                "its sample points are missing from now on, training goes on."
            )
        finally:
            self._probing = False
            if model is not None:
                model.train(was_training)

    # ------------------------------------------------------------------ files

    def claim_history_path(self, directory: str | Path) -> Path:
        """Claim this run's history file in ``directory`` (``<prefix>_history.pt``, or ``-v1``, ... if taken):
        an exclusive create, so runs sharing a directory never overwrite each other, whatever the timing."""
        self.history_path = claim_path(directory, HISTORY_FILENAME.format(prefix=self.prefix))
        return self.history_path

    def history_state(self) -> dict[str, Any]:
        """The history file's content: values, layers, epochs, steps, segments, every measure and logged series."""
        if self.history is None:
            raise RuntimeError("DynamicsTracker has no history before attach(model).")
        state = self.history.state_dict()
        length = self.history.length
        state["prefix"] = self.prefix
        state["config"] = self.config.to_dict()
        state["metrics"] = {key: nan_padded(values, length) for key, values in self.metrics.items()}
        state["logged"] = {key: nan_padded(values, length) for key, values in self.logged.items()}
        if self.statistics is not None:
            state["layer_stats"] = {
                stat: {
                    "layers": entry["layers"],
                    "values": torch.tensor(entry["values"], dtype=torch.float32).reshape(len(entry["layers"]), length),
                }
                for stat, entry in self.statistics.series().items()
            }
        return state

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the history file (atomically, with its checksum); its path, or ``None`` if it failed.

        Saving never raises: a full disk or a read-only directory must not turn a finished run into a failure.
        The first failure warns with the path and the cause; later ones (periodic flushes) stay quiet until a
        save succeeds again.
        """
        target = Path(path) if path is not None else self.history_path
        if target is None or self.history is None:
            return None
        try:
            written = save_history(self.history_state(), target)
        except Exception as error:
            if not self._save_failed:
                self.warn(
                    f"DynamicsTracker[{self.prefix}]: {error}"
                    if isinstance(error, HistorySaveError)
                    else f"DynamicsTracker[{self.prefix}]: could not save the history to {target}: {error!r}."
                )
                self.warn(f"DynamicsTracker[{self.prefix}]: further save failures are retried quietly.")
            self._save_failed = True
            return None
        if self._save_failed:
            self.info(f"DynamicsTracker[{self.prefix}]: the history was saved to {written} after earlier failures.")
        self._save_failed = False
        return written

    @staticmethod
    def load(path: str | Path) -> dict[str, Any]:
        """Read a history file (see :func:`lightning_dynamics.capture.load_history`)."""
        return load_history(path)

    # ------------------------------------------------------------------ state

    def state_dict(self, include_probe_batch: bool = False) -> dict[str, Any]:
        """Everything needed to resume: history, partial sums, values, schedule, and the settings they depend on."""
        if self.history is None or self._accumulator is None:
            return {} if self._pending_state is None else dict(self._pending_state)
        state = {
            "version": STATE_VERSION,
            "prefix": self.prefix,
            "config": self.config.to_dict(),
            "history": self.history.state_dict(),
            "accumulator": self._accumulator.state_dict(),
            "metrics": {key: list(values) for key, values in self.metrics.items()},
            "logged": {key: list(values) for key, values in self.logged.items()},
            "computed": list(self.computed),
            "defined": sorted(self.defined),
            "schedule": self.schedule.state_dict(),
        }
        if self.statistics is not None:
            state["layer_stats"] = self.statistics.state_dict()
        if include_probe_batch and self.probe_batch is not None:
            state["probe_batch"] = _to_device(self.probe_batch, torch.device("cpu"))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; applied at :meth:`attach` if the layers are not known yet.

        Every field is checked before anything changes: a ValueError naming the field, raised here, never later.
        """
        check_state(state, {}, f"DynamicsTracker[{self.prefix}]'s state")
        if not state:
            return
        if self.history is None:
            self._pending_state = dict(state)
        else:
            self._restore(state)

    def training_position(self, epoch: int, step: int, resumed: bool) -> None:
        """Where the trainer starts this fit, once its own state is restored (Lightning: ``on_train_start``).

        Resuming from a checkpoint (``resumed``): a restored history whose last fit ran past this epoch or step
        is refused (the state was saved later in training, or by another run). A fit that is not a resume (a new
        Trainer, or a state loaded by hand) continues the history in a new segment, whatever its epochs.
        """
        if self.history is None:
            return
        if resumed:
            self.history.check_not_ahead(epoch, step, where=f"DynamicsTracker[{self.prefix}]'s restored history")
        else:
            self.history.start_segment()

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.history is not None and self._accumulator is not None
        owner = f"DynamicsTracker[{self.prefix}]"
        version = state.get("version")
        if version not in (2, STATE_VERSION):
            raise ValueError(
                f"{owner} cannot resume from state version {version!r} (this version writes {STATE_VERSION}). "
                "Resume without the callback state to start a fresh history."
            )
        where = f"{owner}'s checkpoint"
        # The history and the accumulator check their own fields (on copies, below).
        checked = check_state(
            state, {"history": ANY_DICT, "accumulator": ANY_DICT, "config": Default(ANY_DICT, {})}, where
        )
        saved_config = checked["config"]
        current = self.config.to_dict()
        differ = {
            k: (saved_config[k], current[k])
            for k in current
            if k in saved_config and saved_config[k] != current[k] and k != "history_window"
        }
        if differ:
            raise ValueError(
                f"{owner}: the checkpoint was recorded with other settings "
                + ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
                + ". Use the same settings (one history cannot mix them), or resume without the callback's state."
            )
        # Check everything before changing anything: a failed restore leaves the tracker as it was.
        history = SummaryHistory(self.history.layer_names, self.config.summary, device=self.history.device)
        history.load_state_dict(state["history"])  # validates every field, the layers and the summary
        accumulator = SummaryAccumulator(len(history.layer_names), self.config.summary, self.history.device)
        accumulator.load_state_dict(state["accumulator"])  # validates every field and shape
        length = history.length
        metrics, logged, computed, defined, saved_schedule = check_state(
            state,
            {
                "metrics": Default(DictOf(Series(length)), {}),
                "logged": Default(DictOf(Series(length)), {}),
                "computed": Default(ListOf(Bool(), length=length, each="sample point"), [True] * length),
                "defined": Default(ListOf(Str()), []),
                "schedule": Default(ANY_DICT, {}),
            },
            where,
        ).values()
        unknown = sorted(set(metrics) - set(self._all_known_keys()))
        if unknown:
            raise ValueError(f"{owner}: the checkpoint has unknown measures {unknown}.")
        schedule = SampleSchedule(self.config.every_n_steps, self.config.points_per_epoch)
        schedule.load_state_dict(saved_schedule, owner)
        if self.statistics is not None:  # checks every field before it changes anything
            if isinstance(state.get("layer_stats"), dict):
                self.statistics.load_state_dict(
                    state["layer_stats"], length, where=f"{owner}: the checkpoint's `layer_stats`"
                )
            else:  # a state saved without them: their points are missing
                self.statistics.clear_series()
                self.statistics.pad_to(length)
        self.history.load_state_dict(state["history"])  # valid: checked on the copies above
        self._accumulator.load_state_dict(state["accumulator"])
        self.schedule = schedule
        self.metrics = {key: [float(v) for v in metrics.get(key, [math.nan] * length)] for key in self.keys}
        self.logged = {key: [float(v) for v in values] for key, values in logged.items()}
        self.computed = list(computed)
        self.defined = set(defined)
        if self.source == "probe" and state.get("probe_batch") is not None and self.probe_batch is None:
            self.probe_batch = state["probe_batch"]

    @staticmethod
    def _all_known_keys() -> tuple[str, ...]:
        return tuple(key for name, m in MEASURES.items() for key in (name, *m.null_keys))


def _detached_copy(batch: Any) -> Any:
    if isinstance(batch, Tensor):
        return batch.detach().clone()
    if isinstance(batch, (tuple, list)):
        return type(batch)(_detached_copy(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _detached_copy(v) for k, v in batch.items()}
    return batch


def _to_device(batch: Any, device: torch.device | None) -> Any:
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch
