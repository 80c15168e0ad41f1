"""Choosing which modules of a network become the "channels" of the dynamics (no Lightning import).

Modules are resolved by name, like timm's ``FeatureHooks``: a selection is a list of exact names, fnmatch
patterns, module types, or a predicate; ``"auto"`` picks the compute layers.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from torch import nn

LayerPredicate = Callable[[str, nn.Module], bool]
LayerSpec = str | type | LayerPredicate
LayerSelection = str | Sequence[LayerSpec] | LayerPredicate

AUTO_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.MultiheadAttention,
    nn.RNNBase,  # nn.LSTM, nn.GRU, nn.RNN
    nn.RNNCellBase,  # nn.LSTMCell, nn.GRUCell, nn.RNNCell
)

# Modules whose forward uses their submodules' parameters without calling them: hooks on those submodules
# never fire (``nn.MultiheadAttention.out_proj``), so "auto" never picks a module inside them.
OPAQUE_TYPES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)

# The Kuramoto order parameter of L independent layers has a floor of about 1/sqrt(L): below this many
# layers the cross-layer measures say little (docs/method.md section 3).
MIN_RECOMMENDED_LAYERS = 3


# Classes whose instances are modules but not part of the network's forward: torchmetrics' metrics (an accuracy held
# by a LightningModule, called in training_step on the predictions) and their collections. Recognised by the names of
# their classes, so that torchmetrics need not be installed, or imported, to tell.
_NOT_LAYER_CLASSES = (("torchmetrics", "Metric"), ("torchmetrics", "MetricCollection"))


class FewLayersWarning(UserWarning):
    """Fewer than three layers are watched: the cross-layer measures (floor ~1/sqrt(L)) say little."""


class SkippedModulesWarning(UserWarning):
    """Modules that the layer selection matched were left out: they are not part of the network's forward."""


def is_metric_module(module: nn.Module) -> bool:
    """Whether ``module`` is a torchmetrics ``Metric`` or ``MetricCollection`` (found by the classes it derives from,
    without importing torchmetrics): its output is a metric's value, not a layer's activation, so it is never a layer.

    Example:
        >>> from torch import nn
        >>> is_metric_module(nn.Linear(2, 2))
        False
    """
    return any(
        klass.__name__ == name and klass.__module__.split(".")[0] == package
        for klass in type(module).__mro__
        for package, name in _NOT_LAYER_CLASSES
    )


def _not_layers(candidates: list[tuple[str, nn.Module]]) -> set[str]:
    """Names of the metric modules (:func:`is_metric_module`) and of every module inside one."""
    metrics = [name for name, module in candidates if is_metric_module(module)]
    return {name for name, _ in candidates if any(name == m or name.startswith(m + ".") for m in metrics)}


def is_compute_layer(name: str, module: nn.Module) -> bool:
    """The ``"auto"`` rule: convolutions, linear and recurrent layers, and attention blocks (``nn.MultiheadAttention``
    and any class named ``*Attention``, as in timm and torchvision); modules inside an ``nn.MultiheadAttention``
    are skipped by :func:`select_layers` (their forward never runs)."""
    return isinstance(module, AUTO_TYPES) or type(module).__name__.endswith("Attention")


def _inside_opaque(candidates: list[tuple[str, nn.Module]]) -> set[str]:
    """Names of the modules nested in an :data:`OPAQUE_TYPES` module."""
    inside: set[str] = set()
    for name, module in candidates:
        if isinstance(module, OPAQUE_TYPES):
            inside.update(f"{name}.{child}" for child, _ in module.named_modules() if child)
    return inside


def spread_evenly(items: list, max_items: int | None) -> list:
    """Keep at most ``max_items`` of ``items``, evenly spaced through the list, first and last included.

    Example:
        >>> spread_evenly(list("abcdefghij"), 4)
        ['a', 'd', 'g', 'j']
    """
    if max_items is None or len(items) <= max_items:
        return list(items)
    index = np.unique(np.round(np.linspace(0, len(items) - 1, max_items)).astype(int))
    return [items[i] for i in index]


def _named_candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # The root module (name "") is never a channel: its output is the network's output, not a layer's.
    # torch.compile wraps a module as `<name>._orig_mod`: names are given without that wrapper level, and
    # the wrapper itself (an OptimizedModule) is not a layer.
    return [
        (_without_compile_wrapper(name), module)
        for name, module in model.named_modules()
        if name and not is_compiled_module(module)
    ]


def _without_compile_wrapper(name: str) -> str:
    parts = [part for part in name.split(".") if part != "_orig_mod"]
    return ".".join(parts)


def is_compiled_module(module: nn.Module) -> bool:
    """Whether ``module`` is the wrapper ``torch.compile`` returns for an ``nn.Module``."""
    return type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod")


def _match(spec: LayerSpec, name: str, module: nn.Module) -> bool:
    if isinstance(spec, str):
        return name == spec or fnmatch.fnmatchcase(name, spec)
    if isinstance(spec, type):
        return isinstance(module, spec)
    return bool(spec(name, module))


def select_layers(
    model: nn.Module, layers: LayerSelection = "auto", max_layers: int | None = None
) -> list[tuple[str, nn.Module]]:
    """Resolve a layer selection to ``(name, module)`` pairs in the model's registration order.

    Registration order is the forward order for the sequential and residual vision networks this package
    targets (torchvision, timm); the measures themselves do not depend on the order.

    Args:
        model: the network.
        layers: ``"auto"`` (see :func:`is_compute_layer`), ``"all"`` (every leaf module; for both, never a
            module inside an ``nn.MultiheadAttention``, whose forward does not call it), a predicate
            ``(name, module) -> bool``, or a list of exact module names, fnmatch patterns
            (``"layer*.conv1"``) and module types (``nn.Conv2d``).
        max_layers: cap, applied by keeping layers evenly spread through depth (:func:`spread_evenly`).

    Metric modules (torchmetrics' ``Metric`` and ``MetricCollection``, found by :func:`is_metric_module`) and the
    modules inside them are never layers, whatever the selection: they are not part of the network's forward (an
    ``Accuracy`` attribute of a LightningModule would record the metric's value as a layer summary).

    Warns:
        FewLayersWarning: fewer than three layers are selected.
        SkippedModulesWarning: the selection matched metric modules; it names them.

    Raises:
        ValueError: an exact name that is not a module of the model (close matches are listed), a pattern or
            type that matches nothing, or a selection that resolves to no layer.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 2))
        >>> [name for name, _ in select_layers(net)]
        ['0', '3', '4']
        >>> [name for name, _ in select_layers(net, [nn.ReLU, "3", "4"])]
        ['1', '3', '4']
    """
    if max_layers is not None and (int(max_layers) != max_layers or max_layers < 1):
        raise ValueError(f"`max_layers` must be a positive integer or None, got {max_layers!r}.")
    candidates = _named_candidates(model)
    names = [name for name, _ in candidates]
    if isinstance(layers, str) and layers in ("auto", "all"):
        skip = _inside_opaque(candidates)
        if layers == "auto":
            chosen = [(n, m) for n, m in candidates if is_compute_layer(n, m) and n not in skip]
        else:
            chosen = [(n, m) for n, m in candidates if not any(True for _ in m.children()) and n not in skip]
    elif callable(layers) and not isinstance(layers, type):
        chosen = [(n, m) for n, m in candidates if layers(n, m)]
    else:
        specs: Sequence[LayerSpec] = [layers] if isinstance(layers, (str, type)) else layers
        if len(specs) == 0:
            raise ValueError("`layers` must not be an empty list; use 'auto' or name at least one module.")
        for spec in specs:
            if not isinstance(spec, (str, type)) and not callable(spec):
                raise ValueError(f"`layers` entries must be names, patterns, types or predicates, got {spec!r}.")
            if not any(_match(spec, n, m) for n, m in candidates):
                raise ValueError(_no_match_message(spec, names))
        chosen = [(n, m) for n, m in candidates if any(_match(spec, n, m) for spec in specs)]
    not_layers = _not_layers(candidates)
    skipped = [n for n, _ in chosen if n in not_layers]
    chosen = [(n, m) for n, m in chosen if n not in not_layers]
    if skipped:
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        shown = ", ".join(repr(n) for n in skipped[:10]) + more
        warnings.warn(
            f"`layers={layers!r}` matched {shown} of {type(model).__name__}: torchmetrics metrics (or modules inside "
            "one), which are not part of the network's forward, so they are skipped.",
            SkippedModulesWarning,
            stacklevel=2,
        )
    if not chosen:
        layer_names = [n for n in names if n not in not_layers]
        if not layer_names:
            raise ValueError(
                f"`layers={layers!r}` selects no module of {type(model).__name__}: it has no submodules"
                + (f" other than metrics ({sorted(not_layers)[:3]})" if not_layers else "")
                + ", and the model itself is never a layer (its output is the network's output). Watch a model "
                "whose computation is done by submodules (e.g. nn.Linear, nn.Conv2d attributes or an nn.Sequential)."
            )
        raise ValueError(
            f"`layers={layers!r}` selects no module of {type(model).__name__} "
            f"(it has {len(layer_names)} named submodules that can be layers). Name modules explicitly, e.g. "
            f"layers={layer_names[:3]!r}."
        )
    chosen = spread_evenly(chosen, max_layers)
    if len(chosen) < MIN_RECOMMENDED_LAYERS:
        warnings.warn(
            f"`layers={layers!r}` selects {len(chosen)} layer(s) of {type(model).__name__} "
            f"({[n for n, _ in chosen]}): the cross-layer measures need at least 2 and say little below "
            f"{MIN_RECOMMENDED_LAYERS} (the Kuramoto order parameter of L independent layers is about 1/sqrt(L)). "
            "Watch more layers, e.g. layers='all' or a list of names.",
            FewLayersWarning,
            stacklevel=2,
        )
    return chosen


def _no_match_message(spec: LayerSpec, names: list[str]) -> str:
    if isinstance(spec, str):
        close = difflib.get_close_matches(spec, names, n=5, cutoff=0.5)
        hint = f" Close matches: {close}." if close else f" Some module names: {names[:8]}."
        kind = "pattern" if any(c in spec for c in "*?[") else "name"
        return f"`layers` {kind} {spec!r} matches no module of the model.{hint}"
    if isinstance(spec, type):
        return f"`layers` type {spec.__name__} matches no module of the model."
    return f"`layers` predicate {spec!r} matches no module of the model."
