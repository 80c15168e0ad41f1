"""The typed options of a :class:`~lightning_dynamics.DynamicsTracker`, declared once for every adapter.

:func:`tracker_from_options` holds every option the adapters share (layer selection, the measures' settings of
:class:`~lightning_dynamics.DynamicsConfig`, sampling, probe, logging namespace, history file), with its type,
default and documentation. Each adapter's ``__init__`` takes only its own flags plus ``**options`` and calls
``tracker_from_options(..., **options)``: jsonargparse (``LightningCLI``, ``ArgumentParser.add_class_arguments``)
follows ``**options`` into this function, so a configuration file or command line offers and type-checks every
option here, under the adapter's name. A shared base class with ``super().__init__(**kwargs)`` does not resolve
under the ``lightning_dynamics.pytorch_lightning`` twins (their method resolution order puts another class next),
which is why the options are a function's parameters rather than a base class's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import nn

from lightning_dynamics.capture.layer_selection import LayerSelection
from lightning_dynamics.functional.stability import DEFAULT_VOLATILITY_WINDOW, DEFAULT_WINDOW
from lightning_dynamics.measures.config import (
    DEFAULT_COST_BUDGET,
    DEFAULT_H_OPT,
    DEFAULT_HISTORY_WINDOW,
    DEFAULT_NULL_SURROGATES,
    DEFAULT_POINTS_PER_EPOCH,
    DEFAULT_SIGMA,
    DEFAULT_WEIGHTS,
    DynamicsConfig,
)
from lightning_dynamics.tracking.tracker import DynamicsTracker


def tracker_from_options(
    *,
    layers: LayerSelection = "auto",
    max_layers: int | None = 64,
    summary: Literal["rms", "mean", "abs_mean", "std"] = "rms",
    every_n_steps: int | None = None,
    points_per_epoch: int = DEFAULT_POINTS_PER_EPOCH,
    source: Literal["train", "probe"] = "train",
    probe_batch: Any = None,
    probe_forward: Callable[[nn.Module, Any], Any] | None = None,
    window: int = DEFAULT_WINDOW,
    volatility_window: int = DEFAULT_VOLATILITY_WINDOW,
    weights: tuple[float, float] = DEFAULT_WEIGHTS,
    detrend: Literal["diff", "linear", "mean"] | None = "diff",
    pad: Literal["reflect"] | None = "reflect",
    h_opt: float = DEFAULT_H_OPT,
    sigma: float = DEFAULT_SIGMA,
    compute_phase_integration: bool = True,
    history_window: int | None = DEFAULT_HISTORY_WINDOW,
    null_surrogates: int | None = DEFAULT_NULL_SURROGATES,
    complexity_every_n_samples: int | None = None,
    cost_budget: float | None = DEFAULT_COST_BUDGET,
    prefix: str = "dynamics",
    save_history: bool = True,
    save_every_n_samples: int | None = None,
    verbose: bool = True,
    layer_stats: bool = False,
    warn: Callable[[str], None] | None = None,
    info: Callable[[str], None] | None = None,
) -> DynamicsTracker:
    """Build a :class:`~lightning_dynamics.DynamicsTracker` and its :class:`~lightning_dynamics.DynamicsConfig`.

    Every value is validated where it is stored (the tracker or the config): a bad one raises a ``ValueError`` that
    names the argument, the value given and what is allowed. Method and formulas: La Quang, Ugail, Howard et al.,
    arXiv:2604.09716; docs/method.md.

    Args:
        layers: ``"auto"``, ``"all"``, a list of module names, fnmatch patterns or module types, or a predicate.
        max_layers: cap on the number of layers, kept evenly spread through depth; ``None`` for no cap.
        summary: ``"rms"``, ``"mean"``, ``"abs_mean"`` or ``"std"`` of each layer's outputs per interval.
        every_n_steps: a sample point every this many optimizer steps, measures at each (instead of by epoch).
        points_per_epoch: sample points per epoch when sampling by epoch (1: the paper's one per epoch).
        source: ``"train"`` (the batches training sees) or ``"probe"`` (a fixed batch in eval mode under ``no_grad``).
        probe_batch: the probe batch (default: the first training batch).
        probe_forward: ``(model, batch) -> output`` for the probe (default: ``model(batch[0])``).
        window: the stability index's sliding window (see :class:`~lightning_dynamics.DynamicsConfig`).
        volatility_window: stability-index values per volatility value.
        weights: ``(w_I, w_M)`` of the stability index, non-negative, summing to 1.
        detrend: preprocessing before phases and DFA: ``"diff"``, ``"linear"``, ``"mean"`` or ``None``.
        pad: Hilbert edge handling: ``"reflect"`` or ``None``.
        h_opt: the optimum of the integration map.
        sigma: the width of the integration map.
        compute_phase_integration: also compute ``phase_integration`` (O(L^2) per sample point).
        history_window: compute the whole-history measures over the last this many points only (``None``: all).
        null_surrogates: surrogates per noise floor (``<measure>_null_lo``/``_null_hi``); ``None``: no noise floors.
        complexity_every_n_samples: every this many sample points also compute the opt-in complexity measures.
        cost_budget: the share of training time the noise floors and the end-of-fit dashboard may take
            (see :class:`~lightning_dynamics.DynamicsConfig`); ``None``: floors at every epoch, dashboard always.
        prefix: logging namespace: keys are ``<prefix>/<measure>``; two monitors need different prefixes.
        save_history: write the history to ``<prefix>_history.pt`` at the end of fit and on an exception (a name
            claimed atomically: ``-v1``, ``-v2``, ... when taken), and hand it to loggers that keep artifacts.
        save_every_n_samples: also write it every this many sample points (a killed run loses at most that many).
        verbose: announce the layers, when each measure appears, and the file written.
        layer_stats: also measure the per-layer statistics (dead and saturated units, gradient norms and
            update-to-weight ratios; :mod:`lightning_dynamics.capture.layer_stats`) and log their summaries over depth
            as ``<prefix>/stats/<name>``. Off by default: counting units costs about as much as the activation itself
            on small models (benchmarks/layer_stats_overhead.py); :class:`~lightning_dynamics.DynamicsDiagnosis`
            turns them on for the monitor it reads.
        warn: where warnings go (the adapters pass their framework's rank-zero function).
        info: where information goes (likewise).

    Returns:
        The tracker, not yet attached to a model.

    Example:
        >>> tracker = tracker_from_options(window=24, summary="std", verbose=False)
        >>> tracker.config.window, tracker.config.summary, tracker.prefix
        (24, 'std', 'dynamics')
        >>> tracker_from_options(summary="maximum")
        Traceback (most recent call last):
        ...
        ValueError: `summary` must be one of ('rms', 'mean', 'abs_mean', 'std'), got 'maximum'.
    """
    config = DynamicsConfig(
        summary=summary,
        detrend=detrend,
        pad=pad,
        window=window,
        volatility_window=volatility_window,
        weights=weights,
        h_opt=h_opt,
        sigma=sigma,
        history_window=history_window,
        compute_phase_integration=compute_phase_integration,
        every_n_steps=every_n_steps,
        points_per_epoch=points_per_epoch,
        null_surrogates=null_surrogates,
        complexity_every_n_samples=complexity_every_n_samples,
        cost_budget=cost_budget,
    )
    return DynamicsTracker(
        layers=layers,
        max_layers=max_layers,
        config=config,
        prefix=prefix,
        source=source,
        probe_batch=probe_batch,
        probe_forward=probe_forward,
        save_history=save_history,
        save_every_n_samples=save_every_n_samples,
        verbose=verbose,
        warn=warn,
        info=info,
        layer_stats=layer_stats,
    )
