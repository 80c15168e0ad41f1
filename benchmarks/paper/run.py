"""The paper's experiments (arXiv:2604.09716) by one command, with seeds, nulls and a width control.

Trains every (architecture, task, seed) of a preset with a :class:`~lightning_dynamics.DynamicsMonitor` (the
default ``rms`` summary, one sample point per epoch as in the paper), writes per-run histories and metrics under
``--out/runs``, then the summary of the three findings and, in presets that have it, the early-stopping
comparison (``findings.py``, ``stopping.py``) under ``--out``.

Presets (``--scale``):

- ``tiny``: the smoke setting (one small CNN, the four offline tasks, 2 seeds, 22 epochs of 2 batches; a
  3-seed, 4-epoch stopping study).
- ``cpu``: offline stand-ins in a 2x2 of input width x classes (``digits`` 8x8/10, ``digits16`` 8x16/10,
  ``pairs8`` 8x8/100, ``pairs`` 8x16/100; :data:`TASKS`), three architectures made small (timm ResNet-18 at
  1/8 width, a 4-block timm ViT with 4x4 patches, a plain 8-layer CNN, VGG-like), 5 seeds, 40 epochs, and the
  findings (60 runs; 21 minutes with ``--workers 2`` on an idle 2-core machine, benchmarks/paper/README.md).
- ``cpu-full``: ``cpu`` and the early-stopping study (``stopping.py``: SmallCNN on digits with a test split,
  14 seeds; about 4 minutes more).
- ``full``: the paper's set-up on a GPU with CIFAR on disk (``--data-root``): ResNet-18, DenseNet-121,
  MobileNetV2, VGG-16-BN and a pretrained ViT-S/16 (``--vit-weights``, a local weights file) on CIFAR-10 and
  CIFAR-100, 5 seeds, 50 epochs (no stopping study).

Run: ``.venv/bin/python -m benchmarks.paper.run --scale cpu --out runs/paper_cpu --workers 2``.
Rerunning reuses finished runs (delete ``--out/runs/<run>`` to redo one); ``--analyse-only`` skips training.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Arch:
    """One architecture of a preset: a timm/torchvision name (or ``"small_cnn"``, ``"deep_cnn"``) and its training."""

    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    pretrained: bool = False  # load --vit-weights


@dataclass(frozen=True)
class Preset:
    archs: dict[str, Arch]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    batch_size: int = 64
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    #: The early-stopping study (``stopping.run_study`` keyword arguments: seeds, tune_seeds, epochs, ...);
    #: None: not run with this preset.
    stopping: dict[str, Any] | None = None


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        archs={"cnn": Arch("small_cnn", optimizer="adamw", lr=3e-3, weight_decay=0.0)},
        tasks=("digits", "digits16", "pairs8", "pairs"),
        seeds=(0, 1),
        epochs=22,
        limit_train_batches=2,
        limit_val_batches=1,
        stopping=dict(seeds=(0, 1, 2), tune_seeds=(0,), epochs=4, limit_train_batches=4),
    ),
    "cpu": Preset(
        archs={
            "resnet18": Arch("resnet18", dict(channels=(8, 16, 32, 64))),
            # MobileNetV2-0.35 did not learn 8x8 digits here (SGD 0.05 diverged, AdamW 1e-3 stayed at chance):
            # the plain deep CNN stands in for the paper's VGG (conv-BN-ReLU stacks without shortcuts).
            "vgg_like": Arch("deep_cnn", lr=0.02),
            "vit": Arch(
                "vit_tiny_patch16_224",
                dict(patch_size=4, depth=4, embed_dim=64, num_heads=4),
                optimizer="adamw",
                lr=1e-3,
                weight_decay=0.05,
            ),
        },
        tasks=("digits", "digits16", "pairs8", "pairs"),
        seeds=(0, 1, 2, 3, 4),
        epochs=40,
    ),
    # `cpu-full` (below): `cpu` and the early-stopping study.
    "full": Preset(
        archs={
            "resnet18": Arch("resnet18"),
            "densenet121": Arch("densenet121"),
            "mobilenetv2": Arch("mobilenetv2_100"),
            "vgg16": Arch("vgg16_bn", lr=0.02),
            "vit_pretrained": Arch(
                "vit_small_patch16_224",
                dict(patch_size=4),
                optimizer="adamw",
                lr=1e-4,
                weight_decay=0.05,
                pretrained=True,
            ),
        },
        tasks=("cifar10", "cifar100"),
        seeds=(0, 1, 2, 3, 4),
        epochs=50,
        batch_size=128,
    ),
}
PRESETS["cpu-full"] = replace(PRESETS["cpu"], stopping=dict(seeds=tuple(range(14)), tune_seeds=(0, 1, 2, 3), epochs=40))
#: Task name -> (number of classes, input channels, image size). The offline tasks form a 2x2 of input width
#: x classes: ``digits`` (8x8, 10; the stand-in for CIFAR-10), ``digits16`` (the same digits zero-padded to
#: 8x16), ``pairs8`` (two real digits each halved in width, 8x8, 100 classes) and ``pairs`` (two digits side by
#: side, 8x16, 100 classes; the stand-in for CIFAR-100).
TASKS: dict[str, tuple[int, int, tuple[int, int]]] = {
    "digits": (10, 1, (8, 8)),
    "digits16": (10, 1, (8, 16)),
    "pairs8": (100, 1, (8, 8)),
    "pairs": (100, 1, (8, 16)),
    "cifar10": (10, 3, (32, 32)),
    "cifar100": (100, 3, (32, 32)),
}


def run_name(arch: str, task: str, seed: int) -> str:
    return f"{arch}_{task}_seed{seed}"


def paper_monitor(**kwargs: Any) -> Any:
    """A ``DynamicsMonitor`` that does not save on its own; by epoch it samples once per epoch (the paper's design).

    Monitors that can sample several points per epoch (``points_per_epoch``) are pinned to one, so a run's
    history has one point per epoch, as in the paper (T = epochs), whatever the package's default is; monitors
    that draw surrogate null bands at every sample point (``null_surrogates``) do not (the analysis draws its
    own nulls once per run).
    """
    import inspect

    from lightning_dynamics import DynamicsMonitor
    from lightning_dynamics.tracking.options import tracker_from_options

    kwargs = {"verbose": False, "save_history": False, **kwargs}
    # The monitor takes the tracker's options through **options: their names are the builder's parameters.
    parameters = inspect.signature(tracker_from_options).parameters
    if "every_n_steps" not in kwargs and "points_per_epoch" in parameters:
        kwargs["points_per_epoch"] = 1
    if "null_surrogates" in parameters:  # the analysis draws its own nulls; per-sample-point ones cost 40x
        kwargs.setdefault("null_surrogates", None)
    return DynamicsMonitor(**kwargs)


def history_file(run_dir: Path, prefix: str) -> Path:
    """Where a run's history of monitor ``prefix`` lies: the default one in the run folder, others one below."""
    name = f"{prefix}_history.pt"
    return run_dir / name if prefix == "dynamics" else run_dir / prefix / name


def _data(task: str, batch_size: int, data_root: str | None) -> Any:
    from benchmarks.kit import CIFARDataModule, DigitPairsDataModule, DigitsDataModule

    if task in ("digits", "digits16"):
        return DigitsDataModule(batch_size=batch_size, width=TASKS[task][2][1])
    if task in ("pairs", "pairs8"):
        return DigitPairsDataModule(batch_size=batch_size, width=TASKS[task][2][1])
    if data_root is None:
        raise ValueError(f"task {task!r} reads CIFAR from disk: pass --data-root (the folder torchvision uses).")
    return CIFARDataModule(data_root, task, batch_size=batch_size)


def _module(arch: Arch, task: str, epochs: int, vit_weights: str | None) -> Any:
    from benchmarks.kit import DeepCNN, ImageClassifier, SmallCNN

    num_classes, channels, size = TASKS[task]
    if arch.pretrained and vit_weights is None:
        raise ValueError(f"{arch.model!r} is pretrained: pass --vit-weights (a local weights file).")
    builtin = {"small_cnn": SmallCNN, "deep_cnn": DeepCNN}
    model: Any = arch.model
    if arch.model in builtin:
        model = builtin[arch.model](num_classes=num_classes, in_channels=channels, **arch.model_kwargs)
    return ImageClassifier(
        model,
        lr=arch.lr,
        weight_decay=arch.weight_decay,
        num_classes=num_classes,
        optimizer=arch.optimizer,
        in_channels=channels,
        image_size=size,
        weights_path=vit_weights if arch.pretrained else None,
        model_kwargs=arch.model_kwargs,
        max_epochs=epochs,
    )


def train_one(
    preset_name: str,
    arch_name: str,
    task: str,
    seed: int,
    out: str,
    data_root: str | None,
    vit_weights: str | None,
    epochs: int | None = None,
) -> str:
    """Train one run and write its histories and ``metrics.json`` into ``out/runs/<run>``; return its name.

    The history is the package's history file (:meth:`~lightning_dynamics.DynamicsTracker.save`),
    ``dynamics_history.pt``, read by ``lightning-dynamics report``/``compare`` on the run folder. (Runs of the
    first study also hold ``act_std/act_std_history.pt``: the findings never read it, and it cost a fifth of the
    training time, so it is gone; the stopping study keeps its own activation-std monitor.)
    """
    import lightning.pytorch as pl

    from benchmarks.kit import EpochMetrics, quiet_trainer

    torch.set_num_threads(1)  # one thread per worker: fair and quiet on a shared machine
    preset = PRESETS[preset_name] if epochs is None else replace(PRESETS[preset_name], epochs=epochs)
    arch = preset.archs[arch_name]
    name = run_name(arch_name, task, seed)
    run_dir = Path(out) / "runs" / name
    if (run_dir / "metrics.json").is_file():
        cached = json.loads((run_dir / "metrics.json").read_text())["epochs"]
        if cached != preset.epochs:
            raise ValueError(f"{run_dir} holds a {cached}-epoch run, not {preset.epochs}: use another --out.")
        return name
    pl.seed_everything(seed, verbose=False)
    monitors = {"dynamics": paper_monitor()}  # the stopping study adds its own (stopping.py)
    recorder = EpochMetrics()
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = quiet_trainer(
        max_epochs=preset.epochs,
        accelerator=accelerator,
        deterministic=accelerator == "cpu",
        callbacks=[*monitors.values(), recorder],
        limit_train_batches=preset.limit_train_batches,
        limit_val_batches=preset.limit_val_batches,
    )
    start = time.perf_counter()
    trainer.fit(_module(arch, task, preset.epochs, vit_weights), _data(task, preset.batch_size, data_root))
    seconds = time.perf_counter() - start
    run_dir.mkdir(parents=True, exist_ok=True)
    for key, monitor in monitors.items():
        target = history_file(run_dir, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if monitor.tracker.save(target) is None:
            raise RuntimeError(f"could not write the {key} history of {name} to {target}.")
    record = {
        "arch": arch_name,
        "task": task,
        "seed": seed,
        "epochs": preset.epochs,
        "seconds": seconds,
        "layer_names": list(monitors["dynamics"].layer_names),
        "epoch_metrics": recorder.values,
        "monitor_metrics": {key: m.metrics for key, m in monitors.items()},
        "arch_settings": asdict(arch),
    }
    (run_dir / "metrics.json").write_text(json.dumps(record, indent=1, allow_nan=True))
    return name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=tuple(PRESETS), default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/paper"))
    parser.add_argument("--archs", nargs="*", help="a subset of the preset's architectures")
    parser.add_argument("--tasks", nargs="*", help="a subset of the preset's tasks")
    parser.add_argument("--seeds", nargs="*", type=int, help="a subset of (or other) seeds")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    parser.add_argument("--skip-stopping", action="store_true", help="do not run the early-stopping study")
    parser.add_argument("--workers", type=int, default=1, help="runs trained in parallel (one torch thread each)")
    parser.add_argument("--data-root", help="folder holding cifar-10-batches-py / cifar-100-python (full preset)")
    parser.add_argument("--vit-weights", help="local pretrained ViT weights file (full preset)")
    parser.add_argument("--surrogates", type=int, default=20)
    parser.add_argument("--permutations", type=int, default=2000)
    parser.add_argument("--analyse-only", action="store_true")
    parser.add_argument("--train-only", action="store_true", help="train the runs, skip the analysis")
    args = parser.parse_args(argv)

    if args.epochs is not None:
        PRESETS[args.scale] = replace(PRESETS[args.scale], epochs=args.epochs)
    preset = PRESETS[args.scale]
    archs = args.archs or list(preset.archs)
    tasks = args.tasks or list(preset.tasks)
    seeds = args.seeds if args.seeds is not None else list(preset.seeds)
    for arch in archs:
        if arch not in preset.archs:
            parser.error(f"--archs: {arch!r} is not in preset {args.scale!r} ({list(preset.archs)}).")
    jobs = [  # seed-major: an interrupted preset leaves every cell with the same seeds
        (args.scale, a, t, s, str(args.out), args.data_root, args.vit_weights, preset.epochs)
        for s in seeds
        for a in archs
        for t in tasks
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        start = time.perf_counter()
        if args.workers > 1:
            from benchmarks.paper.run import train_one as worker  # importable by name in spawned processes

            with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
                for name in pool.map(worker, *zip(*jobs, strict=True)):
                    print(f"[{time.perf_counter() - start:7.1f} s] done {name}", flush=True)
        else:
            for job in jobs:
                name = train_one(*job)
                print(f"[{time.perf_counter() - start:7.1f} s] done {name}", flush=True)
        print(f"training: {len(jobs)} runs in {time.perf_counter() - start:.1f} s", flush=True)

    stopping = None
    if preset.stopping is not None and not args.skip_stopping:
        from benchmarks.paper.stopping import run_study

        stopping = run_study(
            args.out / "stopping",
            workers=args.workers,
            train=not args.analyse_only,
            analyse=not args.train_only,
            **preset.stopping,
        )
    if args.train_only:
        return

    from benchmarks.paper.findings import analyse

    names = [run_name(a, t, s) for a in archs for t in tasks for s in seeds]
    analyse(args.out, names, tasks, n_surrogates=args.surrogates, n_permutations=args.permutations, stopping=stopping)


if __name__ == "__main__":
    main()
