"""The diagnosis in a Fabric loop and in a ``transformers`` Trainer: each names an injected fault with the findings,
keys, once-said lines and findings file of the Lightning callback, stops on a ``stop_on`` kind and keeps its state."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.diagnosis import mlp
from benchmarks.kit.data import _digits_split
from lightning_dynamics.decisions.diagnosis import FINDING_KINDS, load_findings


def _fabric_fit(tmp_path: Path, bias: float = 0.0, nan_from: int | None = None, epochs: int = 3, **diagnosis: Any):
    from lightning.fabric import Fabric

    from lightning_dynamics.callbacks.fabric import DynamicsFabricDiagnosis, DynamicsFabricMonitor

    torch.manual_seed(0)
    x, y = _digits_split(0.25, 0)[:2]
    x, y = x[:256].clone(), y[:256]
    if nan_from is not None:
        x[nan_from:, 0, 0, 0] = math.nan
    monitor = DynamicsFabricMonitor(
        history_dir=tmp_path, points_per_epoch=2, null_surrogates=None, verbose=False, log_dashboard=False
    )
    diagnosis = DynamicsFabricDiagnosis(monitor, **diagnosis)
    fabric = Fabric(accelerator="cpu", devices=1, callbacks=[monitor, diagnosis])
    model = mlp()
    for layer in [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]:
        nn.init.constant_(layer.bias, bias)  # -4: every hidden ReLU dead from the start
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer = fabric.setup(model, optimizer)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False)
    fabric.call("on_train_start", fabric=fabric, model=model, optimizers=[optimizer])
    step = 0
    for epoch in range(epochs):
        fabric.call("on_train_epoch_start", fabric=fabric, epoch=epoch, step=step, n_batches=len(loader))
        for batch_idx, (xb, yb) in enumerate(loader):
            loss = nn.functional.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            fabric.backward(loss)
            fabric.call("on_before_optimizer_step", fabric=fabric)
            optimizer.step()
            step += 1
            fabric.call("on_train_batch_end", fabric=fabric, outputs=loss, batch_idx=batch_idx, epoch=epoch, step=step)
        fabric.call("on_train_epoch_end", fabric=fabric, epoch=epoch, step=step)
        if diagnosis.stopped_epoch is not None:
            break
    fabric.call("on_train_end", fabric=fabric)
    return diagnosis, monitor, epoch


def test_fabric_names_dying_relu_once_and_writes_the_findings_beside_the_history(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        diagnosis, monitor, _ = _fabric_fit(tmp_path, bias=-4.0)
    kinds = [f.kind for f in diagnosis.findings]
    assert "dying_relu" in kinds, [str(f) for f in diagnosis.findings]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DynamicsFabricDiagnosis: ")]
    assert sorted(line.split(": ", 1)[1].split(" ", 1)[0] for line in lines) == sorted(kinds)  # each said once
    assert monitor.history_path is not None
    record = load_findings(monitor.history_path.with_name("dynamics_diagnosis.json"))
    assert [f.to_dict() for f in record.findings] == [f.to_dict() for f in diagnosis.findings]
    assert set(diagnosis.logged_values()) == {f"diagnosis/{k}" for k in FINDING_KINDS}

    state = diagnosis.state_dict()
    from lightning_dynamics.callbacks.fabric import DynamicsFabricDiagnosis

    restored = DynamicsFabricDiagnosis()
    restored.load_state_dict(state)
    assert [f.to_dict() for f in restored.findings] == [f.to_dict() for f in diagnosis.findings]


def test_fabric_stops_on_nan_inputs_and_a_healthy_run_is_quiet(tmp_path: Path) -> None:
    diagnosis, _, last_epoch = _fabric_fit(tmp_path / "nan", nan_from=128, epochs=4, stop_on=["nonfinite"])
    assert diagnosis.findings[0].kind == "nonfinite" and diagnosis.stopped_epoch == 0 == last_epoch
    assert diagnosis.stop_reason.startswith("DynamicsFabricDiagnosis stopped training at epoch 0: nonfinite")
    healthy, _, _ = _fabric_fit(tmp_path / "healthy", epochs=2)
    assert healthy.findings == [] and healthy.stopped_epoch is None


# ------------------------------------------------------------------ transformers


def _bert() -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        max_position_embeddings=8,
        type_vocab_size=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def _hf_train(tmp_path: Path, model: Any, epochs: int = 3, resume: str | None = None, lr: float = 0.02, **kwargs: Any):
    from transformers import Trainer, TrainingArguments

    from lightning_dynamics.callbacks.hf import DynamicsTrainerCallback
    from lightning_dynamics.callbacks.hf_diagnosis import DynamicsTrainerDiagnosis

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 16, (32, 6), generator=generator)
    data = [
        {"input_ids": i, "attention_mask": torch.ones(6, dtype=torch.long), "labels": (i[0] > 7).long()} for i in ids
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=epochs,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_strategy=kwargs.pop("save_strategy", "no"),
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        optimizers=(torch.optim.SGD(model.parameters(), lr=lr), None),
    )
    monitor = DynamicsTrainerCallback(points_per_epoch=2, null_surrogates=None, verbose=False, log_dashboard=False)
    monitor.add_to(trainer)
    diagnosis = DynamicsTrainerDiagnosis(monitor, **kwargs).add_to(trainer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, diagnosis, monitor


@pytest.mark.integration
def test_the_trainer_diagnosis_names_a_nan_weight_stops_and_logs(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    model = _bert()
    with torch.no_grad():
        model.classifier.weight[0, 0] = math.nan  # every logit of class 0 NaN: the loss is NaN from the first step
    trainer, diagnosis, monitor = _hf_train(tmp_path, model, epochs=3, stop_on=["nonfinite"])
    assert diagnosis.findings[0].kind == "nonfinite", [str(f) for f in diagnosis.findings]
    assert diagnosis.stopped_epoch == 0 and trainer.state.global_step == 8  # stopped after its first epoch
    logged = [e for e in trainer.state.log_history if "diagnosis/nonfinite" in e]
    assert logged and logged[-1]["diagnosis/nonfinite"] == 1.0 and logged[-1]["diagnosis/dying_relu"] == 0.0
    record = load_findings(monitor.history_path.with_name("dynamics_diagnosis.json"))
    assert record.findings[0].kind == "nonfinite" and record.stop_reason == diagnosis.stop_reason


@pytest.mark.integration
def test_a_healthy_trainer_run_is_quiet_and_its_state_resumes(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    whole = _hf_train(tmp_path / "whole", _bert(), epochs=2)[1]
    assert whole.findings == [] and len(whole.history) == 2
    assert all(math.isfinite(r["loss"]) for r in whole.history)  # the loss was read from the model's outputs
    _hf_train(tmp_path / "first", _bert(), epochs=1, save_strategy="epoch")
    resumed = _hf_train(tmp_path / "first", _bert(), epochs=2, resume=str(tmp_path / "first" / "checkpoint-8"))[1]
    assert len(resumed.history) == 2 and resumed.history[0] == pytest.approx(whole.history[0], nan_ok=True)
