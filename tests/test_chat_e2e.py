"""End to end: a short LoRA SFT run of examples/orders.yaml on the real SmolLM2-135M-Instruct.

Why: only a real model on the real example data shows the pieces fit (template masks, chunked
loss through peft, batched generation, run directory files, export); a few steps already lower
the held-out answer loss, which fails if the loss trains the wrong tokens or nothing at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_fixtures import needs_smollm2_weights

from finetunekit.cli import main as cli_main
from finetunekit.run import train

pytestmark = [needs_smollm2_weights, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "orders.yaml"


def test_orders_lora_run_lowers_answer_loss(tmp_path):
    run = train(EXAMPLE, overrides=[
        "data.max_rows=48", "train.max_steps=6", "eval.max_examples=8",
        "eval.max_new_tokens=24", "train.log_every=2", f"output={tmp_path / 'run'}",
    ], progress=False)
    before, after = run.before, run.after
    assert {"loss", "perplexity", "exact_match", "token_f1", "rouge_l"} <= set(after)
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    lines = (run.dir / "eval" / "predictions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 8 and {"prompt", "target", "before", "after"} <= set(first)
    assert first["target"].startswith('{"item": ')
    assert (run.dir / "adapter" / "adapter_config.json").is_file()
    model = run.dir / "model"
    assert (model / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (model / "tokenizer_config.json").read_text())
    assert json.loads((model / "generation_config.json").read_text())["pad_token_id"] == 2
    assert cli_main(["export", str(run.dir), "--merge"]) == 0
    assert (run.dir / "export" / "merged" / "model.safetensors").is_file()
