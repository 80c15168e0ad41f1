"""The fault zoo: every finding kind injected at two severities beside matched clean runs, traces recorded once.

Each run trains one (task, architecture, seed) with one injected fault (or none) under a ``DynamicsMonitor`` and a
``DynamicsDiagnosis``, and records a trace that every detector of :mod:`benchmarks.diagnosis_baselines` reads post
hoc: the training loss of every step, the smallest mean absolute gradient of a weight tensor at every step (what
SageMaker's VanishingGradient reads) and whether a gradient was non-finite, and per epoch the training and validation
loss and accuracy with every ``dynamics/*`` key in ``trainer.callback_metrics`` (the per-layer summaries
``dynamics/stats/*`` and the paper's dynamical measures). The diagnosis's own findings are recorded beside the trace.

Tasks: ``digits`` (scikit-learn digits, 10 classes, 8x8), ``pairs`` (the 2-class task "3 vs 8" from the same
images and split), and, for the MLP only, ``blobs`` (4 Gaussian blobs) and ``circles`` (two noisy concentric
circles), 2-D features as in AUTOTRAINER's synthetic tasks. Architectures: ``mlp`` and ``cnn`` (the tuning ones of
``benchmarks/diagnosis.py``), ``bncnn`` (6 convolutions with BatchNorm), ``resnet`` (timm ResNet-18, channels
8-64) and ``vit`` (a 4-block ViT, patch 2, width 48). The thresholds were tuned on mlp and cnn at seeds 100 and 101;
bncnn, resnet and vit at seeds 102-106 judge them.

The recorded runs (three processes in parallel, one thread each, on a shared 2-core machine; about 70 minutes):

    python benchmarks/diagnosis_zoo.py --archs bncnn resnet vit --tasks pairs digits --seeds 102 103 104 105 106 \
        --out benchmarks/results/diagnosis_zoo_heldout.jsonl
    python benchmarks/diagnosis_zoo.py --archs mlp cnn --tasks digits pairs blobs circles --seeds 100 101 \
        --out benchmarks/results/diagnosis_zoo_tuning.jsonl
    python benchmarks/diagnosis_zoo.py --archs mlp --tasks blobs circles --seeds 102 103 104 105 106 \
        --out benchmarks/results/diagnosis_zoo_tuning.jsonl
    python benchmarks/diagnosis_baselines.py benchmarks/results/diagnosis_zoo_*.jsonl.gz \
        --table benchmarks/results/diagnosis_zoo.md

(the held-out seeds were split over the files ``diagnosis_zoo_heldout{,_c,_d}.jsonl``, one per process; they are
kept gzipped, ``.jsonl.gz``, which the table reads as they are). Every finished run is appended to ``--out`` (JSON
lines; a run already there is skipped), so a cut run still yields a table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.diagnosis import DiagnosisModule, sgd
from benchmarks.kit import quiet_trainer
from benchmarks.kit.data import _digits_split
from lightning_dynamics import DynamicsMonitor
from lightning_dynamics.callbacks.diagnosis import DynamicsDiagnosis

#: Each fault condition and the kind it should be named as; ``clean`` and ``clean_small`` are the matched clean
#: runs (``clean_small``: the label-noise setting, 300 training examples, Adam, 30 epochs, labels intact).
FAULTS: dict[str, str | None] = {
    "clean": None,
    "clean_small": None,
    "lr_high": "lr_too_high",
    "lr_low": "lr_too_low",
    "sigmoid": "vanishing_gradients",
    "large_init": "exploding_gradients",
    "negative_bias": "dying_relu",
    "tanh_large_init": "saturation",
    "noisy_labels": "label_noise",
    "raw_inputs": "data_bug",
    "repeated_batch": "data_bug",
    "bounded_output": "wrong_output",
    "frozen": "not_training",
    "missing_params": "not_training",
    "weight_decay": "weight_decay_too_strong",
    "nan_input": "nonfinite",
}
SEVERITIES = ("mild", "strong")
#: What each fault changes at each severity (the healthy run: SGD, lr 0.05, momentum 0.9, 6 epochs, batch 64).
SEVERITY_TEXT: dict[str, tuple[str, str]] = {
    "lr_high": ("lr 1.0", "lr 3.0"),
    "lr_low": ("lr 1e-4, no momentum", "lr 1e-5, no momentum"),
    "sigmoid": ("sigmoid activations (MLP/CNN: 6 layers)", "sigmoid activations, weights x0.5 (MLP/CNN: 10 layers)"),
    "large_init": ("weights and norm gains x3, lr 1e-4", "weights and norm gains x6, lr 1e-4"),
    "negative_bias": ("hidden biases -2", "hidden biases -4"),
    "tanh_large_init": ("tanh activations, weights and norm gains x4", "tanh, weights and norm gains x12"),
    "noisy_labels": ("30% of 300 labels redrawn", "60% of 300 labels redrawn"),
    "raw_inputs": ("inputs x4", "inputs x16"),
    "repeated_batch": ("the loader cycles 4 batches", "the loader repeats 1 batch"),
    "bounded_output": ("sigmoid on the logits", "softmax on the logits"),
    "frozen": ("first layer frozen", "every layer but the head frozen"),
    "missing_params": ("first layer in no optimizer", "only the head in the optimizer"),
    "weight_decay": ("weight_decay 0.1", "weight_decay 0.5"),
    "nan_input": ("one NaN example, met at 3/4 of epoch 0", "a NaN value in every example from mid-epoch 0"),
}
TASKS = ("digits", "pairs", "blobs", "circles")
ARCHS = ("mlp", "cnn", "bncnn", "resnet", "vit")
TUNING_ARCHS = ("mlp", "cnn")
HELD_OUT_ARCHS = ("bncnn", "resnet", "vit")
TUNING_SEEDS = (100, 101)
EPOCHS = 6
_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.LeakyReLU)


@dataclass
class TaskData:
    """A task's fixed split (the split does not depend on the run's seed) and its class count."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    num_classes: int
    image: bool


def task_data(task: str) -> TaskData:
    """The data of ``task`` (module docstring)."""
    if task == "digits":
        return TaskData(*_digits_split(0.25, 0), num_classes=10, image=True)
    if task == "pairs":
        train_x, train_y, val_x, val_y = _digits_split(0.25, 0)
        keep_train, keep_val = (train_y == 3) | (train_y == 8), (val_y == 3) | (val_y == 8)
        return TaskData(
            train_x[keep_train],
            (train_y[keep_train] == 8).long(),
            val_x[keep_val],
            (val_y[keep_val] == 8).long(),
            num_classes=2,
            image=True,
        )
    if task in ("blobs", "circles"):
        from sklearn.datasets import make_blobs, make_circles

        if task == "blobs":
            x, y = make_blobs(n_samples=1200, centers=4, n_features=2, cluster_std=1.5, random_state=0)
        else:
            x, y = make_circles(n_samples=1200, noise=0.1, factor=0.5, random_state=0)
        x = (x - x.mean(0)) / x.std(0)
        order = np.random.default_rng(0).permutation(len(y))
        x_t, y_t = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order], dtype=torch.long)
        cut = 900
        return TaskData(x_t[:cut], y_t[:cut], x_t[cut:], y_t[cut:], num_classes=int(y.max()) + 1, image=False)
    raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")


def mlp(act: type[nn.Module], depth: int, hidden: int, features: int, classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, classes))


def cnn(act: type[nn.Module], depth: int, channels: int, classes: int, batch_norm: bool = False) -> nn.Sequential:
    """``depth`` 3x3 convolutions (with BatchNorm: conv, BN, activation), a 2x max-pool after the 2nd (and 4th)."""
    layers: list[nn.Module] = []
    width = 1
    for index in range(depth):
        layers.append(nn.Conv2d(width, channels, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        layers.append(act())
        if index in (1, 3) and (batch_norm or index == 1):
            layers.append(nn.MaxPool2d(2))
        width = channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def build(arch: str, data: TaskData, act: type[nn.Module] = nn.ReLU, depth: int | None = None) -> nn.Module:
    """The architecture ``arch`` for ``data``; ``act`` and ``depth`` shape the MLP and CNNs (timm models: their own)."""
    classes = data.num_classes
    if arch == "mlp":
        return mlp(act, depth or 2, 64, int(data.train_x[0].numel()), classes)
    if not data.image:
        raise ValueError(f"`arch` {arch!r} needs an image task (digits, pairs); 2-D feature tasks take the mlp.")
    if arch == "cnn":
        return cnn(act, depth or 3, 16, classes)
    if arch == "bncnn":
        return cnn(act, depth or 6, 16, classes, batch_norm=True)
    from benchmarks.kit import build_model

    if arch == "resnet":
        model = build_model("resnet18", classes, 1, 8, channels=(8, 16, 32, 64))
    elif arch == "vit":
        model = build_model("vit_tiny_patch16_224", classes, 1, 8, patch_size=2, embed_dim=48, depth=4, num_heads=3)
    else:
        raise ValueError(f"`arch` must be one of {ARCHS}, got {arch!r}.")
    return model if act is nn.ReLU else swap_activations(model, act)


def swap_activations(model: nn.Module, act: type[nn.Module]) -> nn.Module:
    """Every ReLU-family or GELU activation module replaced by ``act()``."""
    for name, child in model.named_children():
        if isinstance(child, _ACTIVATIONS):
            setattr(model, name, act())
        else:
            swap_activations(child, act)
    return model


def _weighted(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None]


def scale_weights(model: nn.Module, gain: float) -> nn.Module:
    """Weights of linear and convolution layers, and the gains of normalisation layers (which undo a scaled
    convolution), multiplied by ``gain``."""
    with torch.no_grad():
        for module in _weighted(model) + _norms(model):
            module.weight.mul_(gain)
    return model


def set_hidden_bias(model: nn.Module, value: float) -> nn.Module:
    """Every bias but the output layer's (normalisation shifts included) set to ``value``."""
    with torch.no_grad():
        for module in _weighted(model)[:-1] + _norms(model):
            if module.bias is not None:
                module.bias.fill_(value)
    return model


@dataclass
class Setting:
    """One run's model, optimizer, data and budget."""

    model: nn.Module
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    train: tuple[Tensor, Tensor]
    epochs: int = EPOCHS
    loader: str = "shuffle"  # shuffle, repeat1, repeat4, nan_mid, nan_one


def setting(fault: str, severity: str, arch: str, task: str, seed: int) -> Setting:
    """The model, optimizer and data of one fault at one severity (``SEVERITY_TEXT``)."""
    if fault not in FAULTS:
        raise ValueError(f"`fault` must be one of {sorted(FAULTS)}, got {fault!r}.")
    if severity not in SEVERITIES:
        raise ValueError(f"`severity` must be one of {SEVERITIES}, got {severity!r}.")
    strong = severity == "strong"
    torch.manual_seed(seed)
    data = task_data(task)
    train = (data.train_x, data.train_y)
    if fault == "sigmoid":
        model = build(arch, data, nn.Sigmoid, depth=(10 if strong else 6) if arch in TUNING_ARCHS else None)
        return Setting(scale_weights(model, 0.5) if strong else model, sgd(0.05), train)
    if fault == "large_init":
        model = build(arch, data, nn.ReLU, depth=6 if arch in TUNING_ARCHS else None)
        return Setting(scale_weights(model, 6.0 if strong else 3.0), sgd(1e-4, 0.0), train)
    if fault == "tanh_large_init":
        return Setting(scale_weights(build(arch, data, nn.Tanh), 12.0 if strong else 4.0), sgd(0.01), train)
    if fault == "negative_bias":
        model = swap_activations(build(arch, data), nn.ReLU)  # the ViT's GELUs become ReLUs
        return Setting(set_hidden_bias(model, -4.0 if strong else -2.0), sgd(0.05), train)
    if fault in ("noisy_labels", "clean_small"):
        g = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(train[1]), generator=g)[:300]
        x, y = train[0][keep], train[1][keep].clone()
        if fault == "noisy_labels":
            flip = torch.rand(len(y), generator=g) < (0.6 if strong else 0.3)
            y[flip] = torch.randint(0, data.num_classes, (int(flip.sum()),), generator=g)
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=3e-3)  # noqa: E731
        return Setting(build(arch, data), adam, (x, y), epochs=30)
    model = build(arch, data)
    if fault == "lr_high":
        return Setting(model, sgd(3.0 if strong else 1.0), train)
    if fault == "lr_low":
        return Setting(model, sgd(1e-5 if strong else 1e-4, 0.0), train)
    if fault == "weight_decay":
        return Setting(model, sgd(0.05, 0.9, weight_decay=0.5 if strong else 0.1), train)
    if fault == "bounded_output":
        return Setting(nn.Sequential(model, nn.Softmax(dim=-1) if strong else nn.Sigmoid()), sgd(0.05), train)
    if fault == "raw_inputs":
        return Setting(model, sgd(0.05), (train[0] * (16.0 if strong else 4.0), train[1]))
    if fault == "frozen":
        weighted = _weighted(model)
        for module in weighted[:-1] if strong else weighted[:1]:
            module.requires_grad_(False)
        if strong:
            for module in _norms(model):
                module.requires_grad_(False)
        return Setting(model, lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05), train)
    if fault == "missing_params":
        weighted = _weighted(model)
        if strong:
            chosen = list(weighted[-1].parameters())
        else:
            left_out = {id(p) for p in weighted[0].parameters()}
            chosen = [p for p in model.parameters() if id(p) not in left_out]
        return Setting(model, lambda m: torch.optim.SGD(chosen, lr=0.05, momentum=0.9), train)
    if fault == "repeated_batch":
        return Setting(model, sgd(0.05), train, loader="repeat1" if strong else "repeat4")
    if fault == "nan_input":
        return Setting(model, sgd(0.05), train, loader="nan_mid" if strong else "nan_one")
    return Setting(model, sgd(0.05), train)


class _NanAt(torch.utils.data.Dataset):
    """The examples, with one NaN value in those whose index is in ``corrupt`` (a corrupt shard)."""

    def __init__(self, x: Tensor, y: Tensor, corrupt: range) -> None:
        self.x, self.y, self.corrupt = x, y, corrupt

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = self.x[index]
        if index in self.corrupt:
            x = x.clone()
            x.view(-1)[0] = math.nan
        return x, self.y[index]


def loaders(run: Setting, val: tuple[Tensor, Tensor], seed: int, batch_size: int = 64) -> tuple[Any, DataLoader]:
    train_x, train_y = run.train
    val_loader = DataLoader(TensorDataset(*val), batch_size=256)
    steps = max(1, len(train_y) // batch_size)
    if run.loader in ("repeat1", "repeat4"):  # a loader bug: the same few batches over and over
        distinct = 1 if run.loader == "repeat1" else 4
        index = torch.arange(steps * batch_size) % (distinct * batch_size)
        return DataLoader(TensorDataset(train_x[index], train_y[index]), batch_size=batch_size), val_loader
    if run.loader == "nan_mid":
        dataset: Any = _NanAt(train_x, train_y, range(len(train_y) // 2, len(train_y)))
        return DataLoader(dataset, batch_size=batch_size, shuffle=False), val_loader
    if run.loader == "nan_one":
        # shuffle=False: the corrupt example is met at 3/4 of every epoch, first in epoch 0
        at = (3 * len(train_y)) // 4
        return DataLoader(_NanAt(train_x, train_y, range(at, at + 1)), batch_size=batch_size), val_loader
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True, generator=g), val_loader


class ZooModule(DiagnosisModule):
    """:class:`benchmarks.diagnosis.DiagnosisModule` that also logs ``train_acc`` and ``val_acc``."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        self.log("train_acc", (logits.argmax(-1) == y).float().mean(), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())


class TraceRecorder(pl.Callback):
    """Records what the post-hoc detectors read (module docstring): per step and per epoch, host floats."""

    def __init__(self, prefix: str = "dynamics") -> None:
        self.prefix = prefix
        self.step_loss: list[float] = []
        self.step_grad_min: list[float] = []  # smallest mean |g| of a weight tensor (matrix or kernel)
        self.step_grad_finite: list[bool] = []
        self.epochs: list[dict[str, float]] = []
        self.steps_per_epoch: list[int] = []
        self._epoch_start = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = len(self.step_loss)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None and p.ndim > 1]
        if not grads:
            self.step_grad_min.append(math.nan)
            self.step_grad_finite.append(True)
            return
        means = torch.stack([g.detach().abs().mean() for g in grads])
        finite = bool(torch.isfinite(means).all())
        self.step_grad_min.append(float(means.min()) if finite else math.nan)
        self.step_grad_finite.append(finite)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.step_loss.append(float(loss) if isinstance(loss, Tensor) else math.nan)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row: dict[str, float] = {}
        for key, value in trainer.callback_metrics.items():
            if key in ("train_loss", "train_acc", "val_loss", "val_acc") or key.startswith(f"{self.prefix}/"):
                if isinstance(value, Tensor) and value.numel() == 1:
                    row[key] = float(value)
        self.epochs.append(row)
        self.steps_per_epoch.append(len(self.step_loss) - self._epoch_start)


def run_case(fault: str, severity: str, arch: str, task: str, seed: int, epochs: int | None = None) -> dict[str, Any]:
    """Train one case; its trace, the diagnosis's findings and the setting, as one JSON-able record."""
    torch.set_num_threads(1)
    pl.seed_everything(seed, verbose=False)
    run = setting(fault, severity, arch, task, seed)
    data = task_data(task)
    train, val = loaders(run, (data.val_x, data.val_y), seed)
    monitor = DynamicsMonitor(
        points_per_epoch=4,
        null_surrogates=None,
        compute_phase_integration=False,
        save_history=False,
        verbose=False,
        log_dashboard=False,
    )
    diagnosis = DynamicsDiagnosis()
    recorder = TraceRecorder()
    budget = epochs or run.epochs
    trainer = quiet_trainer(
        max_epochs=budget, accelerator="cpu", callbacks=[monitor, recorder, diagnosis], limit_val_batches=None
    )
    start = time.perf_counter()
    trainer.fit(ZooModule(run.model, run.optimizer), train_dataloaders=train, val_dataloaders=val)
    return {
        "fault": fault,
        "severity": "none" if FAULTS[fault] is None else severity,
        "truth": FAULTS[fault],
        "arch": arch,
        "task": task,
        "seed": seed,
        "epochs": budget,
        "steps_per_epoch": recorder.steps_per_epoch,
        "step_loss": recorder.step_loss,
        "step_grad_min": recorder.step_grad_min,
        "step_grad_finite": recorder.step_grad_finite,
        "epoch_metrics": recorder.epochs,
        "findings": [f.to_dict() for f in diagnosis.findings],
        "seconds": round(time.perf_counter() - start, 2),
    }


def cases(
    archs: list[str], tasks: list[str], seeds: list[int], faults: list[str], severities: list[str]
) -> list[tuple]:
    """Every (fault, severity, arch, task, seed) to run: clean runs once, 2-D tasks with the MLP only."""
    chosen = []
    for seed in seeds:
        for task in tasks:
            for arch in archs:
                if task in ("blobs", "circles") and arch != "mlp":
                    continue
                for fault in faults:
                    for severity in severities if FAULTS[fault] is not None else severities[:1]:
                        chosen.append((fault, severity, arch, task, seed))
    return chosen


def _key(record: dict[str, Any]) -> tuple:
    return (record["fault"], record["severity"], record["arch"], record["task"], record["seed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=list(HELD_OUT_ARCHS), choices=ARCHS)
    parser.add_argument("--tasks", nargs="+", default=["digits"], choices=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[102])
    parser.add_argument("--faults", nargs="+", default=list(FAULTS), choices=list(FAULTS))
    parser.add_argument("--severities", nargs="+", default=list(SEVERITIES), choices=SEVERITIES)
    parser.add_argument("--epochs", type=int, default=None, help="override every run's budget (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diagnosis_zoo.jsonl"))
    parser.add_argument("--table", type=Path, default=None, help="write the markdown table here after the runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {_key(json.loads(line)) for line in args.out.read_text().splitlines() if line.strip()}
    for case in cases(args.archs, args.tasks, args.seeds, args.faults, args.severities):
        severity = case[1] if FAULTS[case[0]] is not None else "none"
        if (case[0], severity, *case[2:]) in done:
            continue
        record = run_case(*case, epochs=args.epochs)
        with args.out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        kinds = [f["kind"] for f in record["findings"]]
        print(f"{case[3]:7s} {case[2]:6s} {case[4]} {case[0]:16s} {severity:6s} {record['seconds']:6.1f}s -> {kinds}")
    if args.table is not None:
        from benchmarks.diagnosis_baselines import write_table

        write_table(args.out, args.table)


if __name__ == "__main__":
    main()
