"""DynamicsMonitor: the Lightning callback (hooks -> summaries -> history -> measures -> logs)."""

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

from lightning_dynamics.capture import (
    ActivationCapture,
    SummaryAccumulator,
    SummaryHistory,
    save_history,
    select_layers,
    summarize,
)
from lightning_dynamics.capture.layer_selection import LayerSelection, is_compiled_module
from lightning_dynamics.functional import dynamics_measures, min_points, stability_index
from lightning_dynamics.functional.detrend import DETREND_CHOICES
from lightning_dynamics.functional.hilbert import PAD_CHOICES

MEASURE_KEYS = (
    "nonfinite",
    "integration",
    "integration_alpha",
    "metastability",
    "synchrony",
    "phase_integration",
    "n_excluded",
    "stability_index",
    "stability_volatility",
)
HISTORY_FILENAME = "{prefix}_history.pt"
MIN_WINDOW = 16
STATE_VERSION = 1


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
    under ``dynamics/``: ``integration``, ``integration_alpha``, ``metastability``, ``synchrony``,
    ``phase_integration``, ``n_excluded``, ``stability_index`` and ``stability_volatility``. A key is logged
    only once there are enough sample points to define it (the first sample point says how many).

    Method and formulas: La Quang, Ugail, Howard et al., arXiv:2604.09716; METHOD.md.

    Args:
        layers: ``"auto"`` (convolutions, linear layers and attention blocks), ``"all"`` (every leaf
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
        weights: ``(w_I, w_M)`` of the stability index.
        detrend: preprocessing of the series (``"diff"``, ``"linear"``, ``"mean"`` or ``None``).
        pad: Hilbert edge handling (``"reflect"`` or ``None``).
        h_opt, sigma: the integration map's optimum and width.
        compute_phase_integration: also compute ``phase_integration`` (O(L^2) per sample point).
        history_window: compute the whole-history measures (``integration``, ``metastability``,
            ``synchrony``, ``phase_integration``) over the last this many sample points only; ``None`` (default)
            for the whole history. Bounds the cost of a sample point in long ``every_n_steps`` runs, which
            otherwise grows with the history (about 0.05 s for 64 layers x 10000 points on 2 CPU cores); the
            stored history is kept whole.
        prog_bar: show the logged keys in the progress bar.
        prefix: logging namespace: keys are ``<prefix>/<measure>``; give two monitors different prefixes.
        save_history: write the history to ``<log_dir>/<prefix>_history.pt`` at the end of fit (and on an
            exception).
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
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if summary not in ("rms", "mean", "abs_mean", "std"):
            raise ValueError(f"`summary` must be one of 'rms', 'mean', 'abs_mean', 'std', got {summary!r}.")
        if source not in ("train", "probe"):
            raise ValueError(f"`source` must be 'train' or 'probe', got {source!r}.")
        if every_n_steps is not None and (int(every_n_steps) != every_n_steps or every_n_steps < 1):
            raise ValueError(f"`every_n_steps` must be a positive integer or None, got {every_n_steps!r}.")
        if max_layers is not None and (int(max_layers) != max_layers or max_layers < 1):
            raise ValueError(f"`max_layers` must be a positive integer or None, got {max_layers!r}.")
        if int(window) != window or window < MIN_WINDOW:
            raise ValueError(
                f"`window` must be an integer >= {MIN_WINDOW} (DFA needs at least 3 scales of >= 2 segments), "
                f"got {window!r}."
            )
        if int(volatility_window) != volatility_window or volatility_window < 2:
            raise ValueError(f"`volatility_window` must be an integer >= 2, got {volatility_window!r}.")
        if history_window is not None and (int(history_window) != history_window or history_window < MIN_WINDOW):
            raise ValueError(
                f"`history_window` must be None or an integer >= {MIN_WINDOW} (the stability window's minimum), "
                f"got {history_window!r}."
            )
        if len(weights) != 2 or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"`weights` must be two non-negative numbers with a positive sum, got {weights!r}.")
        if detrend not in DETREND_CHOICES:
            raise ValueError(f"`detrend` must be one of {DETREND_CHOICES}, got {detrend!r}.")
        if pad not in PAD_CHOICES:
            raise ValueError(f"`pad` must be one of {PAD_CHOICES}, got {pad!r}.")
        if sigma <= 0:
            raise ValueError(f"`sigma` must be > 0, got {sigma!r}.")
        if isinstance(layers, (list, tuple)) and len(layers) == 0:
            raise ValueError("`layers` must not be an empty list; use 'auto' or name at least one module.")
        self.layers = layers
        self.max_layers = max_layers
        self.summary = summary
        self.every_n_steps = every_n_steps
        self.source = source
        self.probe_batch = probe_batch
        self.probe_forward = probe_forward or default_probe_forward
        self.window = int(window)
        self.volatility_window = int(volatility_window)
        self.weights = (float(weights[0]), float(weights[1]))
        self.detrend = detrend
        self.pad = pad
        self.h_opt = h_opt
        self.sigma = sigma
        self.compute_phase_integration = compute_phase_integration
        self.history_window = None if history_window is None else int(history_window)
        self.prog_bar = prog_bar
        if not prefix or "/" in prefix:
            raise ValueError(f"`prefix` must be a non-empty name without '/', got {prefix!r}.")
        self.prefix = prefix
        self.save_history = save_history
        self.verbose = verbose

        self.history: SummaryHistory | None = None
        self.metrics: dict[str, list[float]] = {key: [] for key in MEASURE_KEYS}
        self.history_path: Path | None = None
        self._accumulator: SummaryAccumulator | None = None
        self._capture: ActivationCapture | None = None
        self._pending_state: dict[str, Any] | None = None
        self._last_sample_step = -1
        self._announced = False
        self._warned: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ Lightning plumbing

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            layers=repr(self.layers), summary=self.summary, source=self.source, prefix=self.prefix
        )

    @property
    def layer_names(self) -> list[str]:
        return [] if self.history is None else list(self.history.layer_names)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After strategy setup and configure_model: the modules are the final ones, on their device.
        layers = select_layers(pl_module, self.layers, self.max_layers)
        names = [name for name, _ in layers]
        self._accumulator = SummaryAccumulator(len(layers), self.summary, pl_module.device)
        self._capture = ActivationCapture(layers, self._accumulator)
        self.history = SummaryHistory(names, self.summary, device=pl_module.device)
        self.metrics = {key: [] for key in MEASURE_KEYS}
        if self.source == "train":
            self._capture.attach()
            self._recompile_if_compiled(trainer, pl_module)
        if self._pending_state is not None:
            self._restore(self._pending_state)
            self._pending_state = None
        # trainer.log_dir is a collective under DDP: resolve it here, where every rank passes, not at the end.
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        self.history_path = log_dir / HISTORY_FILENAME.format(prefix=self.prefix)
        log_every = int(getattr(trainer, "log_every_n_steps", 1))  # set by Trainer.__init__, untyped
        if self.every_n_steps and trainer.loggers and self.every_n_steps % log_every != 0:
            rank_zero_warn(
                f"DynamicsMonitor(every_n_steps={self.every_n_steps}) logs at steps that "
                f"Trainer(log_every_n_steps={log_every}) does not write to the loggers; the values "
                "still reach callback_metrics and the saved history. Set log_every_n_steps to a divisor of "
                f"{self.every_n_steps} to see them in the logger."
            )
        if self.verbose:
            rank_zero_info(
                f"DynamicsMonitor: {len(names)} layers ({names[0]} ... {names[-1]}), summary={self.summary!r}, "
                f"source={self.source!r}, sampling every "
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

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.source == "train" and self._capture is not None:
            self._capture.enabled = True
        elif self.source == "probe" and self.probe_batch is None:
            self.probe_batch = _detached_copy(batch)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._capture is not None and self.source == "train":
            self._capture.enabled = False
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_sample_step:
            self._last_sample_step = step
            self._sample(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.every_n_steps:
            self._sample(trainer, pl_module, on_step=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_history(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()
        try:
            self._write_history(trainer)
        except Exception as error:  # never mask the user's exception
            rank_zero_warn(f"DynamicsMonitor could not save its history after an exception: {error!r}")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()

    def state_dict(self) -> dict[str, Any]:
        if self.history is None:
            return {} if self._pending_state is None else dict(self._pending_state)
        assert self._accumulator is not None
        return {
            "version": STATE_VERSION,
            "history": self.history.state_dict(),
            "accumulator": self._accumulator.state_dict(),
            "metrics": {key: list(values) for key, values in self.metrics.items()},
            "last_sample_step": self._last_sample_step,
            "probe_batch": _to_cpu(self.probe_batch) if self.source == "probe" else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.history is None:
            self._pending_state = dict(state_dict)  # applied in on_fit_start, once the layers are known
        else:
            self._restore(state_dict)

    # ------------------------------------------------------------------ the data flow

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.history is not None and self._accumulator is not None
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"DynamicsMonitor cannot resume from callback state version {state.get('version')!r} "
                f"(this version writes {STATE_VERSION}). Resume without the callback state to start a fresh history."
            )
        self.history.load_state_dict(state["history"])
        self._accumulator.load_state_dict(state["accumulator"])
        self.metrics = {key: [float(v) for v in state["metrics"].get(key, [])] for key in MEASURE_KEYS}
        self._last_sample_step = int(state["last_sample_step"])
        if self.source == "probe" and state.get("probe_batch") is not None and self.probe_batch is None:
            self.probe_batch = state["probe_batch"]

    def _sample(self, trainer: pl.Trainer, pl_module: pl.LightningModule, on_step: bool) -> None:
        if self.history is None or self._accumulator is None or trainer.sanity_checking:
            return
        if self.source == "probe":
            self._run_probe(trainer, pl_module)
        packed = trainer.strategy.reduce(self._accumulator.packed(), reduce_op="sum")  # one collective
        self._accumulator.reset()
        column = summarize(packed, self.summary)
        self.history.append(column, trainer.current_epoch, trainer.global_step)
        try:
            values = self._compute(column, packed[:, -1])
        except Exception as error:  # a monitor must never break the training it watches
            rank_zero_warn(
                f"DynamicsMonitor: computing the measures failed at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step} ({error!r}); the sample point is kept in the history, its measures are "
                "skipped, training goes on."
            )
            values = {key: math.nan for key in MEASURE_KEYS}
        self._announce_once()
        for key, value in values.items():
            self.metrics[key].append(value)
            if math.isnan(value):
                continue
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

    def _compute(self, column: Tensor, counts: Tensor) -> dict[str, float]:
        """Measures of the history after a new ``column``; one host synchronisation in all."""
        assert self.history is not None
        x = self.history.values
        n_layers = x.shape[0]
        nan = torch.tensor(float("nan"), device=x.device)
        out: dict[str, Tensor] = {key: nan for key in MEASURE_KEYS}
        missing = ~torch.isfinite(column) & (counts > 0)  # called, but NaN/Inf activations
        out["nonfinite"] = missing.sum().to(x.dtype)
        valid = torch.ones(n_layers, dtype=torch.bool, device=x.device)
        if x.shape[-1] >= min(min_points(self.detrend).values()):
            measures = dynamics_measures(
                x if self.history_window is None else x[:, -self.history_window :],
                detrend=self.detrend,
                pad=self.pad,
                h_opt=self.h_opt,
                sigma=self.sigma,
                include_phase_integration=self.compute_phase_integration,
            )
            for key in ("integration", "integration_alpha", "metastability", "synchrony", "phase_integration"):
                out[key] = getattr(measures, key)
            out["n_excluded"] = measures.n_excluded.to(x.dtype)
            valid = measures.valid
        if x.shape[-1] >= self.window:
            out["stability_index"] = stability_index(
                x[:, -self.window :],
                window=self.window,
                weights=self.weights,
                detrend=self.detrend,
                pad=self.pad,
                h_opt=self.h_opt,
                sigma=self.sigma,
            )[-1]
        keys = list(out)
        scalars = torch.stack([out[k].to(x.dtype) for k in keys])
        flat = torch.cat([scalars, missing.to(x.dtype), (counts == 0).to(x.dtype), (~valid).to(x.dtype)]).tolist()
        values = dict(zip(keys, flat[: len(keys)], strict=True))
        layer_flags = flat[len(keys) :]
        self._warn_layers(layer_flags[:n_layers], layer_flags[n_layers : 2 * n_layers], layer_flags[2 * n_layers :])
        recent = [*self.metrics["stability_index"], values["stability_index"]][-self.volatility_window :]
        if len(recent) == self.volatility_window and not any(math.isnan(v) for v in recent):
            mean = sum(recent) / len(recent)
            values["stability_volatility"] = math.sqrt(sum((v - mean) ** 2 for v in recent) / len(recent))
        return values

    def _warn_layers(self, missing: list[float], never_called: list[float], excluded: list[float]) -> None:
        """Name each layer once per kind of trouble; one warning per kind and sample point lists them all."""
        assert self.history is not None
        kinds = {
            "never_called": "were not called (or produced no floating-point tensor) in a sample interval; "
            "those points are missing",
            "nonfinite": "produced NaN/Inf activations in a sample interval; those points are missing "
            "(dynamics/nonfinite)",
            "excluded": "are excluded from the measures (zero variance, or more than 10% missing points; "
            "counted in dynamics/n_excluded)",
        }
        new: dict[str, list[str]] = {kind: [] for kind in kinds}
        for index, name in enumerate(self.history.layer_names):
            kind = (
                "never_called"
                if never_called[index]
                else "nonfinite"
                if missing[index]
                else "excluded"
                if excluded[index]
                else None
            )
            if kind is not None and (name, kind) not in self._warned:
                self._warned.add((name, kind))
                new[kind].append(name)
        for kind, names in new.items():
            if names:
                shown = ", ".join(repr(n) for n in names[:20]) + (
                    f" and {len(names) - 20} more" if len(names) > 20 else ""
                )
                rank_zero_warn(f"DynamicsMonitor: layers {shown} {kinds[kind]}. Said once per layer.")

    def points_needed(self) -> dict[str, int]:
        """Sample points before each key is first logged."""
        needed = {key: n for key, n in min_points(self.detrend).items()}
        needed["stability_index"] = self.window
        needed["stability_volatility"] = self.window + self.volatility_window - 1
        return needed

    def _announce_once(self) -> None:
        if self._announced or not self.verbose:
            return
        self._announced = True
        needed = self.points_needed()
        unit = f"{self.every_n_steps}-step sample points" if self.every_n_steps else "epochs"
        rank_zero_info(
            "DynamicsMonitor: metrics appear once enough sample points exist: "
            + ", ".join(f"{key} after {n}" for key, n in needed.items())
            + f" {unit} (n_excluded with the first). Nothing is logged before."
        )

    def _run_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._capture is not None
        if self.probe_batch is None:
            rank_zero_warn("DynamicsMonitor(source='probe') has no probe batch yet; this sample point is empty.")
            return
        batch = move_data_to_device(self.probe_batch, pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with (
                self._capture,
                self._capture.capturing(),
                torch.no_grad(),
                trainer.precision_plugin.forward_context(),
            ):
                self._recompile_if_compiled(trainer, pl_module)  # the probe's hooks exist only now
                self.probe_forward(pl_module, batch)
        finally:
            pl_module.train(was_training)

    def _remove_hooks(self) -> None:
        if self._capture is not None:
            self._capture.remove()

    def _write_history(self, trainer: pl.Trainer) -> None:
        if not self.save_history or self.history is None or not trainer.is_global_zero:
            return
        state = self.history.state_dict()
        state["metrics"] = {key: torch.tensor(values, dtype=torch.float64) for key, values in self.metrics.items()}
        assert self.history_path is not None
        save_history(state, self.history_path)
        if self.verbose:
            rank_zero_info(
                f"DynamicsMonitor: history of {self.history.length} sample points saved to {self.history_path}"
            )


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
