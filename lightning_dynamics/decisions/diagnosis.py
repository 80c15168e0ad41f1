"""Named findings: say what is wrong with a run, where, and what to try (no Lightning import).

The framework-neutral core of :class:`~lightning_dynamics.callbacks.diagnosis.DynamicsDiagnosis` and of its Fabric
and ``transformers`` twins (thin adapters); a plain PyTorch loop drives it directly (docs/diagnosis.md). The
findings file (:func:`save_findings`, beside the monitor's history) carries the findings downstream to the report.
Each rule reads simple statistics of the run (the training loss, the inputs and outputs of the model's first two
training forwards of each epoch, and the per-layer statistics of :mod:`lightning_dynamics.capture.layer_stats`: dead
and saturated units, activation scale, gradient norms, update-to-weight ratios, weight norms) and names a kind of
trouble with the layers it concerns, the step and epoch it was first seen, its evidence (the value against its
threshold) and one action to try.

Sources of the kinds and of the default thresholds (:class:`DiagnosisThresholds`): AUTOTRAINER (Zhang et al.,
"AUTOTRAINER: An Automatic DNN Training Problem Detection and Repair System", ICSE 2021: vanishing and exploding
gradients, dying ReLU, oscillating loss, slow convergence); DeepDiagnosis (Wardat et al., "DeepDiagnosis:
Automatically Diagnosing Faults and Recommending Actionable Fixes in Deep Learning Programs", ICSE 2022:
saturated activations, dead nodes, unchanged weights, numerical errors); Amazon SageMaker Debugger's built-in
rules (DeadRelu and SaturatedActivation: a layer is flagged when more than 50% of its units are inactive;
VanishingGradient; WeightUpdateRatio; LossNotDecreasing; Overfit). Where those tools give no number for our
statistics, the threshold was chosen on the tuning runs of ``benchmarks/diagnosis.py`` (scikit-learn digits,
an MLP and a small CNN, seed 100; seed 101 is the second tuning seed); held-out architectures and seeds judge them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_dynamics.validation import check_finite_real, check_int

STATE_VERSION = 1
#: The format of the findings file (:func:`save_findings`).
FINDINGS_FORMAT = 1
#: Every kind of finding, in the order the rules run.
FINDING_KINDS = (
    "nonfinite",
    "not_training",
    "data_bug",
    "wrong_output",
    "lr_too_high",
    "exploding_gradients",
    "vanishing_gradients",
    "dying_relu",
    "saturation",
    "weight_decay_too_strong",
    "lr_too_low",
    "label_noise",
)
#: One suggested action per kind.
ACTIONS = {
    "nonfinite": "lower the learning rate or clip gradients; look for log(0), division by zero or fp16 overflow in "
    "the loss and inputs",
    "not_training": "set requires_grad=True on the layers meant to train and pass every trainable parameter to the "
    "optimizer (or declare layers frozen on purpose: frozen=[...])",
    "data_bug": "check the data pipeline: normalise the inputs (zero mean, unit variance), and make sure each step "
    "draws a new, non-constant batch",
    "wrong_output": "return logits: remove the softmax before CrossEntropyLoss (it applies log_softmax itself)",
    "lr_too_high": "lower the learning rate (by 10x), or add warm-up and gradient clipping",
    "exploding_gradients": "clip gradients (e.g. gradient_clip_val=1.0), lower the learning rate, or use a smaller "
    "initialisation or normalisation layers",
    "vanishing_gradients": "use ReLU-family activations, residual connections or normalisation layers, and a "
    "variance-preserving initialisation (He/Kaiming)",
    "dying_relu": "lower the learning rate, use LeakyReLU/GELU, or re-initialise the biases (He initialisation)",
    "saturation": "normalise the layer inputs (BatchNorm/LayerNorm), use a smaller initialisation, or ReLU-family "
    "activations",
    "weight_decay_too_strong": "lower weight_decay (e.g. to 1e-4 with SGD, 1e-2 with AdamW)",
    "lr_too_low": "raise the learning rate (by 10x) or use a learning-rate finder",
    "label_noise": "check the labels for noise (e.g. confident learning), add regularisation or augmentation, and "
    "keep the checkpoint of the best validation loss",
}


# Losses this close to zero carry no scale: ratios to them are rounding noise.
_LOSS_RESOLUTION = 1e-6


@dataclass
class Finding:
    """One named problem of a run.

    Attributes:
        kind: one of :data:`FINDING_KINDS`.
        layers: the layers concerned (empty for a run-wide finding).
        step: the optimizer step at which it was first seen.
        epoch: the epoch at which it was first seen.
        evidence: the value against its reference or threshold, in words.
        action: one suggested action.
        value: the value the rule read.
        threshold: the threshold it was compared with.
    """

    kind: str
    layers: list[str]
    step: int
    epoch: int
    evidence: str
    action: str
    value: float = math.nan
    threshold: float = math.nan

    def __str__(self) -> str:
        where = f" in {', '.join(self.layers[:4])}{' ...' if len(self.layers) > 4 else ''}" if self.layers else ""
        return f"{self.kind}{where} (epoch {self.epoch}, step {self.step}): {self.evidence}. Try: {self.action}."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: Any, where: str = "a finding") -> Finding:
        """A finding from :meth:`to_dict`; ValueError names the field that is wrong."""
        if not isinstance(state, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(state).__name__}.")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(state) - {"value", "threshold"})
        if missing:
            raise ValueError(f"{where} lacks {missing}.")
        if state["kind"] not in FINDING_KINDS:
            raise ValueError(f"{where}: `kind` must be one of {FINDING_KINDS}, got {state['kind']!r}.")
        if not isinstance(state["layers"], list) or not all(isinstance(n, str) for n in state["layers"]):
            raise ValueError(f"{where}: `layers` must be a list of layer names, got {state['layers']!r:.80}.")
        for key in ("step", "epoch"):
            check_int(key, state[key], 0)
        for key in ("evidence", "action"):
            if not isinstance(state[key], str):
                raise ValueError(f"{where}: `{key}` must be a string, got {state[key]!r:.80}.")
        return cls(**{k: state[k] for k in names if k in state})


@dataclass
class DiagnosisThresholds:
    """The rules' thresholds (module docstring for their sources; docs/diagnosis.md for each rule).

    Attributes:
        dead_frac: a ReLU layer with more than this fraction of dead units is dying (SageMaker DeadRelu: 50%).
        saturated_frac: a bounded activation layer with more than this share of its values saturated is saturated
            (SageMaker SaturatedActivation flags a layer at 50% of saturated units).
        vanishing_ratio: the first watched layer's gradient norm over the last one's below this: vanishing.
        exploding_grad_norm: a layer's gradient norm above this (or a ratio first/last above
            ``1 / vanishing_ratio``): exploding.
        divergence: the epoch's mean training loss above this times the loss of the first step: the learning rate
            is too high (divergence).
        oscillation: the coefficient of variation of the step losses of an epoch (after the first) above this,
            while the loss does not fall: the learning rate is too high (oscillation).
        update_ratio_high: an update-to-weight ratio above this with a loss that does not fall: too high.
        update_ratio_low: every layer's update-to-weight ratio below this: the learning rate is too low.
        progress: after ``patience_epochs`` epochs, a loss that fell by less than this fraction of its first value
            is too little progress.
        weight_shrink: the watched layers' weight norm below this fraction of its first value, with too little
            progress: weight decay is too strong.
        overfit_rise: validation loss this fraction above its minimum while the training loss keeps falling:
            memorisation (label noise).
        input_rms_high: an input whose root mean square is above this is not normalised.
        patience_epochs: epochs before the slow-progress rules (``lr_too_low``, ``weight_decay_too_strong``) may
            fire, and consecutive epochs of validation-loss rise before ``label_noise``.
    """

    dead_frac: float = 0.5
    saturated_frac: float = 0.5
    vanishing_ratio: float = 1e-3
    exploding_grad_norm: float = 100.0
    divergence: float = 1.5
    oscillation: float = 0.5
    update_ratio_high: float = 0.5
    update_ratio_low: float = 1e-4
    progress: float = 0.1
    weight_shrink: float = 0.5
    overfit_rise: float = 0.1
    input_rms_high: float = 5.0
    patience_epochs: int = 3

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "patience_epochs":
                check_int(item.name, value, 1)
            else:
                check_finite_real(item.name, value, positive=True)


@dataclass
class EpochObservation:
    """What the rules read at one epoch end (host numbers; NaN where not measured).

    Attributes:
        epoch, step: where training is.
        n_steps: training steps whose loss was observed in the epoch.
        loss_mean, loss_cv: the mean training loss of the epoch's steps and their coefficient of variation.
        first_loss: the training loss of the run's first step.
        val_loss: the validation loss of this epoch (NaN if none).
        input_rms, input_std: root mean square and standard deviation of the inputs of the epoch's first forward.
        repeated_batch: the epoch's first two training inputs were identical.
        output_is_probability: the model's outputs were rows of probabilities (non-negative, summing to 1).
        layer_stats: per-layer statistics of the last sample point (``{stat: [value per layer]}``,
            :meth:`~lightning_dynamics.capture.layer_stats.LayerStatistics.last`).
        activation_names, layer_names: the rows of the unit statistics and of the parameter statistics.
    """

    epoch: int
    step: int
    n_steps: int = 0
    loss_mean: float = math.nan
    loss_cv: float = math.nan
    first_loss: float = math.nan
    val_loss: float = math.nan
    input_rms: float = math.nan
    input_std: float = math.nan
    repeated_batch: bool = False
    output_is_probability: bool = False
    layer_stats: Mapping[str, Sequence[float]] = field(default_factory=dict)
    activation_names: Sequence[str] = ()
    layer_names: Sequence[str] = ()


def _under(name: str, prefixes: Iterable[str]) -> bool:
    """``name`` is one of ``prefixes`` or inside one of them (``backbone`` holds ``backbone.0.weight``)."""
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def frozen_owners(model: nn.Module, frozen: Sequence[str]) -> list[str]:
    """The outermost modules whose parameters are all among ``frozen`` (parameter names): what to pass as
    ``DynamicsDiagnoser(frozen=...)`` to declare them frozen on purpose.

    Example:
        >>> net = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Linear(2, 2))
        >>> frozen_owners(net, ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias", "1.bias"])
        ['0', '1.bias']
    """
    chosen, owners = set(frozen), set()
    for name in frozen:
        owner, parts = name, name.split(".")[:-1]
        for depth in range(len(parts), 0, -1):
            prefix = ".".join(parts[:depth])
            inside = [n for n, _ in model.get_submodule(prefix).named_parameters(prefix=prefix)]
            if not all(n in chosen for n in inside):
                break
            owner = prefix
        owners.add(owner)
    return sorted(owners)


def model_findings(
    model: nn.Module,
    optimizers: Iterable[torch.optim.Optimizer],
    layer_names: Sequence[str] = (),
    frozen: Sequence[str] = (),
) -> tuple[str, list[str], float] | None:
    """``not_training`` before training: trainable parameters in no optimizer, or parameters with ``requires_grad``
    off that were not declared frozen on purpose (``frozen``: module or parameter names).

    A parameter frozen on purpose looks like one frozen by mistake (whether the optimizer lists it or not: both are
    common when fine-tuning), so undeclared frozen parameters are a finding whose evidence names the ``frozen=[...]``
    that declares them; a trainable parameter missing from every optimizer is a finding whatever ``frozen`` says.

    Returns:
        ``(evidence, parameter or layer names, count)`` or ``None`` when every parameter trains or is declared frozen.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> model_findings(net, [torch.optim.SGD(net[1].parameters(), lr=0.1)])[0]
        '2 trainable parameter tensors are in no optimizer (0.weight, 0.bias)'
        >>> _ = net[0].requires_grad_(False)
        >>> model_findings(net, [torch.optim.SGD(net[1].parameters(), lr=0.1)])[0]
        "2 of 4 parameter tensors have requires_grad=False (0.weight, 0.bias); frozen on purpose? pass frozen=['0']"
        >>> model_findings(net, [torch.optim.SGD(net[1].parameters(), lr=0.1)], frozen=["0"]) is None
        True
    """
    in_optimizer = {id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]}
    named = list(model.named_parameters())
    if not named:
        return None
    unexpected = [n for n, p in named if not p.requires_grad and not _under(n, frozen)]
    orphans = [n for n, p in named if p.requires_grad and id(p) not in in_optimizer]
    if orphans and in_optimizer:
        shown = ", ".join(orphans[:6]) + (" ..." if len(orphans) > 6 else "")
        return (f"{len(orphans)} trainable parameter tensors are in no optimizer ({shown})", orphans, len(orphans))
    if unexpected:
        owners = sorted({n for n in layer_names if any(f.startswith(f"{n}.") for f in unexpected)}) or unexpected
        shown = ", ".join(unexpected[:6]) + (" ..." if len(unexpected) > 6 else "")
        declare = frozen_owners(model, unexpected)
        return (
            f"{len(unexpected)} of {len(named)} parameter tensors have requires_grad=False ({shown}); frozen on "
            f"purpose? pass frozen={declare!r}",
            owners,
            len(unexpected),
        )
    return None


class DynamicsDiagnoser:
    r"""Watch a run and name what goes wrong with it: the framework-neutral core of the diagnosis.

    Call :meth:`attach` once the model and its optimizers exist (it checks them and hooks the model's root to
    see the inputs and outputs of the first two training forwards of each epoch), :meth:`observe_loss` after each
    training step (the loss stays on the device: no host synchronisation), and :meth:`end_epoch` at each epoch's
    end with the per-layer statistics of a :class:`~lightning_dynamics.DynamicsTracker` (its ``statistics``); it
    returns the new findings. :attr:`findings` holds every finding, each kind once, in the order first seen.
    :meth:`close_epoch` is an adapter's whole epoch end: :meth:`end_epoch`, each new finding said once, the stop
    agreed across processes (:meth:`decide_stop`) and the findings file written beside the history
    (:func:`save_findings`, read by the report).

    Args:
        thresholds: the rules' thresholds.
        stop_on: kinds of finding that end the run (:meth:`should_stop` says so).
        ignore: kinds of finding never reported.
        frozen: modules (or parameters) frozen on purpose, by name in the model given to :meth:`attach` (e.g.
            ``["backbone"]`` when fine-tuning a head): their ``requires_grad=False`` and their missing gradients
            are not ``not_training``; every other cause of ``not_training`` is still found.

    Example:
        >>> diagnoser = DynamicsDiagnoser(stop_on=["nonfinite"])
        >>> net = nn.Linear(2, 2)
        >>> diagnoser.attach(net, [torch.optim.SGD(net.parameters(), lr=0.1)])
        []
        >>> diagnoser.observe_loss(torch.tensor(float("nan")))
        >>> [f.kind for f in diagnoser.end_epoch(epoch=0, step=1)]
        ['nonfinite']
        >>> diagnoser.should_stop()
        (True, 'nonfinite (epoch 0, step 1): training loss = nan (not finite). Try: ...')
    """

    def __init__(
        self,
        thresholds: DiagnosisThresholds | None = None,
        stop_on: Iterable[str] = (),
        ignore: Iterable[str] = (),
        frozen: Iterable[str] = (),
    ) -> None:
        self.thresholds = thresholds if thresholds is not None else DiagnosisThresholds()
        if not isinstance(self.thresholds, DiagnosisThresholds):
            raise ValueError(f"`thresholds` must be a DiagnosisThresholds, got {type(self.thresholds).__name__}.")
        self.stop_on = _check_kinds("stop_on", stop_on)
        self.ignore = _check_kinds("ignore", ignore)
        frozen = [frozen] if isinstance(frozen, str) else list(frozen)
        if not all(isinstance(name, str) and name for name in frozen):
            raise ValueError(f"`frozen` must be module or parameter names, got {frozen!r:.120}.")
        self.frozen = tuple(frozen)
        self.findings: list[Finding] = []
        self.history: list[dict[str, float]] = []  # per epoch: the run-wide numbers the rules read
        self._first_loss: Tensor | None = None
        self._loss: Tensor | None = None  # [sum, sum of squares, count] of the epoch's step losses
        self._io: Tensor | None = None  # [sum x^2, sum x, n, repeated, probability, forwards]
        self._previous_input: Tensor | None = None
        self._forwards_this_epoch = 0
        self._handles: list[RemovableHandle] = []
        self._val_rises = 0
        self._pending_model: list[Finding] = []
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None

    # ------------------------------------------------------------------ attach

    def attach(
        self,
        model: nn.Module,
        optimizers: Iterable[torch.optim.Optimizer] = (),
        layer_names: Sequence[str] = (),
        loss_from_output: bool = False,
    ) -> list[Finding]:
        """Check the model and its optimizers (``not_training``) and hook its root forward; the findings so far.

        Args:
            model: the model whose root forward is the training forward.
            optimizers: the optimizers (their parameter groups are checked against the model's parameters).
            layer_names: the tracker's watched layers, to name a frozen parameter by its layer.
            loss_from_output: read the training loss from the outputs of the training forwards (``output["loss"]``
                or ``output.loss``, as ``transformers`` models return it) instead of :meth:`observe_loss`.
        """
        self.detach()
        self._handles.append(model.register_forward_pre_hook(self._see_input, with_kwargs=True))
        self._handles.append(model.register_forward_hook(self._see_output))
        if loss_from_output:
            self._handles.append(model.register_forward_hook(self._see_loss))
        known = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
        unknown = [f for f in self.frozen if f not in known]
        if unknown:
            children = [n for n, _ in model.named_children()][:8]
            raise ValueError(
                f"`frozen` names {unknown}, which are no module or parameter of the {type(model).__name__}; its "
                f"modules are named from its children, e.g. {children}."
            )
        checked = model_findings(model, list(optimizers), layer_names, self.frozen)
        if checked is not None and not any(f.kind == "not_training" for f in self.findings):
            evidence, names, count = checked
            self._pending_model = [self._finding("not_training", names, 0, 0, evidence, count, 0.0)]
        return list(self.findings)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def _see_input(self, module: nn.Module, args: Any, kwargs: Mapping[str, Any]) -> None:
        if not module.training or self._forwards_this_epoch >= 2:
            return
        # The first tensor argument; with keyword inputs only (model(**batch)), the first floating-point batch of at
        # least two dimensions (not a scalar such as transformers' num_items_in_batch, nor the labels).
        tensors = [a for a in args if isinstance(a, Tensor)]
        tensors += [
            v
            for k, v in kwargs.items()
            if isinstance(v, Tensor) and v.is_floating_point() and v.ndim >= 2 and k != "labels"
        ]
        x = tensors[0] if tensors else None
        self._forwards_this_epoch += 1
        if x is None or not x.is_floating_point() or x.numel() == 0:
            return
        x = x.detach()
        flat = x.float().flatten()
        io = self._io_state(x.device)
        io[:3] += torch.stack([flat.square().sum(), flat.sum(), torch.tensor(float(flat.numel()), device=x.device)])
        previous = self._previous_input
        if previous is not None and previous.shape == x.shape:
            io[3] += (previous == x).all().float()
        self._previous_input = x.clone() if self._forwards_this_epoch == 1 else None

    @torch.no_grad()
    def _see_output(self, module: nn.Module, args: Any, output: Any) -> None:
        if not module.training or self._forwards_this_epoch > 2 or self._forwards_this_epoch == 0:
            return
        y = output if isinstance(output, Tensor) else output.get("logits") if isinstance(output, Mapping) else None
        y = y if isinstance(y, Tensor) else None
        if y is None or not y.is_floating_point() or y.ndim < 2 or y.shape[-1] < 2:
            return
        y = y.detach().float()
        rows = y.sum(-1)
        probability = (y.min() >= 0) & (y.max() <= 1) & ((rows - 1).abs().max() < 1e-3)
        io = self._io_state(y.device)
        io[4] += probability.float()
        io[5] += 1

    def _see_loss(self, module: nn.Module, args: Any, output: Any) -> None:
        if module.training:
            loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
            if isinstance(loss, Tensor) and loss.numel() == 1:
                self.observe_loss(loss)

    def _io_state(self, device: torch.device) -> Tensor:
        if self._io is None:
            self._io = torch.zeros(6, dtype=torch.float64, device=device)
        return self._io

    # ------------------------------------------------------------------ per step

    @torch.no_grad()
    def observe_loss(self, loss: Tensor | float | None) -> None:
        """The training loss of one step (a tensor stays on the device: no host synchronisation)."""
        if loss is None:
            return
        value = loss.detach().to(torch.float64).reshape(()) if isinstance(loss, Tensor) else torch.tensor(float(loss))
        if self._first_loss is None:
            self._first_loss = value.clone()
        if self._loss is None:
            self._loss = torch.zeros(3, dtype=torch.float64, device=value.device)
        self._loss += torch.stack([value, value.square(), torch.ones_like(value)])

    # ------------------------------------------------------------------ per epoch

    def packed(self) -> Tensor:
        """The epoch's device numbers, sum-reducible across processes: ``[loss sum, loss^2 sum, steps, first loss,
        input x^2 sum, input sum, input count, repeated, probability, forwards, 1]``."""
        loss = self._loss if self._loss is not None else torch.zeros(3, dtype=torch.float64)
        device = loss.device
        first = self._first_loss.reshape(1) if self._first_loss is not None else torch.full((1,), math.nan)
        io = self._io if self._io is not None else torch.zeros(6, dtype=torch.float64)
        return torch.cat(
            [
                loss.to(device),
                first.to(device, torch.float64),
                io.to(device),
                torch.ones(1, dtype=torch.float64, device=device),
            ]
        )

    def end_epoch(
        self,
        epoch: int,
        step: int,
        statistics: Any = None,
        val_loss: float | None = None,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> list[Finding]:
        """Close the epoch: read its numbers (one host synchronisation) and run the rules; the new findings.

        Args:
            epoch, step: where training is.
            statistics: the tracker's :class:`~lightning_dynamics.capture.layer_stats.LayerStatistics` (or None).
            val_loss: this epoch's validation loss, if any.
            reduce: sums a tensor across processes (one collective), so every process reads the same numbers.
        """
        packed = self.packed()
        if reduce is not None:
            packed = reduce(packed)
        values = packed.tolist()
        processes = max(values[-1], 1.0)
        loss_sum, loss_sq, steps, first = values[0], values[1], values[2], values[3] / processes
        x2, x1, n_x, repeated, probability, forwards = values[4:10]
        mean = loss_sum / steps if steps else math.nan
        variance = max(loss_sq / steps - mean * mean, 0.0) if steps else math.nan
        observation = EpochObservation(
            epoch=epoch,
            step=step,
            n_steps=int(steps),
            loss_mean=mean,
            loss_cv=math.sqrt(variance) / abs(mean)
            if steps and mean not in (0.0,) and math.isfinite(mean)
            else math.nan,
            first_loss=first,
            val_loss=math.nan if val_loss is None else float(val_loss),
            input_rms=math.sqrt(x2 / n_x) if n_x else math.nan,
            input_std=math.sqrt(max(x2 / n_x - (x1 / n_x) ** 2, 0.0)) if n_x else math.nan,
            repeated_batch=repeated > 0,
            output_is_probability=forwards > 0 and probability > 0,
        )
        if statistics is not None:
            observation.layer_stats = statistics.last()
            observation.activation_names = list(statistics.activation_names)
            observation.layer_names = list(statistics.layer_names)
        self._loss = None
        self._io = None
        self._previous_input = None
        self._forwards_this_epoch = 0
        return self.update(observation)

    def close_epoch(
        self,
        epoch: int,
        step: int,
        statistics: Any = None,
        val_loss: float | None = None,
        reduce: Callable[[Tensor], Tensor] | None = None,
        agree: Callable[[bool], bool] | None = None,
        say: Callable[[str], None] | None = None,
        save_to: str | Path | None = None,
        owner: str | None = None,
        tracker: Any = None,
    ) -> bool:
        """An adapter's whole epoch end: :meth:`end_epoch`, each new finding said once, :meth:`decide_stop`, and the
        findings file written (:func:`save_findings`). Whether to stop the run.

        Args:
            epoch, step, statistics, val_loss, reduce: as :meth:`end_epoch`.
            agree: as :meth:`decide_stop` (a collective: every process calls this at every epoch's end); default
                with ``reduce``: a flag summed across processes, so one process's stop stops them all.
            say: prints a line on the first process (e.g. ``rank_zero_info``); each finding and the stop once.
            save_to: the findings file (on the first process only; ``None``: not written).
            owner: the adapter's name, at the start of each line (default: the class name).
            tracker: a :class:`~lightning_dynamics.DynamicsTracker`: its ``statistics`` are read, and the findings
                file goes beside its history (:func:`findings_path`; only the first process claims one).
        """
        if tracker is not None:
            statistics = tracker.statistics if statistics is None else statistics
            if save_to is None and tracker.history_path is not None:
                save_to = findings_path(tracker.history_path)
        owner = owner or type(self).__name__
        device = self.packed().device
        new = self.end_epoch(epoch, step, statistics=statistics, val_loss=val_loss, reduce=reduce)
        if agree is None and reduce is not None:
            sum_across = reduce

            def agree(flag: bool) -> bool:
                return bool(sum_across(torch.tensor([float(flag)], dtype=torch.float64, device=device))[0] > 0)

        stopped_before = self.stopped_epoch
        stop = self.decide_stop(epoch, agree, owner=owner)
        if say is not None:
            for finding in new:
                say(f"{owner}: {finding}")
            if stop and stopped_before is None and self.stop_reason is not None:
                say(self.stop_reason)
        if save_to is not None:
            self.save(save_to, warn=say)
        return stop

    def update(self, observation: EpochObservation) -> list[Finding]:
        """Run every rule on one epoch's observation; the findings of kinds not seen before (each kind once)."""
        th = self.thresholds
        o = observation
        stats = o.layer_stats
        new: list[Finding] = []
        record = {
            "epoch": float(o.epoch),
            "loss": o.loss_mean,
            "val_loss": o.val_loss,
            "weight_norm": _norm(stats.get("weight_norm", ())),
        }
        self.history.append(record)
        candidates: list[Finding] = list(self._pending_model)
        self._pending_model = []

        def add(kind: str, layers: Sequence[str], evidence: str, value: float, threshold: float) -> None:
            candidates.append(self._finding(kind, list(layers), o.step, o.epoch, evidence, value, threshold))

        # nonfinite: the loss, an activation scale, a gradient or a weight norm is NaN/Inf.
        grads = list(stats.get("grad_norm", ()))
        weights = list(stats.get("weight_norm", ()))
        if o.n_steps > 0 and not math.isfinite(o.loss_mean):
            add("nonfinite", [], f"training loss = {o.loss_mean:.3g} (not finite)", o.loss_mean, math.inf)
        bad = [
            n
            for n, v in (*zip(o.layer_names, weights, strict=False), *zip(o.layer_names, grads, strict=False))
            if math.isinf(v)
        ]
        if bad:
            add("nonfinite", sorted(set(bad)), "a weight or gradient norm is infinite", math.inf, math.inf)

        # not_training at run time: a watched layer whose parameters train gets no gradient, or does not move.
        ratios = list(stats.get("update_ratio", ()))
        stuck = [
            n
            for n, g, r, w in zip(o.layer_names, grads, ratios, weights, strict=False)
            if math.isfinite(w)
            and w > 0
            and ((r == 0.0 and g > 0) or (math.isnan(g) and _has(grads)))
            and not _under(n, self.frozen)
        ]
        if stuck:
            add(
                "not_training",
                stuck,
                f"{len(stuck)} watched layers received no gradient, or did not move although they had one",
                0.0,
                0.0,
            )

        # data_bug: inputs not normalised, constant, or the same batch twice in a row.
        if o.repeated_batch:
            add("data_bug", [], "the epoch's first two training batches were identical (a repeated batch)", 1.0, 0.0)
        elif math.isfinite(o.input_std) and o.input_std == 0.0:
            add("data_bug", [], "the inputs are constant (standard deviation 0)", 0.0, 0.0)
        elif math.isfinite(o.input_rms) and o.input_rms > th.input_rms_high:
            add(
                "data_bug",
                [],
                f"input root mean square = {o.input_rms:.3g} > {th.input_rms_high:g} (inputs not normalised)",
                o.input_rms,
                th.input_rms_high,
            )

        # wrong_output: the model returns probabilities.
        if o.output_is_probability:
            add(
                "wrong_output",
                [],
                "the model's outputs are rows of probabilities (non-negative, summing to 1): a softmax before the loss",
                1.0,
                0.0,
            )

        losses = [r["loss"] for r in self.history if math.isfinite(r["loss"])]
        first = o.first_loss
        progress = (first - o.loss_mean) / abs(first) if math.isfinite(first) and first != 0 else math.nan
        best = min(losses) if losses else math.nan

        # lr_too_high: divergence (the loss climbs above where it started) or oscillation without progress.
        max_update = _max(ratios)
        # A ratio to the first loss means nothing for a loss that starts at (or below) zero up to rounding.
        meaningful = math.isfinite(first) and first > _LOSS_RESOLUTION
        if math.isfinite(o.loss_mean) and meaningful and o.loss_mean > th.divergence * first:
            add(
                "lr_too_high",
                [],
                f"epoch mean training loss {o.loss_mean:.3g} > {th.divergence:g} x the first step's {first:.3g} "
                "(divergence)",
                o.loss_mean / first,
                th.divergence,
            )
        elif (
            o.epoch >= 1
            and meaningful
            and math.isfinite(o.loss_cv)
            and o.loss_cv > th.oscillation
            and math.isfinite(progress)
            and progress < 0.5
        ):
            add(
                "lr_too_high",
                [],
                f"step losses vary by {o.loss_cv:.2f} of their mean > {th.oscillation:g} while the loss fell by only "
                f"{progress:.0%} (oscillation)",
                o.loss_cv,
                th.oscillation,
            )
        elif (
            math.isfinite(max_update)
            and max_update > th.update_ratio_high
            and math.isfinite(progress)
            and progress < 0.5
        ):
            layers = [n for n, r in zip(o.layer_names, ratios, strict=False) if r > th.update_ratio_high]
            add(
                "lr_too_high",
                layers,
                f"update-to-weight ratio {max_update:.3g} > {th.update_ratio_high:g} per step while the loss fell by "
                f"only {progress:.0%}",
                max_update,
                th.update_ratio_high,
            )

        # exploding / vanishing gradients: a gradient norm too large, or the first layer's far from the last's.
        with_grad = [(n, g) for n, g in zip(o.layer_names, grads, strict=False) if math.isfinite(g) and g > 0]
        if with_grad:
            biggest = max(g for _, g in with_grad)
            ratio = with_grad[0][1] / with_grad[-1][1]
            if biggest > th.exploding_grad_norm:
                layers = [n for n, g in with_grad if g > th.exploding_grad_norm]
                add(
                    "exploding_gradients",
                    layers,
                    f"gradient norm {biggest:.3g} > {th.exploding_grad_norm:g}",
                    biggest,
                    th.exploding_grad_norm,
                )
            elif len(with_grad) >= 2 and ratio > 1.0 / th.vanishing_ratio:
                add(
                    "exploding_gradients",
                    [with_grad[0][0]],
                    f"first layer's gradient norm / last layer's = {ratio:.3g} > {1.0 / th.vanishing_ratio:g}",
                    ratio,
                    1.0 / th.vanishing_ratio,
                )
            if len(with_grad) >= 2 and ratio < th.vanishing_ratio:
                small = [n for n, g in with_grad if g < th.vanishing_ratio * biggest]
                add(
                    "vanishing_gradients",
                    small,
                    f"first layer's gradient norm / last layer's = {ratio:.3g} < {th.vanishing_ratio:g}",
                    ratio,
                    th.vanishing_ratio,
                )

        # dying_relu / saturation: the fraction of inactive units of an activation layer (SageMaker: 50%).
        for kind, stat, limit in (
            ("dying_relu", "dead_frac", th.dead_frac),
            ("saturation", "saturated_frac", th.saturated_frac),
        ):
            values = [(n, v) for n, v in zip(o.activation_names, stats.get(stat, ()), strict=False) if math.isfinite(v)]
            flagged = [(n, v) for n, v in values if v > limit]
            if flagged:
                worst = max(v for _, v in flagged)
                noun = "dead" if kind == "dying_relu" else "saturated"
                add(
                    kind,
                    [n for n, _ in flagged],
                    f"{worst:.0%} of a layer's units {noun} > {limit:.0%}",
                    worst,
                    limit,
                )

        # Slow progress after `patience_epochs`: weights shrinking (weight decay) or tiny updates (learning rate).
        if o.epoch + 1 >= th.patience_epochs and math.isfinite(progress) and progress < th.progress:
            norms = [r["weight_norm"] for r in self.history if math.isfinite(r["weight_norm"])]
            shrink = norms[-1] / norms[0] if len(norms) >= 2 and norms[0] > 0 else math.nan
            if math.isfinite(shrink) and shrink < th.weight_shrink:
                add(
                    "weight_decay_too_strong",
                    [],
                    f"weight norm fell to {shrink:.0%} of its start (< {th.weight_shrink:.0%}) while the loss fell by "
                    f"only {progress:.0%}",
                    shrink,
                    th.weight_shrink,
                )
            elif math.isfinite(max_update) and max_update < th.update_ratio_low:
                add(
                    "lr_too_low",
                    [],
                    f"largest update-to-weight ratio {max_update:.3g} < {th.update_ratio_low:g} and the loss fell by "
                    f"only {progress:.0%} < {th.progress:.0%} in {o.epoch + 1} epochs",
                    max_update,
                    th.update_ratio_low,
                )
            elif not math.isfinite(max_update):
                add(
                    "lr_too_low",
                    [],
                    f"the loss fell by only {progress:.0%} < {th.progress:.0%} in {o.epoch + 1} epochs",
                    progress,
                    th.progress,
                )

        # label_noise: validation loss rises above its minimum while the training loss keeps falling.
        vals = [r["val_loss"] for r in self.history if math.isfinite(r["val_loss"])]
        if len(vals) >= 2 and math.isfinite(o.val_loss):
            rise = o.val_loss / min(vals) - 1.0
            falling = math.isfinite(o.loss_mean) and o.loss_mean <= best * (1.0 + 1e-9)
            self._val_rises = self._val_rises + 1 if rise > th.overfit_rise and falling else 0
            if self._val_rises >= th.patience_epochs:
                add(
                    "label_noise",
                    [],
                    f"validation loss {rise:.0%} above its minimum (> {th.overfit_rise:.0%}) for {self._val_rises} "
                    "epochs while the training loss kept falling (memorisation)",
                    rise,
                    th.overfit_rise,
                )

        seen = {f.kind for f in self.findings}
        for finding in candidates:
            if finding.kind in seen or finding.kind in self.ignore:
                continue
            seen.add(finding.kind)
            self.findings.append(finding)
            new.append(finding)
        return new

    def _finding(
        self, kind: str, layers: list[str], step: int, epoch: int, evidence: str, value: float, threshold: float
    ) -> Finding:
        return Finding(kind, layers, step, epoch, evidence, ACTIONS[kind], float(value), float(threshold))

    # ------------------------------------------------------------------ decisions

    def should_stop(self) -> tuple[bool, str | None]:
        """Whether a finding of a ``stop_on`` kind was made, and the first such finding in words."""
        for finding in self.findings:
            if finding.kind in self.stop_on:
                return True, str(finding)
        return False, None

    def decide_stop(self, epoch: int, agree: Callable[[bool], bool] | None = None, owner: str = "diagnosis") -> bool:
        """Whether to end the run now; the first time, :attr:`stopped_epoch` and :attr:`stop_reason` are set.

        Args:
            epoch: the epoch that just ended.
            agree: ``True`` on every process when any process says ``True`` (e.g. Lightning's
                ``strategy.reduce_boolean_decision(flag, all=False)``); a collective, so every process calls this
                at every epoch's end.
            owner: who stops, for the reason's words (``"DynamicsDiagnosis"``).
        """
        should, reason = self.should_stop()
        stop = bool(agree(should)) if agree is not None else should
        if stop and self.stopped_epoch is None:
            self.stopped_epoch = epoch
            self.stop_reason = (
                f"{owner} stopped training at epoch {epoch}: "
                f"{reason or 'a finding of another process (reduce_boolean_decision)'}"
            )
        return stop

    def logged_values(self) -> dict[str, float]:
        """``{"diagnosis/<kind>": 1.0 once the kind was found, else 0.0}`` for every kind (the logged keys)."""
        found = {f.kind for f in self.findings}
        return {f"diagnosis/{kind}": float(kind in found) for kind in FINDING_KINDS}

    def save(self, path: str | Path, warn: Callable[[str], None] | None = None) -> Path | None:
        """Write the findings file (:func:`save_findings`); never raises: a failure warns and returns ``None``."""
        try:
            return save_findings(path, self.findings, self.stop_reason, self.stopped_epoch, sorted(self.ignore))
        except OSError as error:
            (warn or _print)(f"could not write the diagnosis findings to {path}: {error}")
            return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "findings": [f.to_dict() for f in self.findings],
            "history": [dict(r) for r in self.history],
            "first_loss": None if self._first_loss is None else float(self._first_loss),
            "val_rises": self._val_rises,
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict`; every field is checked first and a ValueError names the wrong one."""
        where = "the diagnosis state"
        if not isinstance(state, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(state).__name__}.")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{where}: `version` must be {STATE_VERSION}, got {state.get('version')!r}.")
        raw = state.get("findings")
        if not isinstance(raw, list):
            raise ValueError(f"{where}: `findings` must be a list, got {type(raw).__name__}.")
        findings = [Finding.from_dict(f, f"{where}: finding {i}") for i, f in enumerate(raw)]
        history = state.get("history")
        if not isinstance(history, list) or not all(
            isinstance(r, dict) and all(isinstance(v, (int, float)) for v in r.values()) for r in history
        ):
            raise ValueError(f"{where}: `history` must be a list of dicts of numbers, got {history!r:.80}.")
        first = state.get("first_loss")
        if first is not None and not isinstance(first, (int, float)):
            raise ValueError(f"{where}: `first_loss` must be a number or None, got {first!r}.")
        val_rises = check_int("val_rises", state.get("val_rises", 0), 0)
        stopped = state.get("stopped_epoch")
        if stopped is not None:
            check_int("stopped_epoch", stopped, 0)
        reason = state.get("stop_reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError(f"{where}: `stop_reason` must be a string or None, got {reason!r:.80}.")
        self.findings = findings
        self.stopped_epoch, self.stop_reason = stopped, reason
        self.history = [dict(r) for r in history]
        self._first_loss = None if first is None else torch.tensor(float(first), dtype=torch.float64)
        self._val_rises = int(val_rises or 0)


def _check_kinds(name: str, kinds: Iterable[str]) -> frozenset[str]:
    if isinstance(kinds, str):
        kinds = [kinds]
    chosen = list(kinds)
    unknown = [k for k in chosen if k not in FINDING_KINDS]
    if unknown:
        raise ValueError(f"`{name}` must name kinds from {FINDING_KINDS}, got {unknown}.")
    return frozenset(chosen)


def _norm(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.sqrt(sum(v * v for v in finite)) if finite else math.nan


def _max(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) if finite else math.nan


def _has(values: Sequence[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def _print(message: str) -> None:
    print(message)


def findings_path(history_path: str | Path) -> Path:
    """The findings file beside a monitor's history: ``<prefix>_history[-vN].pt`` -> ``<prefix>_diagnosis[-vN].json``.

    Example:
        >>> findings_path("logs/version_0/dynamics_history-v1.pt").name
        'dynamics_diagnosis-v1.json'
    """
    path = Path(history_path)
    stem = path.stem.replace("_history", "_diagnosis", 1) if "_history" in path.stem else f"{path.stem}_diagnosis"
    return path.with_name(f"{stem}.json")


def _json_number(value: float) -> float | str:
    # JSON has no NaN or infinity: they are written as the strings "nan", "inf", "-inf" and read back by float().
    return value if math.isfinite(value) else str(value)


def save_findings(
    path: str | Path,
    findings: Sequence[Finding],
    stop_reason: str | None = None,
    stopped_epoch: int | None = None,
    ignored: Sequence[str] = (),
) -> Path:
    """Write a run's findings as JSON, atomically (a temporary file renamed onto ``path``); ``path``.

    The diagnosis writes this file beside the monitor's history (:func:`findings_path`) and the report reads it
    (:func:`load_findings`): the findings flow downstream to the report, and the history file stays the monitor's.
    An empty ``findings`` is written too: "the diagnosis ran and found nothing" differs from "no diagnosis".
    """
    path = Path(path)
    record = {
        "format": FINDINGS_FORMAT,
        "findings": [
            {**f.to_dict(), "value": _json_number(f.value), "threshold": _json_number(f.threshold)} for f in findings
        ],
        "stop_reason": stop_reason,
        "stopped_epoch": stopped_epoch,
        "ignored": list(ignored),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class DiagnosisRecord:
    """A findings file as read by :func:`load_findings`.

    Attributes:
        findings: the findings, in the order first seen.
        stop_reason: why the diagnosis ended the run (``None`` if it did not).
        stopped_epoch: the epoch it ended the run at.
        ignored: the kinds the run ignored.
        path: the file read.
    """

    findings: list[Finding]
    stop_reason: str | None = None
    stopped_epoch: int | None = None
    ignored: list[str] = field(default_factory=list)
    path: Path | None = None


def load_findings(path: str | Path) -> DiagnosisRecord:
    """Read a findings file of :func:`save_findings`; ValueError names the file and what is wrong in it."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a readable findings file (truncated or not JSON): {error}") from error
    if not isinstance(record, dict) or record.get("format") != FINDINGS_FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path}: `format` must be {FINDINGS_FORMAT}, got {got!r}.")
    raw = record.get("findings")
    if not isinstance(raw, list):
        raise ValueError(f"{path}: `findings` must be a list, got {type(raw).__name__}.")
    findings = []
    for i, item in enumerate(raw):
        finding = Finding.from_dict(item, f"{path}: finding {i}")
        try:
            finding.value, finding.threshold = float(finding.value), float(finding.threshold)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: finding {i}: `value` and `threshold` must be numbers: {error}") from error
        findings.append(finding)
    reason, stopped = record.get("stop_reason"), record.get("stopped_epoch")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"{path}: `stop_reason` must be a string or null, got {reason!r:.80}.")
    if stopped is not None:
        check_int("stopped_epoch", stopped, 0)
    ignored = record.get("ignored", [])
    if not isinstance(ignored, list) or not all(isinstance(k, str) for k in ignored):
        raise ValueError(f"{path}: `ignored` must be a list of kinds, got {ignored!r:.80}.")
    return DiagnosisRecord(findings, reason, stopped, list(ignored), path)
