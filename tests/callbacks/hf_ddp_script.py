"""Two CPU processes (torchrun, gloo) train a tiny BERT with the Trainer and DynamicsTrainerCallback; each rank saves
what its tracker recorded (tests/callbacks/test_hf_trainer.py::test_trainer_callback_under_ddp)."""

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from lightning_dynamics.callbacks.hf import DynamicsTrainerCallback


def main(out: Path) -> None:
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
    model = BertForSequenceClassification(config)
    ids = torch.randint(0, 16, (32, 6), generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": i, "labels": (i[0] > 7).long()} for i in ids]
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4,  # 2 processes: 4 steps per epoch
        num_train_epochs=2,
        lr_scheduler_type="constant",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        ddp_backend="gloo",
        disable_tqdm=True,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None))
    monitor = DynamicsTrainerCallback(
        points_per_epoch=4, null_surrogates=9, log_dashboard=False, verbose=False, cost_budget=None
    )
    monitor.add_to(trainer)
    calls: list[int] = []
    all_reduce = dist.all_reduce

    def counted_all_reduce(*args: Any, **kwargs: Any) -> Any:  # the adapter's collectives (DDP's are in C++)
        calls.append(1)
        return all_reduce(*args, **kwargs)

    dist.all_reduce = counted_all_reduce
    try:
        trainer.train()
    finally:
        dist.all_reduce = all_reduce
    assert monitor.tracker.history is not None
    torch.save(
        {
            "world_size": dist.get_world_size(),
            "values": monitor.tracker.history.values.cpu(),
            "steps": list(monitor.tracker.history.steps),
            "metrics": monitor.tracker.metrics,
            "history_path": str(monitor.history_path),
            "reduces": len(calls),
        },
        out / f"rank{dist.get_rank()}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # The Trainer leaves its gloo process group alive. Left to the interpreter's exit, its worker threads may still
    # hold work objects whose tensors are freed during finalization, where taking the GIL aborts the process (SIGABRT;
    # pytorch/pytorch#179291): a rank "aborted" now and then in loaded runs. Both ranks are done with the group (the
    # barrier), then each destroys it while the interpreter is whole. (Not on failure: a rank that raised mid-run
    # exits at once, and torchrun stops the other instead of leaving it in a barrier that never completes.)
    dist.barrier()
    dist.destroy_process_group()
