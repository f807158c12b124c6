"""PEFT wrapping through `peft`: LoRA (or DoRA, rsLoRA) on chosen modules (or all linear layers)
and merging."""

from __future__ import annotations

import torch

from ..config import PeftConfig


def apply_peft(model: torch.nn.Module, cfg: PeftConfig, task_type: str | None) -> torch.nn.Module:
    """Wrap `model` with LoRA adapters; the task's new head stays fully trainable.

    `task_type` ("SEQ_CLS", "CAUSAL_LM", ...) lets peft keep the right head in `modules_to_save`.
    """
    if cfg.method == "none":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target,
        task_type=task_type,
        use_dora=cfg.dora,
        use_rslora=cfg.rslora,
    )
    # peft's experimental custom-layer hook: our LoRA Linear is peft's with a faster training
    # forward (training/lora_linear.py); without the hook, peft's own layer does the same math
    if hasattr(lora, "_register_custom_module"):
        from .lora_linear import FoldedLoraLinear

        lora._register_custom_module({torch.nn.Linear: FoldedLoraLinear})
    return get_peft_model(model, lora)


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model with the adapters folded into the weights (for export)."""
    if is_peft(model):
        return model.merge_and_unload()
    return model
