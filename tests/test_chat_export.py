"""Export of a LoRA chat run: merged folder and adapter-on-base answer the same.

Why: `export --merge` is what users ship; if merging drops an adapter, uses the wrong scaling or
loses the chat template, the shipped model silently differs from the one that was evaluated.
"""

from __future__ import annotations

import json

import chat_fixtures
import pytest
import torch
from chat_fixtures import needs_smollm2

from finetunekit.cli import main as cli_main
from finetunekit.errors import UserError
from finetunekit.run import train

pytestmark = needs_smollm2
smollm2_dir = chat_fixtures.smollm2_dir
smollm2_tokenizer = chat_fixtures.smollm2_tokenizer
tiny_llama = chat_fixtures.tiny_llama  # fixtures shared by the chat tests


@pytest.fixture(scope="module")
def lora_run(tiny_llama, tmp_path_factory):
    import yaml

    folder = tmp_path_factory.mktemp("chat-export")
    rows = [{"messages": [{"role": "user", "content": f"Order {i} lamps"},
                          {"role": "assistant", "content": f'{{"qty": {i}}}'}]} for i in range(24)]
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "task": "chat", "model": str(tiny_llama),
        "data": {"train": str(folder / "d.jsonl"), "validation": None, "test": 0.25},
        "peft": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"max_steps": 4, "lr": 0.02, "batch_size": 4, "num_threads": 1,
                  "packing": True, "warmup_ratio": 0.0},
        "eval": {"max_new_tokens": 4, "baseline": False},
        "output": str(folder / "run"),
    }
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    return train(folder / "c.yaml", progress=False)


def _greedy(model, tok, prompts) -> list[list[int]]:
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, max_new_tokens=6, min_new_tokens=6,
                              pad_token_id=tok.pad_token_id)
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = tok.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
            gen = model.generate(**ids, generation_config=config)
            out.append(gen[0, ids["input_ids"].shape[1]:].tolist())
    return out


def test_merged_export_equals_adapter_on_base(lora_run, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = lora_run.dir
    assert cli_main(["export", str(run), "--merge", "--out", str(tmp_path / "merged")]) == 0
    assert cli_main(["export", str(run), "--out", str(tmp_path / "adapter")]) == 0
    merged_dir, adapter_dir = tmp_path / "merged", tmp_path / "adapter"
    assert (merged_dir / "model.safetensors").is_file()
    assert (merged_dir / "generation_config.json").is_file()
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    assert not (adapter_dir / "model.safetensors").exists()

    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    prompts = [[{"role": "user", "content": f"Order {i} lamps"}] for i in (3, 11, 42)]
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    on_base = PeftModel.from_pretrained(base, adapter_dir).eval()
    assert _greedy(merged, tok, prompts) == _greedy(on_base, tok, prompts)
    # the adapter learned something, so the equality above is not base == base
    ids = tok.apply_chat_template(prompts[0], add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.no_grad():
        a = merged(**ids).logits
        b = on_base(**ids).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with on_base.disable_adapter(), torch.no_grad():
        assert (on_base(**ids).logits - a).abs().max() > 1e-3


def test_export_refuses_adapter_of_full_run(tmp_path):
    (tmp_path / "config.yaml").write_text("task: chat\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    from finetunekit.export import export

    with pytest.raises(UserError, match="no adapter; use export --merge"):
        export(tmp_path)


def test_predict_uses_training_system_prompt(lora_run):
    from finetunekit.run import predict

    out = predict(lora_run.dir, ["Order 5 lamps"])
    from finetunekit.run import load_run

    assert load_run(lora_run.dir)[3].use_kernels is False  # no Hub kernels (test_offline_loading)
    assert out[0]["input"] == "Order 5 lamps" and isinstance(out[0]["output"], str)
    assert not (lora_run.dir / "model" / "finetunekit_chat.json").exists()  # no shared system
