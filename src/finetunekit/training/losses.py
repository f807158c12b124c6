"""Memory-lean causal-LM loss: cross-entropy through the LM head in checkpointed chunks.

A 135M model with a 49k vocabulary and 4k tokens per micro-batch would otherwise hold a
[4096, 49152] float32 logits tensor (800 MB) plus its gradient. Here the decoder's hidden states
are taken before the head, only positions that carry loss are kept, and the head + cross-entropy
run chunk by chunk, so no more than one chunk's logits exist at a time.

Where the head is a plain `nn.Linear` and no autocast is active (fp32 training, the CPU case),
the chunks go through `LinearCrossEntropy`, which computes the head's gradients in the same pass
as the loss: softmax minus one-hot is the gradient of the logits, so each chunk's logits are
needed once. The general path (autocast, LoRA on the head, other head modules) checkpoints each
chunk instead, and the backward pass recomputes its logits: one more [tokens, d] x [d, vocab]
matmul, about 7% of a SmolLM2-135M training step's FLOPs.

The loss is the SUM over trained tokens; the training loop divides by the token count of the
whole accumulated window.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100


# decoders compiled for a model that was compiled as a whole, one per such model (see below)
_compiled_decoders: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = (
    weakref.WeakKeyDictionary())


def causal_lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder (hidden states) and the LM head of a causal LM, peft-wrapped or not.

    LoRA layers are injected in place, so calling the inner modules still runs the adapters.
    A model compiled as a whole (`train.compile`, which Accelerate applies to the top module) gets
    a compiled decoder: the chunked loss calls the decoder directly, past the compiled wrapper,
    which would otherwise leave compile a no-op. The compiled decoder lives as long as that
    wrapper, so the unwrapped model (evaluation, generation, saving) stays eager as before.
    """
    compiled = hasattr(model, "_orig_mod")  # torch.compile's OptimizedModule
    inner = getattr(model, "_orig_mod", model)
    inner = inner.module if hasattr(inner, "module") and not hasattr(inner, "get_decoder") else inner
    if hasattr(inner, "get_base_model"):  # peft.PeftModel
        inner = inner.get_base_model()
    decoder = inner.get_decoder()
    if compiled:
        if model not in _compiled_decoders:
            _compiled_decoders[model] = torch.compile(decoder)
        decoder = _compiled_decoders[model]
    return decoder, inner.get_output_embeddings()


class LinearCrossEntropy(torch.autograd.Function):
    """sum(cross_entropy(hidden @ weight.T + bias, targets)), gradients made during the forward.

    Each chunk's logits are computed once, turned into the loss and into d(loss)/d(logits)
    (softmax minus one-hot), and that is multiplied out into the hidden, weight and bias
    gradients at once; backward only scales them by the incoming gradient. Memory: one chunk's
    logits, plus gradients the size of `hidden` and of the head (which backward would hold
    anyway)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight) if weight.requires_grad else None
        need_bias = bias is not None and bias.requires_grad
        grad_bias = torch.zeros_like(bias) if need_bias else None
        total = hidden.new_zeros((), dtype=torch.float32)
        buffer = None  # fp32: every chunk's logits in one buffer, so fresh memory is touched once
        for start in range(0, targets.numel(), chunk_size):
            h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]
            if h.dtype == weight.dtype == torch.float32:
                if buffer is None:
                    buffer = h.new_empty((min(chunk_size, targets.numel()), weight.shape[0]))
                logits = torch.mm(h, weight.T, out=buffer[: t.numel()])
                if bias is not None:
                    logits += bias
            else:
                logits = F.linear(h, weight, bias).float()
            # log-sum-exp by hand, in place: torch.logsumexp makes an out-of-place shifted copy
            # of the [chunk, vocab] logits (200 MB at SmolLM2's vocabulary, 6% of a LoRA step)
            peak = logits.amax(dim=-1, keepdim=True)
            target_logit = logits.gather(1, t[:, None])
            sums = logits.sub_(peak).exp_().sum(dim=-1, keepdim=True)
            total += (peak + sums.log() - target_logit).sum()
            grad_logits = logits.div_(sums)  # softmax, in place of the logits
            grad_logits[torch.arange(t.numel()), t] -= 1.0
            grad_logits = grad_logits.to(h.dtype)
            if grad_hidden is not None:
                torch.mm(grad_logits, weight, out=grad_hidden[start : start + chunk_size])
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.T, h)
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        grads = [None if g is None else g * grad_output.to(g.dtype) for g in ctx.saved_tensors]
        return *grads, None, None


def _fusable(head: torch.nn.Module) -> bool:
    """A plain linear head outside autocast: the case `LinearCrossEntropy` computes exactly.

    The weight is read directly, not through the module's call, so a head whose weight is only
    whole inside its forward hooks (FSDP wraps or swaps the class; DeepSpeed ZeRO-3 partitions
    it, marked by `ds_id`) takes the checkpointed path."""
    autocast = any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda"))
    return type(head) is torch.nn.Linear and not autocast and not hasattr(head.weight, "ds_id")


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
    if torch.is_grad_enabled() and _fusable(head):
        return LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk_size)
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
    per_row: bool = False,
) -> torch.Tensor:
    """Summed next-token loss; `targets[b, t]` is the id to predict at position t (already
    shifted by the caller, so packed examples never predict across their boundary). `per_row`:
    one sum per row, `[rows]` (evaluation's per-row terms, evaluate/significance.py)."""
    if not chunked:
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids, use_cache=False).logits
        losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                 reduction="none" if per_row else "sum", ignore_index=IGNORE)
        return losses.view(targets.shape).sum(1) if per_row else losses
    decoder, head = causal_lm_parts(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask,
                     position_ids=position_ids, use_cache=False).last_hidden_state
    if per_row:
        return torch.stack([chunked_ce_sum(h, head, t, chunk_size)
                            for h, t in zip(hidden, targets, strict=True)])
    return chunked_ce_sum(hidden, head, targets, chunk_size)
