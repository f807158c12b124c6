"""Selective activation checkpointing: the same gradients as none, without a second forward.

Why: checkpointing must never change what is optimized, and the selective mode exists to skip
recomputing the matmuls; both can silently break (a policy that saves nothing is full
checkpointing again, and still gives right gradients), so the backward's matmuls are counted.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from finetunekit.training.activation_checkpointing import (
    is_checkpointing,
    set_activation_checkpointing,
)

aten = torch.ops.aten


def tiny_llama(lora: bool) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=101, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear",
                                                 task_type="CAUSAL_LM", init_lora_weights=False))
    return model.train()


class CountMatmuls(TorchDispatchMode):
    """Counts matmuls whose inner dimension is the model's width or more (not LoRA's)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func in (aten.mm.default, aten.addmm.default):
            left = args[1] if func is aten.addmm.default else args[0]
            self.count += left.shape[-1] >= 128
        return func(*args, **(kwargs or {}))


def gradients_and_matmuls(lora: bool, mode: bool | str) -> tuple[list, int, int]:
    """Trainable parameters' gradients, and the wide matmuls of the forward and the backward."""
    model = tiny_llama(lora)
    set_activation_checkpointing(model, mode)
    assert is_checkpointing(model) == bool(mode)
    ids = torch.randint(0, 101, (2, 24), generator=torch.Generator().manual_seed(1))
    forward, backward = CountMatmuls(), CountMatmuls()
    with forward:
        loss = model(input_ids=ids, labels=ids).loss
    with backward:
        loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return grads, forward.count, backward.count


@pytest.mark.parametrize("lora", [False, True])
def test_selective_checkpointing_keeps_gradients_and_skips_the_second_forward(lora: bool):
    plain, _, plain_mm = gradients_and_matmuls(lora, False)
    full, _, full_mm = gradients_and_matmuls(lora, True)
    selective, _, selective_mm = gradients_and_matmuls(lora, "selective")
    for a, b, c in zip(plain, full, selective, strict=True):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(c, a)
    # full checkpointing redoes the layers' forward projections in backward (at least q, k, v,
    # o, gate and up of both layers: recomputation stops once it has what backward needs)
    assert full_mm - selective_mm >= 2 * 6
    # selective redoes none: at most one more than none, the first layer's input gradient that
    # checkpointing's switch asks for when the embeddings are frozen (LoRA)
    assert selective_mm - plain_mm == (1 if lora else 0)


def test_plan_counts_the_matmul_outputs_selective_keeps():
    from finetunekit.plan import activation_bytes_per_row, selective_kept_bytes

    model = tiny_llama(lora=False)
    ids = torch.randint(0, 101, (1, 48), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "labels": ids}

    def loss(m: torch.nn.Module, b: dict) -> torch.Tensor:
        return m(**b).loss

    # per layer the projections' outputs at least: q, o, down (128 each), k, v (64 each), gate,
    # up (256 each) floats a token; in fp32 over 48 tokens and 2 layers (the attention output
    # too where the fused attention kernel runs)
    assert selective_kept_bytes(model, loss, batch) >= 2 * 48 * 4 * (128 * 3 + 64 * 2 + 256 * 2)
    predicted = {}
    for mode in (False, True, "selective"):
        set_activation_checkpointing(model, mode)
        predicted[mode] = activation_bytes_per_row(model, loss, batch, tokens=48, mode=mode)
    assert predicted[True] < predicted["selective"]
