"""Our loop and the Hugging Face Trainer compute the same fine-tuning, given the same batches.

The text bench compares the two on the same job and finds accuracies that differ seed by seed,
because each side draws its own batch order and dropout masks. This test takes those two draws
away (one fixed batch order, no dropout) and asks for the same weights at the end: it pins
everything else the two loops do (AdamW and its decay groups, the warm-up's rounding, the
schedule, clipping, loss normalization, accumulation) to the Trainer's, to float rounding.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import make_reviews

from finetunekit import config as config_mod
from finetunekit.data.readers import WHERE
from finetunekit.run import training_data
from finetunekit.tasks import get_task
from finetunekit.training.loop import train_loop
from finetunekit.training.metrics_log import MetricsLog

ROWS, BATCH, EPOCHS = 48, 8, 2


@pytest.fixture(autouse=True)
def cpu_accelerator_state():
    """Both loops set up Accelerate's process-wide state; each starts from a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def no_dropout_task(no_dropout_bert: Path, tmp_path: Path, **train):
    """The text-classification task with the tiny BERT loaded (dropout off), and its rows."""
    cfg = config_mod.validate({
        "task": "text-classification", "model": str(no_dropout_bert), "output": str(tmp_path / "run"),
        "data": {"train": str(tmp_path / "unused.jsonl")},
        "train": {"epochs": EPOCHS, "lr": 3e-3, "batch_size": BATCH, "max_length": 24, "seed": 5,
                  "weight_decay": 0.1, "max_grad_norm": 0.5, "shuffle": False, **train},
    })
    rows = [{"text": r["review"], "label": r["score"], WHERE: f"toy:{i + 1}"}
            for i, r in enumerate(make_reviews(ROWS, seed=3))]
    task = get_task(cfg)
    torch.manual_seed(0)
    model = task.load(str(no_dropout_bert), rows)
    return cfg, task, model, rows


def train_with_trainer(model: torch.nn.Module, task, examples: list[dict], cfg, tmp_path: Path):
    """The Trainer as its users run it, reading the examples in order ("sequential").

    One correction, which the Trainer's docs ask of a model whose loss ignores
    `num_items_in_batch`: BertForSequenceClassification declares `**kwargs`, so the Trainer
    takes its loss as already normalized for accumulation and skips its own division by the
    accumulation steps (transformers#47688, open): its accumulated gradient comes out that many
    times too large, which changes clipping. With the flag set as the docs say, it divides.
    """
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    train = cfg.train
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum, num_train_epochs=train.epochs,
        learning_rate=train.lr, weight_decay=train.weight_decay, warmup_steps=train.warmup_ratio,
        lr_scheduler_type=train.scheduler, max_grad_norm=train.max_grad_norm, seed=train.seed,
        train_sampling_strategy="sequential", save_strategy="no", eval_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True,
    )
    dataset = [{"input_ids": e["input_ids"], "labels": e["label"]} for e in examples]
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorWithPadding(task.tokenizer))
    trainer.model_accepts_loss_kwargs = False
    trainer.train()
    return model


def train_with_ours(model: torch.nn.Module, task, rows: list[dict], cfg, tmp_path: Path):
    """Our loop, batching as `train` does with `train.shuffle: false`."""
    train_loop(model, training_data(cfg, task, rows), task.loss, cfg.train, Accelerator(cpu=True),
               tmp_path / "checkpoints", MetricsLog(tmp_path / "m.jsonl"), progress=False)
    return model


@pytest.mark.parametrize(("settings", "tolerance"), [
    # 12 steps: 10% warm-up is 1.2 steps, which the Trainer rounds up to 2
    ({"scheduler": "linear", "warmup_ratio": 0.1}, 0.0),
    ({"scheduler": "cosine", "warmup_ratio": 0.2}, 0.0),
    # two batches of 8 per step: the same mean, summed in another order
    ({"scheduler": "linear", "warmup_ratio": 0.1, "grad_accum": 2}, 1e-6),
], ids=["linear", "cosine", "accumulation"])
def test_same_batches_give_the_trainers_weights(no_dropout_bert: Path, tmp_path: Path, settings: dict,
                                                tolerance: float) -> None:
    cfg, task, model, rows = no_dropout_task(no_dropout_bert, tmp_path, **settings)
    start = copy.deepcopy(model.state_dict())
    examples = task.encode(rows, training=True)
    theirs = train_with_trainer(copy.deepcopy(model), task, examples, cfg, tmp_path)
    ours = train_with_ours(model, task, rows, cfg, tmp_path)
    mine, other = ours.state_dict(), theirs.state_dict()
    assert max(float((mine[k] - start[k]).abs().max()) for k in start) > 1e-3  # it trained
    worst = max(float((mine[k] - other[k]).abs().max()) for k in mine)
    assert worst <= tolerance, f"largest weight difference from the Trainer's: {worst:.3g}"
