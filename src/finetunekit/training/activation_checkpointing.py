"""Activation (gradient) checkpointing on and off, through transformers' own switch.

Two modes. Full checkpointing keeps only each decoder layer's input and recomputes the whole
layer in backward: the least memory, at the price of a second forward (8N FLOPs a token instead
of 6N for full fine-tuning, 6N instead of 4N for LoRA). Selective checkpointing (torch's
selective activation checkpointing, through the same switch) keeps the outputs of the
expensive ops, the matmuls and attention, and recomputes only the cheap ones: norms, rotary
embeddings, activation functions, residual adds and LoRA's rank-r products (the
folded layer's `B @ A`, or peft's `B(A(x))` where its own forward runs). Those are
most of a layer's saved bytes but a few percent of its FLOPs, so it costs about 2/3 of the
activation memory of no checkpointing at nearly its speed.

transformers 5.2x renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable`;
the older name still works there with a warning, and is the only one before. Non-reentrant
checkpointing is used: it works with frozen inputs (LoRA), with torch.compile and with the
selective policy.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

Mode = bool | Literal["selective"]
KWARGS = {"use_reentrant": False}

_aten = torch.ops.aten
_MATMULS = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default}
_ATTENTION = {
    getattr(_aten, name).default
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                 "_flash_attention_forward", "_efficient_attention_forward")
    if hasattr(_aten, name)
}
# a matmul whose inner dimension is this small (LoRA's rank r) is cheaper to redo than to keep:
# 2 * inner FLOPs per output element against 4 bytes held until backward
_CHEAP_INNER = 64


def keeps_output(op: Any, args: tuple) -> bool:
    """Whether selective checkpointing keeps this op's output: attention, and matmuls that are
    not low-rank. (`plan` uses it too, to count what the selective mode holds.)"""
    if op in _ATTENTION:
        return True
    if op in _MATMULS:
        left = args[1] if op in (_aten.addmm.default, _aten.baddbmm.default) else args[0]
        return left.shape[-1] > _CHEAP_INNER
    return False


def _keep_expensive(_ctx: Any, op: Any, *args: Any, **_kwargs: Any) -> CheckpointPolicy:
    if keeps_output(op, args):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


SELECTIVE_KWARGS = {
    **KWARGS,
    "context_fn": functools.partial(create_selective_checkpoint_contexts, _keep_expensive),
}


def set_activation_checkpointing(model: torch.nn.Module, on: Mode) -> bool:
    """Turn checkpointing on (True: full; "selective") or off; False when the model has no
    such switch."""
    if on:
        kwargs = SELECTIVE_KWARGS if on == "selective" else KWARGS
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
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
