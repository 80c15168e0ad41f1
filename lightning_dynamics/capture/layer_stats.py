"""Per-layer statistics beside the summaries: dead and saturated units, gradient norms, update-to-weight ratios.

No Lightning import. The simple statistics that debugging tools read per layer (AUTOTRAINER, Zhang et al., ICSE
2021: gradient-norm ratios and zero-gradient fractions; DeepDiagnosis, Wardat et al., ICSE 2022: saturated
activations, dead nodes, unchanged weights; SageMaker Debugger's DeadRelu, SaturatedActivation, VanishingGradient
and WeightUpdateRatio rules), measured on the device as the summaries are:

- **activation layers** (modules of the ReLU family and bounded activations, chosen by
  :func:`select_activation_layers`): the fraction of dead units (zero on every value of the sample interval) and the
  share of saturated values (within 1% of the range from the activation's bounds), counted in the same forward
  hooks' pass as the summaries (:class:`~lightning_dynamics.capture.summaries.UnitStatsAccumulator`);
- **watched layers** (the tracker's layers): once per sample interval, at its first optimizer step, the L2 norm of
  each layer's gradient (its parameters' ``.grad``, read before the optimizer step), its weights' L2 norm, and the
  update-to-weight ratio :math:`\\lVert w_{after} - w_{before} \\rVert / \\lVert w_{before} \\rVert` of that step
  (whatever the optimizer: the weights are copied before the step and compared after it, then the copy is freed).

Nothing here waits for the device: every value stays a device tensor until the tracker reads a point's values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dynamics.capture.hooks import UnitStatsCapture
from lightning_dynamics.capture.layer_selection import spread_evenly
from lightning_dynamics.capture.summaries import UnitStatsAccumulator

#: Modules whose outputs are exactly zero for a non-positive input: their units can die.
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
#: Per-layer statistics of activation layers and of watched layers, in the history file's ``layer_stats``.
UNIT_STATS = ("dead_frac", "saturated_frac")
PARAMETER_STATS = ("grad_norm", "update_ratio", "weight_norm")
#: The logged summaries over depth (``<prefix>/stats/<name>``): a fixed number of keys whatever the depth.
STAT_KEYS = (
    "act_scale_min",
    "act_scale_max",
    "act_scale_ratio_last_first",
    "dead_frac_max",
    "dead_frac_mean",
    "saturated_frac_max",
    "saturated_frac_mean",
    "grad_norm_max",
    "grad_norm_ratio_first_last",
    "update_ratio_max",
    "update_ratio_min",
    "weight_norm",
)


def activation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """The output range of a bounded activation module (``None`` for an unbounded one).

    Example:
        >>> activation_bounds(nn.Tanh()), activation_bounds(nn.ReLU6()), activation_bounds(nn.ReLU())
        ((-1.0, 1.0), (0.0, 6.0), None)
    """
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return (0.0, 1.0)
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return (-1.0, 1.0)
    if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        return (float(module.min_val), float(module.max_val))
    return None


def select_activation_layers(
    model: nn.Module, max_layers: int | None = 64
) -> list[tuple[str, nn.Module, str, tuple[float, float] | None, int]]:
    """The activation modules whose units are counted: ``(name, module, kind, bounds, unit_dim)``.

    ReLU-family modules (:data:`RELU_FAMILY`) count dead units; bounded activations (sigmoid, tanh, hardtanh,
    hardsigmoid, softsign) count saturated units (``ReLU6`` is a ReLU: dead units). The unit dim follows the weight
    layer registered before the activation: dim 1 (channels) after a convolution, the last dim after a linear layer
    (or when there is none). Activations called as functions (``F.relu``) have no module and are not seen.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4), nn.Tanh())
        >>> [(name, kind, dim) for name, _, kind, _, dim in select_activation_layers(net)]
        [('1', 'dead', 1), ('4', 'saturated', -1)]
    """
    chosen: list[tuple[str, nn.Module, str, tuple[float, float] | None, int]] = []
    unit_dim = -1
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
            unit_dim = 1
        elif isinstance(module, (nn.Linear, nn.ConvTranspose3d)):
            unit_dim = -1 if isinstance(module, nn.Linear) else 1
        if isinstance(module, RELU_FAMILY):
            chosen.append((name, module, "dead", None, unit_dim))
        elif (bounds := activation_bounds(module)) is not None:
            chosen.append((name, module, "saturated", bounds, unit_dim))
    return spread_evenly(chosen, max_layers)


class LayerStatistics:
    """The per-layer statistics of one model (module docstring); owned by the tracker, one point per sample point.

    Args:
        tolerance: of saturation (:class:`~lightning_dynamics.capture.summaries.UnitStatsAccumulator`).

    Attributes:
        activation_names: the activation layers counted (rows of ``dead_frac`` / ``saturated_frac``).
        layer_names: the watched layers (rows of ``grad_norm``, ``update_ratio``, ``weight_norm``).
    """

    def __init__(self, tolerance: float = 0.01) -> None:
        self.tolerance = tolerance
        self.activation_names: list[str] = []
        self.kinds: list[str] = []
        self.layer_names: list[str] = []
        self.units: UnitStatsAccumulator | None = None
        self._capture: UnitStatsCapture | None = None
        self._modules: list[nn.Module] = []
        self._params: list[list[nn.Parameter]] = []
        self._grad_due = True
        self._snapshot: list[list[Tensor]] | None = None
        self._grad_norms: Tensor | None = None
        self._parameter_point: Tensor | None = None  # [3, L] of the open interval (NaN where not measured)
        self._points: list[Tensor] = []  # per sample point: [2, A] unit fractions and [3, L] parameter stats
        self._parameter_points: list[Tensor] = []
        self._host_points: list[list[list[float]]] = []
        self._host_parameter_points: list[list[list[float]]] = []

    # ------------------------------------------------------------------ attach

    def attach(
        self,
        model: nn.Module,
        layers: list[tuple[str, nn.Module]],
        device: torch.device,
        gate: Callable[[], bool],
        max_layers: int | None = 64,
    ) -> None:
        """Hook the activation layers of ``model`` and remember the watched ``layers``' parameters.

        Attaching again to the same modules continues the series; other modules start fresh ones.
        """
        self.detach()
        acts = select_activation_layers(model, max_layers)
        modules = [m for _, m, *_ in acts] + [m for _, m in layers]
        same = len(modules) == len(self._modules) and all(a is b for a, b in zip(modules, self._modules, strict=True))
        if not same or self.units is None:
            self.activation_names = [name for name, *_ in acts]
            self.kinds = [kind for _, _, kind, _, _ in acts]
            self.layer_names = [name for name, _ in layers]
            self.units = UnitStatsAccumulator(self.kinds, [b for *_, b, _ in acts], device, tolerance=self.tolerance)
            self._points, self._parameter_points = [], []
            self._host_points, self._host_parameter_points = [], []
        self._modules = modules
        self._params = [[p for p in module.parameters() if p.is_floating_point()] for _, module in layers]
        self._capture = UnitStatsCapture([(n, m, dim) for n, m, _, _, dim in acts], self.units, gate).attach()
        self._grad_due = True
        self._snapshot = None
        self._parameter_point = None

    def detach(self) -> None:
        if self._capture is not None:
            self._capture.remove()
        self._snapshot = None

    # ------------------------------------------------------------------ gradients and updates

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Read the watched layers' gradients and copy their weights, at the first step of each sample interval.

        Call it after the backward pass and before ``optimizer.step()`` (gradients unscaled, e.g. after
        ``scaler.unscale_``). No host synchronisation: norms stay on the device. A layer without any ``.grad``
        reads NaN. Other steps of the interval return at once.
        """
        if not self._grad_due or not self._params:
            return
        self._grad_due = False
        self._grad_norms = _layer_norms([[p.grad for p in ps if p.grad is not None] for ps in self._params])
        self._snapshot = [[p.detach().clone() for p in ps] for ps in self._params]

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Compare the weights with the copy taken before the step (if one was taken) and free the copy."""
        if self._snapshot is None:
            return
        before, self._snapshot = self._snapshot, None
        weight = _layer_norms(before)
        change = _layer_norms(
            [
                [p.detach() - old for p, old in zip(ps, olds, strict=True)]
                for ps, olds in zip(self._params, before, strict=True)
            ]
        )
        grad = self._grad_norms if self._grad_norms is not None else torch.full_like(weight, math.nan)
        self._parameter_point = torch.stack([grad.to(weight), change / weight, weight])

    # ------------------------------------------------------------------ sample points

    def packed(self) -> Tensor:
        """The unit counts of the open interval, flat and sum-reducible (all-reduced with the summaries)."""
        assert self.units is not None
        return self.units.packed()

    def close(self, packed: Tensor) -> None:
        """Close the interval with the (all-reduced) ``packed`` counts: one point of every per-layer series."""
        assert self.units is not None
        fractions = self.units.fractions(packed)
        dead = torch.where(_mask(self.kinds, "dead", fractions), fractions, torch.full_like(fractions, math.nan))
        saturated = torch.where(
            _mask(self.kinds, "saturated", fractions), fractions, torch.full_like(fractions, math.nan)
        )
        self._points.append(torch.stack([dead, saturated]))
        n = len(self.layer_names)
        point = self._parameter_point
        if point is None:
            device = fractions.device
            point = torch.full((len(PARAMETER_STATS), n), math.nan, dtype=torch.float64, device=device)
        self._parameter_points.append(point.to(torch.float64))
        self._parameter_point = None
        self._grad_due = True
        self.units.reset()

    def _flush(self) -> None:
        """Move the points still on the device to the host (one synchronisation for all of them)."""
        if self._points:
            self._host_points.extend(torch.stack(self._points).tolist())
            self._points = []
        if self._parameter_points:
            self._host_parameter_points.extend(torch.stack(self._parameter_points).tolist())
            self._parameter_points = []

    @property
    def n_points(self) -> int:
        return len(self._host_points) + len(self._points)

    def series(self) -> dict[str, dict[str, Any]]:
        """Every per-layer series: ``{stat: {"layers": names, "values": [[value per point] per layer]}}``."""
        self._flush()
        out: dict[str, dict[str, Any]] = {}
        for i, stat in enumerate(UNIT_STATS):
            rows = [[point[i][a] for point in self._host_points] for a in range(len(self.activation_names))]
            out[stat] = {"layers": list(self.activation_names), "values": rows}
        for i, stat in enumerate(PARAMETER_STATS):
            rows = [
                [point[i][layer] for point in self._host_parameter_points] for layer in range(len(self.layer_names))
            ]
            out[stat] = {"layers": list(self.layer_names), "values": rows}
        return out

    def last(self) -> dict[str, list[float]]:
        """The last point's per-layer values of every statistic (NaN lists before the first point)."""
        self._flush()
        out = {}
        for i, stat in enumerate(UNIT_STATS):
            out[stat] = list(self._host_points[-1][i]) if self._host_points else [math.nan] * len(self.activation_names)
        for i, stat in enumerate(PARAMETER_STATS):
            out[stat] = (
                list(self._host_parameter_points[-1][i])
                if self._host_parameter_points
                else [math.nan] * len(self.layer_names)
            )
        return out

    def summary(self, act_scale: list[float]) -> dict[str, float]:
        """The logged summaries over depth (:data:`STAT_KEYS`) of the last point (``act_scale``: its summaries)."""
        last = self.last()
        grad = last["grad_norm"]
        with_grad = [g for g in grad if math.isfinite(g) and g > 0]
        return {
            "act_scale_min": _reduce(min, act_scale),
            "act_scale_max": _reduce(max, act_scale),
            "act_scale_ratio_last_first": _ratio(_last_finite(act_scale), _first_finite(act_scale)),
            "dead_frac_max": _reduce(max, last["dead_frac"]),
            "dead_frac_mean": _reduce(lambda v: sum(v) / len(v), last["dead_frac"]),
            "saturated_frac_max": _reduce(max, last["saturated_frac"]),
            "saturated_frac_mean": _reduce(lambda v: sum(v) / len(v), last["saturated_frac"]),
            "grad_norm_max": _reduce(max, grad),
            "grad_norm_ratio_first_last": _ratio(with_grad[0], with_grad[-1]) if with_grad else math.nan,
            "update_ratio_max": _reduce(max, last["update_ratio"]),
            "update_ratio_min": _reduce(min, last["update_ratio"]),
            "weight_norm": _reduce(lambda v: math.sqrt(sum(x * x for x in v)), last["weight_norm"]),
        }

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        assert self.units is not None
        return {
            "activation_names": list(self.activation_names),
            "layer_names": list(self.layer_names),
            "units": self.units.state_dict(),
            "series": self.series(),
        }

    def load_state_dict(self, state: Any, n_points: int, where: str = "the checkpoint's layer statistics") -> None:
        """Restore :meth:`state_dict` (recorded on the same layers, ``n_points`` points); ValueError names the field."""
        assert self.units is not None
        if not isinstance(state, dict):
            raise ValueError(f"{where} must be a dict, got {type(state).__name__}.")
        if state.get("activation_names") != self.activation_names or state.get("layer_names") != self.layer_names:
            raise ValueError(
                f"{where} was recorded on other layers (activation layers {state.get('activation_names')!r:.80}, "
                f"watched layers {state.get('layer_names')!r:.80}); now {self.activation_names!r:.80} and "
                f"{self.layer_names!r:.80}."
            )
        series = state.get("series")
        stats = (*UNIT_STATS, *PARAMETER_STATS)
        if not isinstance(series, dict) or set(series) != set(stats):
            got = sorted(series) if isinstance(series, dict) else type(series).__name__
            raise ValueError(f"{where}: `series` must hold {stats}, got {got}.")
        for stat in stats:
            rows = series[stat].get("values") if isinstance(series[stat], dict) else None
            if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == n_points for r in rows):
                raise ValueError(f"{where}: `series[{stat!r}]` must be per-layer lists of {n_points} values.")
        units = UnitStatsAccumulator(self.kinds, self.units.bounds, self.units.device, self.tolerance)
        units.load_state_dict(state.get("units"), where)
        self.units.counts, self.units.values, self.units.mixed = units.counts, units.values, units.mixed

        def columns(names: tuple[str, ...]) -> list[list[list[float]]]:
            return [[[float(row[t]) for row in series[s]["values"]] for s in names] for t in range(n_points)]

        self._host_points, self._points = columns(UNIT_STATS), []
        self._host_parameter_points, self._parameter_points = columns(PARAMETER_STATS), []

    def clear_series(self) -> None:
        """Forget every recorded point (the open interval's counts stay)."""
        self._points, self._parameter_points, self._host_points, self._host_parameter_points = [], [], [], []

    def pad_to(self, n_points: int) -> None:
        """Prepend NaN points up to ``n_points`` (a history restored from a state without layer statistics)."""
        self._flush()
        missing = n_points - len(self._host_points)
        if missing > 0:
            nan_units = [[math.nan] * len(self.activation_names) for _ in UNIT_STATS]
            nan_params = [[math.nan] * len(self.layer_names) for _ in PARAMETER_STATS]
            self._host_points = [nan_units] * missing + self._host_points
            self._host_parameter_points = [nan_params] * missing + self._host_parameter_points

    @property
    def nbytes(self) -> int:
        """Bytes held on the device between steps (the unit counts; the weight copy lives one step only)."""
        if self.units is None:
            return 0
        held = [c for c in self.units.counts if c is not None] + [self.units.values]
        return sum(t.numel() * t.element_size() for t in held)


def _layer_norms(tensors: list[list[Tensor]]) -> Tensor:
    """``[L]`` float64: the L2 norm of each layer's tensors together (NaN for a layer with none)."""
    device = next((t.device for ts in tensors for t in ts), torch.device("cpu"))
    out = []
    for ts in tensors:
        if not ts:
            out.append(torch.full((), math.nan, dtype=torch.float64, device=device))
            continue
        norms = torch.stack(
            [
                torch.linalg.vector_norm(t, 2, dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
                for t in ts
            ]
        ).to(torch.float64)
        out.append(torch.linalg.vector_norm(norms, 2))
    if not out:
        return torch.zeros(0, dtype=torch.float64, device=device)
    return torch.stack([o.to(device) for o in out])


def _mask(kinds: list[str], kind: str, like: Tensor) -> Tensor:
    return torch.tensor([k == kind for k in kinds], dtype=torch.bool).to(like.device, non_blocking=True)


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _reduce(fn: Callable[[list[float]], float], values: list[float]) -> float:
    finite = _finite(values)
    return float(fn(finite)) if finite else math.nan


def _first_finite(values: list[float]) -> float:
    return next((v for v in values if math.isfinite(v)), math.nan)


def _last_finite(values: list[float]) -> float:
    return next((v for v in reversed(values) if math.isfinite(v)), math.nan)


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return a / b
