"""Every model finetunekit loads reads its own folder and nothing else at run time.

transformers 5 loads models with Hub kernels on (`use_kernels=True` by default); on a GPU the
model's first .train() or .eval() then fetches kernel code from the Hub, which fails offline (seen
on an H200) and otherwise runs code nobody reviewed. The flag is set on CPU too, so these checks
run here."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetunekit.run import load_run, train
from finetunekit.tasks import get_task


def test_a_plain_from_pretrained_would_use_hub_kernels(tiny_bert: Path) -> None:
    """What the options below turn off (if transformers stops defaulting to it, this says so)."""
    pytest.importorskip("kernels")
    from transformers import AutoModel

    assert AutoModel.from_pretrained(tiny_bert).use_kernels


def test_base_and_tuned_models_load_without_hub_kernels(tiny_config) -> None:
    tiny_config.train.max_steps = 2
    run = train(tiny_config, progress=False)
    task = get_task(tiny_config)
    rows = task.read(Path(tiny_config.data.train), display="train").rows
    assert task.load(tiny_config.model, rows).use_kernels is False
    tuned = load_run(run.dir)[3]
    tuned.train()
    tuned.eval()  # where transformers would kernelize
    assert tuned.use_kernels is False
