"""Activation (gradient) checkpointing on and off, through transformers' own switch.

transformers 5.2x renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable`;
the older name still works there with a warning, and is the only one before. Non-reentrant
checkpointing is used: it works with frozen inputs (LoRA) and with torch.compile.
"""

from __future__ import annotations

import torch

KWARGS = {"use_reentrant": False}


def set_activation_checkpointing(model: torch.nn.Module, on: bool) -> bool:
    """Turn checkpointing on or off; False when the model has no such switch."""
    if on:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=KWARGS)
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=KWARGS)
        else:
            return False
        return True
    for name in ("activation_checkpointing_disable", "gradient_checkpointing_disable"):
        if hasattr(model, name):
            getattr(model, name)()
            return True
    return False


def is_checkpointing(model: torch.nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
