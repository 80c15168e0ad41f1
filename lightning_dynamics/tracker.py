"""DynamicsTracker: the framework-neutral core of lightning_dynamics (no Lightning import).

One object owns the whole data flow of a run (docs/method.md sections 0-6):
hooks -> per-layer summaries (on the model's device) -> the ``[L, T]`` history -> the measures -> the series of
logged values and the stability ring -> the history file. The Lightning callback
(:class:`~lightning_dynamics.DynamicsMonitor`), the Fabric callback
(:class:`~lightning_dynamics.DynamicsFabricMonitor`) and a plain PyTorch loop drive the same tracker, so they
compute identical histories and values:

.. code-block:: python

    tracker = DynamicsTracker().attach(model)
    for epoch in range(epochs):
        for x, y in loader:
            with tracker.capturing():  # record the layers' outputs of training forwards only
                loss = loss_fn(model(x), y)
            ...
        values = tracker.sample(epoch=epoch, step=step)  # dict of measures (NaN where not defined yet)
    tracker.save("dynamics_history.pt")
    tracker.detach()
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamics.capture import (
    ActivationCapture,
    SummaryAccumulator,
    SummaryHistory,
    load_history,
    save_history,
    select_layers,
)
from lightning_dynamics.capture.history import nan_padded, versioned_path
from lightning_dynamics.capture.layer_selection import LayerSelection
from lightning_dynamics.config import DynamicsConfig, check_int, check_layers
from lightning_dynamics.functional import (
    complexity_min_points,
    dynamics_measures,
    history_complexity,
    integration,
    metastability,
    stability_index,
    surrogate_test,
)

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
# Opt-in measures (docs/method.md sections 7 and 9), computed every n sample points when asked for.
COMPLEXITY_KEYS = ("higuchi_fd", "katz_fd", "mfdfa_width")
SURROGATE_KEYS = ("metastability_z", "integration_z")
HISTORY_FILENAME = "{prefix}_history.pt"
STATE_VERSION = 2

_logger = logging.getLogger("lightning_dynamics")


def _default_warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


class DynamicsTracker:
    r"""Capture layer summaries of a model and compute the dynamics measures at each sample point.

    Framework-neutral: no Lightning import. The adapters decide *when* to sample and how to reduce across
    processes; the tracker decides *what* is recorded and computed.

    Args:
        layers: ``"auto"`` (convolutions, linear layers, recurrent and attention blocks), ``"all"`` (every leaf),
            a list of module names, fnmatch patterns, module types or predicates, or one predicate
            ``(name, module) -> bool``.
        max_layers: cap on the number of layers, kept evenly spread through depth; ``None`` for no cap.
        config: the measures' settings (:class:`~lightning_dynamics.DynamicsConfig`).
        prefix: namespace of the values (``<prefix>/<measure>`` when logged) and of the history file name.
        source: ``"train"`` (forward calls inside :meth:`capturing`) or ``"probe"`` (a fixed batch at each sample
            point, see :meth:`sample`).
        save_every_n_samples: also write the history file every this many sample points (so a killed run
            loses at most that many); ``None``: only when :meth:`save` is called.
        complexity_every_n_samples: every this many sample points, also compute the layers' mean Higuchi and
            Katz fractal dimensions and MF-DFA width of the history (:func:`~lightning_dynamics.functional.
            history_complexity`; about 5-10 ms at 64 layers x 1000 points on one CPU thread). NaN in between.
        surrogates_every_n_samples: every this many sample points, also the surrogate z-scores of metastability
            and integration (20 phase-randomised surrogates; about 20x the cost of those measures). NaN in between.
        warn, info: where warnings and information go (the Lightning adapter passes its rank-zero functions).

    Attributes:
        history: the :class:`~lightning_dynamics.capture.SummaryHistory` (``None`` before :meth:`attach`).
        metrics: measure -> one value per sample point (NaN where undefined).
        logged: other scalars recorded with each sample point (e.g. ``val_acc``), NaN where absent.
        history_path: where :meth:`save` writes by default (set by :meth:`claim_history_path`).
    """

    def __init__(
        self,
        layers: LayerSelection = "auto",
        max_layers: int | None = 64,
        config: DynamicsConfig | None = None,
        prefix: str = "dynamics",
        source: str = "train",
        save_every_n_samples: int | None = None,
        complexity_every_n_samples: int | None = None,
        surrogates_every_n_samples: int | None = None,
        warn: Callable[[str], None] | None = None,
        info: Callable[[str], None] | None = None,
    ) -> None:
        self.layers = check_layers(layers)
        self.max_layers = check_int("max_layers", max_layers, 1, allow_none=True)
        self.config = config if config is not None else DynamicsConfig()
        if not isinstance(self.config, DynamicsConfig):
            raise ValueError(f"`config` must be a DynamicsConfig, got {type(self.config).__name__}.")
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ValueError(f"`prefix` must be a non-empty name without '/', got {prefix!r}.")
        if source not in ("train", "probe"):
            raise ValueError(f"`source` must be 'train' or 'probe', got {source!r}.")
        self.prefix = prefix
        self.source = source
        self.save_every_n_samples = check_int("save_every_n_samples", save_every_n_samples, 1, allow_none=True)
        self.complexity_every_n_samples = check_int(
            "complexity_every_n_samples", complexity_every_n_samples, 1, allow_none=True
        )
        self.surrogates_every_n_samples = check_int(
            "surrogates_every_n_samples", surrogates_every_n_samples, 1, allow_none=True
        )
        self.keys = (
            MEASURE_KEYS
            + (COMPLEXITY_KEYS if self.complexity_every_n_samples else ())
            + (SURROGATE_KEYS if self.surrogates_every_n_samples else ())
        )
        self.warn = warn or _default_warn
        self.info = info or _logger.info

        self.history: SummaryHistory | None = None
        self.metrics: dict[str, list[float]] = {key: [] for key in self.keys}
        self.logged: dict[str, list[float]] = {}
        self.history_path: Path | None = None
        self.last_reason: str | None = None
        self._accumulator: SummaryAccumulator | None = None
        self._capture: ActivationCapture | None = None
        self._modules: list[nn.Module] = []
        self._model: nn.Module | None = None
        self._gate_handle: Any = None
        self._probing = False
        self._pending_state: dict[str, Any] | None = None
        self._warned: set[tuple[str, str]] = set()
        self._probe_failed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def layer_names(self) -> list[str]:
        return [] if self.history is None else list(self.history.layer_names)

    @property
    def n_samples(self) -> int:
        return 0 if self.history is None else self.history.length

    @property
    def attached(self) -> bool:
        return self._capture is not None and self._capture.attached

    def attach(
        self, model: nn.Module, device: torch.device | str | None = None, capture_training_forwards: bool = True
    ) -> DynamicsTracker:
        """Select the layers of ``model`` and register the hooks (for ``source="train"``).

        With ``capture_training_forwards`` (plain loops, Fabric), every call of ``model`` in training mode is
        recorded and calls in eval mode (validation) are not; without it (the Lightning adapter), recording is
        switched on and off explicitly (:attr:`capture_enabled`, :meth:`capturing`).

        Attaching again to the same modules (e.g. a second ``fit`` of the same model) continues the history;
        attaching to other modules starts a fresh one and says so. A pending :meth:`load_state_dict` is
        applied here, once the layers are known.
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
            self._warned = set()
        assert self._accumulator is not None
        self._modules = modules
        self._model = model
        self._capture = ActivationCapture(layers, self._accumulator)
        if self.source == "train":
            self._capture.attach()
            if capture_training_forwards:
                self._gate_handle = model.register_forward_pre_hook(self._gate)
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self._restore(state)
        return self

    def detach(self) -> None:
        """Remove every hook (idempotent). The history and values stay."""
        if self._capture is not None:
            self._capture.remove()
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

    # ------------------------------------------------------------------ capture control

    @property
    def capture_enabled(self) -> bool:
        return self._capture is not None and self._capture.enabled

    @capture_enabled.setter
    def capture_enabled(self, value: bool) -> None:
        if self._capture is not None:
            self._capture.enabled = bool(value)

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Record the watched layers' outputs of the forward calls made inside this block."""
        if self._capture is None:
            raise RuntimeError("DynamicsTracker.capturing() before attach(model).")
        with self._capture.capturing():
            yield

    # ------------------------------------------------------------------ sample points

    def sample(
        self,
        epoch: int,
        step: int,
        reduce: Callable[[Tensor], Tensor] | None = None,
        logged: dict[str, float] | None = None,
        probe: Callable[[], Any] | None = None,
        probe_context: Callable[[], Any] | None = None,
    ) -> dict[str, float]:
        """Close the current sample interval: summaries -> history -> measures. Returns every measure.

        Args:
            epoch, step: where training is (recorded with the point).
            reduce: sums the packed per-layer sums across processes (one collective); ``None`` in one process.
            logged: other scalars to record with this point (e.g. validation accuracy), for reports.
            probe: for ``source="probe"``: runs the model on the probe batch (the tracker captures it in eval
                mode under ``no_grad``). A probe that raises is disabled with a warning; its points are missing.
            probe_context: extra context manager factory around the probe (e.g. a precision plugin's).

        Returns:
            ``{measure: value}`` for :data:`MEASURE_KEYS`, NaN where not defined (too few points, too few
            valid layers, or a failed computation, which warns).
        """
        if self.history is None or self._accumulator is None:
            raise RuntimeError("DynamicsTracker.sample() before attach(model).")
        if self.source == "probe" and probe is not None:
            self._run_probe(probe, probe_context)
        packed = self._accumulator.packed()
        if reduce is not None:
            packed = reduce(packed)
        column = self._accumulator.summarize(packed)  # identical on every rank; may update the std shift
        self._accumulator.reset()
        self.history.append(column, epoch, step)
        try:
            values = self._compute(column, packed[:, -1])
        except Exception as error:  # a monitor must never break the training it watches
            self.warn(
                f"DynamicsTracker[{self.prefix}]: computing the measures failed at epoch {epoch}, step {step} "
                f"({error!r}); the sample point is kept in the history, its measures are NaN, training goes on."
            )
            values = {key: math.nan for key in self.keys}
        values.update(self._optional_measures())
        for key in self.keys:
            self.metrics[key].append(values[key])
        self._record_logged(logged or {})
        if self.save_every_n_samples and self.history.length % self.save_every_n_samples == 0:
            self.save()
        return values

    def _optional_measures(self) -> dict[str, float]:
        """The opt-in complexity and surrogate measures at the sample points that ask for them."""
        assert self.history is not None
        out: dict[str, float] = {}
        n, x, cfg = self.history.length, self.history.values, self.config
        try:
            if self.complexity_every_n_samples:
                out.update(dict.fromkeys(COMPLEXITY_KEYS, math.nan))
                needed = max(complexity_min_points(cfg.detrend).values())
                if n % self.complexity_every_n_samples == 0 and n >= needed:
                    per_layer = history_complexity(x.double(), detrend=cfg.detrend)
                    out.update({k: float(v.nanmean()) for k, v in per_layer.items() if k in COMPLEXITY_KEYS})
            if self.surrogates_every_n_samples:
                out.update(dict.fromkeys(SURROGATE_KEYS, math.nan))
                needed = max(cfg.points_needed()["integration"], cfg.points_needed()["metastability"])
                if n % self.surrogates_every_n_samples == 0 and n >= needed:
                    meta = surrogate_test(metastability, x, n=20, detrend=cfg.detrend)
                    integ = surrogate_test(integration, x, n=20, detrend=cfg.detrend)
                    out["metastability_z"], out["integration_z"] = float(meta.z), float(integ.z)
        except Exception as error:  # opt-in extras never break training
            self.warn(f"DynamicsTracker[{self.prefix}]: an opt-in measure failed ({error!r}); it is NaN here.")
        return out

    def _record_logged(self, logged: dict[str, float]) -> None:
        length = self.n_samples
        for key, value in logged.items():
            if key.startswith(f"{self.prefix}/"):
                continue  # our own values are in `metrics`
            series = self.logged.setdefault(key, [math.nan] * (length - 1))
            series.append(float(value))
        for series in self.logged.values():
            if len(series) < length:
                series.append(math.nan)

    def _run_probe(self, probe: Callable[[], Any], probe_context: Callable[[], Any] | None) -> None:
        assert self._capture is not None
        if self._probe_failed:
            return
        model = self._model
        was_training = model.training if model is not None else False
        if model is not None:
            model.eval()
        self._probing = True
        try:
            with (
                self._capture,
                self._capture.capturing(),
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

    def _compute(self, column: Tensor, counts: Tensor) -> dict[str, float]:
        """Measures of the history after a new ``column``; one host synchronisation in all."""
        assert self.history is not None
        cfg = self.config
        x = self.history.values
        n_layers, n_points = x.shape
        missing = ~torch.isfinite(column) & (counts > 0)  # called, but NaN/Inf activations
        out, valid, reason = sample_point_measures(x, cfg)
        out["nonfinite"] = missing.sum().to(x.dtype)
        needed = cfg.points_needed()
        keys = list(out)
        scalars = torch.stack([out[k].to(x.dtype) for k in keys])
        # A NaN count: the layer's capture failed on some process (disabled there), so it is missing everywhere.
        flags_of = [missing, counts == 0, counts.isnan(), ~valid]
        flat = torch.cat([scalars, *(flag.to(x.dtype) for flag in flags_of)]).tolist()
        values = dict(zip(keys, flat[: len(keys)], strict=True))
        flags = flat[len(keys) :]
        self._warn_layers(*(flags[i * n_layers : (i + 1) * n_layers] for i in range(len(flags_of))))
        self._note_reason(reason, n_points, needed)
        recent = [*self.metrics["stability_index"], values["stability_index"]][-cfg.volatility_window :]
        if len(recent) == cfg.volatility_window and not any(math.isnan(v) for v in recent):
            mean = sum(recent) / len(recent)
            values["stability_volatility"] = math.sqrt(sum((v - mean) ** 2 for v in recent) / len(recent))
        return values

    def _note_reason(self, reason: str | None, n_points: int, needed: dict[str, int]) -> None:
        """Say once why measures that should be defined by now are NaN (e.g. fewer than 2 valid layers)."""
        self.last_reason = reason
        if reason is None or n_points < max(needed["metastability"], needed["integration"]):
            return  # too few points yet: announced once by the adapters, not a problem
        if ("reason", reason) not in self._warned:
            self._warned.add(("reason", reason))
            self.warn(f"DynamicsTracker[{self.prefix}]: some measures are undefined and not logged: {reason}.")

    def _warn_layers(
        self, missing: list[float], never_called: list[float], disabled: list[float], excluded: list[float]
    ) -> None:
        """Name each layer once per kind of trouble; one warning per kind and sample point lists them all."""
        assert self.history is not None
        kinds = {
            "never_called": "were not called (or produced no floating-point tensor) in a sample interval; "
            "those points are missing",
            "disabled": "were disabled after their capture failed on some process (see its warning); their points "
            "are missing on every process from then on",
            "nonfinite": f"produced NaN/Inf activations in a sample interval; those points are missing "
            f"({self.prefix}/nonfinite)",
            "excluded": f"are excluded from the measures (zero variance, or too many missing points; counted in "
            f"{self.prefix}/n_excluded)",
        }
        new: dict[str, list[str]] = {kind: [] for kind in kinds}
        for index, name in enumerate(self.history.layer_names):
            if disabled[index]:
                kind = "disabled"
            elif never_called[index]:
                kind = "never_called"
            elif missing[index]:
                kind = "nonfinite"
            elif excluded[index]:
                kind = "excluded"
            else:
                continue
            if (name, kind) not in self._warned:
                self._warned.add((name, kind))
                new[kind].append(name)
        for kind, names in new.items():
            if names:
                shown = ", ".join(repr(n) for n in names[:20]) + (
                    f" and {len(names) - 20} more" if len(names) > 20 else ""
                )
                self.warn(f"DynamicsTracker[{self.prefix}]: layers {shown} {kinds[kind]}. Said once per layer.")

    def points_needed(self) -> dict[str, int]:
        """Sample points before each measure is first defined."""
        return self.config.points_needed()

    # ------------------------------------------------------------------ files

    def claim_history_path(self, directory: str | Path, taken: set[Path] | None = None) -> Path:
        """Choose this run's history file in ``directory``: ``<prefix>_history.pt``, versioned (``-v1``, ...)
        if that name is already on disk, so runs and fits sharing a directory never overwrite each other."""
        self.history_path = versioned_path(Path(directory) / HISTORY_FILENAME.format(prefix=self.prefix), taken)
        return self.history_path

    def history_state(self) -> dict[str, Any]:
        """The history file's content: values, layers, epochs, steps, every measure and logged series, config."""
        if self.history is None:
            raise RuntimeError("DynamicsTracker has no history before attach(model).")
        state = self.history.state_dict()
        length = self.history.length
        state["prefix"] = self.prefix
        state["config"] = self.config.to_dict()
        state["metrics"] = {key: nan_padded(values, length) for key, values in self.metrics.items()}
        state["logged"] = {key: nan_padded(values, length) for key, values in self.logged.items()}
        return state

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the history file (atomically, with its checksum). A failure warns and returns ``None``.

        Saving never raises: a full disk or a read-only directory must not turn a finished run into a failure.
        """
        target = Path(path) if path is not None else self.history_path
        if target is None or self.history is None:
            return None
        try:
            return save_history(self.history_state(), target)
        except Exception as error:
            self.warn(f"DynamicsTracker[{self.prefix}]: could not save the history to {target}: {error!r}.")
            return None

    @staticmethod
    def load(path: str | Path) -> dict[str, Any]:
        """Read a history file (see :func:`lightning_dynamics.capture.load_history`)."""
        return load_history(path)

    # ------------------------------------------------------------------ state

    def state_dict(self, include_probe_batch: bool = False, probe_batch: Any = None) -> dict[str, Any]:
        """Everything needed to resume: history, partial sums, values, and the settings they depend on."""
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
        }
        if include_probe_batch and probe_batch is not None:
            state["probe_batch"] = probe_batch
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; applied at :meth:`attach` if the layers are not known yet."""
        if not state:
            return
        if self.history is None:
            self._pending_state = dict(state)
        else:
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.history is not None and self._accumulator is not None
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(
                f"DynamicsTracker[{self.prefix}] cannot resume from state version {version!r} (this version "
                f"writes {STATE_VERSION}). Resume without the callback state to start a fresh history."
            )
        saved_config = state.get("config", {})
        current = self.config.to_dict()
        differ = {
            k: (saved_config[k], current[k])
            for k in current
            if k in saved_config and saved_config[k] != current[k] and k != "history_window"
        }
        if differ:
            raise ValueError(
                f"DynamicsTracker[{self.prefix}]: the checkpoint was recorded with other settings "
                + ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
                + ". Use the same settings, or resume without the callback's state."
            )
        self.history.load_state_dict(state["history"])  # validates shapes, lengths, layers
        length = self.history.length
        accumulator = state["accumulator"]
        counts, sums = accumulator.get("counts"), accumulator.get("sums")
        expected_rows = len(self.history.layer_names)
        if (
            not isinstance(counts, list)
            or len(counts) != expected_rows
            or any(not isinstance(c, int) or c < 0 for c in counts)
        ):
            raise ValueError(
                f"DynamicsTracker[{self.prefix}]: the checkpoint's partial counts must be {expected_rows} "
                f"non-negative integers, got {counts!r}."
            )
        if not isinstance(sums, Tensor) or sums.shape != self._accumulator.sums.shape:
            shape = tuple(sums.shape) if isinstance(sums, Tensor) else type(sums).__name__
            raise ValueError(
                f"DynamicsTracker[{self.prefix}]: the checkpoint's partial sums have shape {shape}, expected "
                f"{tuple(self._accumulator.sums.shape)}."
            )
        self._accumulator.load_state_dict(accumulator)
        metrics = state.get("metrics", {})
        unknown = sorted(set(metrics) - set(MEASURE_KEYS) - set(COMPLEXITY_KEYS) - set(SURROGATE_KEYS))
        if unknown:
            raise ValueError(f"DynamicsTracker[{self.prefix}]: the checkpoint has unknown measures {unknown}.")
        for group, series_by_key in (("metrics", metrics), ("logged", state.get("logged", {}))):
            for key, series in series_by_key.items():
                if len(series) != length:
                    raise ValueError(
                        f"DynamicsTracker[{self.prefix}]: the checkpoint's {group}[{key!r}] has {len(series)} values "
                        f"for {length} sample points."
                    )
        self.metrics = {key: [float(v) for v in metrics.get(key, [math.nan] * length)] for key in self.keys}
        self.logged = {key: [float(v) for v in values] for key, values in state.get("logged", {}).items()}


def sample_point_measures(x: Tensor, config: DynamicsConfig) -> tuple[dict[str, Tensor], Tensor, str | None]:
    """What a sample point computes on a history ``x: [L, T]``, on its device, without a host sync.

    The whole-history measures (over the last ``history_window`` points if set) and the stability index of the
    last ``window`` points; NaN where too few points exist. The tracker adds ``nonfinite`` and the volatility
    (from the stored stability series); the benchmarks time exactly this.

    Returns:
        ``({measure: 0-d tensor}, valid layers [L], reason or None)``.
    """
    cfg = config
    n_layers, n_points = x.shape
    nan = torch.tensor(float("nan"), dtype=x.dtype, device=x.device)
    out: dict[str, Tensor] = {key: nan for key in MEASURE_KEYS}
    valid = torch.ones(n_layers, dtype=torch.bool, device=x.device)
    reason = None
    needed = cfg.points_needed()
    if n_points >= min(needed["metastability"], needed["integration"]):
        measures = dynamics_measures(
            x if cfg.history_window is None else x[:, -cfg.history_window :],
            detrend=cfg.detrend,
            pad=cfg.pad,
            h_opt=cfg.h_opt,
            sigma=cfg.sigma,
            include_phase_integration=cfg.compute_phase_integration,
        )
        for key in ("integration", "integration_alpha", "metastability", "synchrony", "phase_integration"):
            out[key] = getattr(measures, key)
        out["n_excluded"] = measures.n_excluded.to(x.dtype)
        valid = measures.valid
        reason = measures.reason
    if n_points >= cfg.window:
        out["stability_index"] = stability_index(
            x[:, -cfg.window :],
            window=cfg.window,
            weights=cfg.weights,
            detrend=cfg.detrend,
            pad=cfg.pad,
            h_opt=cfg.h_opt,
            sigma=cfg.sigma,
        )[-1]
    return out, valid, reason
