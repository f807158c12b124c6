"""Memory-lean causal-LM loss: cross-entropy through the LM head in checkpointed chunks.

A 135M model with a 49k vocabulary and 4k tokens per micro-batch would otherwise hold a
[4096, 49152] float32 logits tensor (800 MB) plus its gradient. Here the decoder's hidden states
are taken before the head, only positions that carry loss are kept, and the head + cross-entropy
run over chunks of them inside `torch.utils.checkpoint`: the forward pass keeps no logits, and the
backward pass recomputes one chunk's logits at a time. The loss is the SUM over trained tokens;
the training loop divides by the token count of the whole accumulated window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def causal_lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder (hidden states) and the LM head of a causal LM, peft-wrapped or not.

    LoRA layers are injected in place, so calling the inner modules still runs the adapters.
    """
    inner = model.module if hasattr(model, "module") and not hasattr(model, "get_decoder") else model
    if hasattr(inner, "get_base_model"):  # peft.PeftModel
        inner = inner.get_base_model()
    return inner.get_decoder(), inner.get_output_embeddings()


def _chunk_ce(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def chunked_ce_sum(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """Sum of cross-entropy of `head(hidden)` against `targets` (-100: no loss), chunk by chunk.

    `hidden` is [..., d] and `targets` the matching [...] shape of next-token ids.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    keep = (targets != IGNORE).nonzero(as_tuple=True)[0]
    hidden, targets = hidden.index_select(0, keep), targets.index_select(0, keep)
    total = hidden.new_zeros((), dtype=torch.float32)
    if targets.numel() == 0:
        return total + hidden.sum() * 0.0  # keeps the graph connected for backward
    for start in range(0, targets.numel(), chunk_size):
        h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            total = total + checkpoint(_chunk_ce, head, h, t, use_reentrant=False)
        else:
            total = total + _chunk_ce(head, h, t)
    return total


def causal_lm_loss_sum(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    targets: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    chunked: bool = True,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Summed next-token loss; `targets[b, t]` is the id to predict at position t (already
    shifted by the caller, so packed examples never predict across their boundary)."""
    if not chunked:
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids, use_cache=False).logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum",
                               ignore_index=IGNORE)
    decoder, head = causal_lm_parts(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask,
                     position_ids=position_ids, use_cache=False).last_hidden_state
    return chunked_ce_sum(hidden, head, targets, chunk_size)
