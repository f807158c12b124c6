"""Memory-lean RMSNorm and SwiGLU MLP for decoder training: the same math, fewer saved tensors.

Without checkpointing, autograd keeps every intermediate an op needs for its backward. Two
memory-bound pieces of a Llama-style layer keep more than they must:

- The MLP's `silu(gate) * up` keeps `gate`, `up` and `silu(gate)`; the backward can recompute
  `silu(gate)` from `gate`, one pass over `[tokens, intermediate]`: 1 of the 4
  intermediate-sized tensors a layer keeps.
- RMSNorm `w * x * rsqrt(mean(x^2) + eps)`, when `w` trains (full fine-tuning), also keeps the
  normalized `x * rstd` for w's gradient; the backward can recompute it from the input and
  `rstd`, which it keeps anyway: 2 of a layer's 7 hidden-sized tensors. (With LoRA the norm
  weights are frozen and the norm keeps the same either way.)

On the chat bench (SmolLM2-135M shape, LoRA, no checkpointing) the peak fell from 8,893 to 7,627
MiB at the same speed (338.9 and 337.8 tok/s, same host and hour), which is what lets LoRA
train without checkpointing under TRL's checkpointed peak (see config's gradient_checkpointing).
Full fine-tuning: selective checkpointing 7,077 MiB, with lean layers 6,961.

The layers are swapped in place of the model's own (keeping their parameters, so state-dict
keys, saving and peft's adapters are unchanged), and only where the swap is checked to give
the same output as the module it replaces on a random input: a norm with another formula
(Gemma's `1 + w`), or an MLP with another activation or extra parts, keeps its own module.
Inputs the fast path does not cover (a dtype other than the weight's float32) run the
original module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _RMSNorm(torch.autograd.Function):
    """`weight * x * rstd`, rstd = rsqrt(mean(x^2) + eps); keeps x and rstd for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
        ctx.save_for_backward(x, weight, rstd)
        return (x * rstd).mul_(weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, rstd = ctx.saved_tensors
        normed = x * rstd
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad * normed).reshape(-1, grad.shape[-1]).sum(0)
        grad_normed = grad * weight
        # d/dx of x * rstd: rstd * (g - x_hat * mean(g * x_hat))
        dot = (grad_normed * normed).mean(-1, keepdim=True)
        grad_x = grad_normed.sub_(normed.mul_(dot)).mul_(rstd)
        return grad_x, grad_weight, None


class _SwiGLU(torch.autograd.Function):
    """`silu(gate) * up`; keeps gate and up, and recomputes silu(gate) in backward."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return nn.functional.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, up = ctx.saved_tensors
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate)  # the op autograd itself uses
        grad_up = nn.functional.silu(gate).mul_(grad)
        return grad_gate, grad_up


class LeanRMSNorm(nn.Module):
    """Stands in for a Llama-style RMSNorm; holds the same `weight` parameter."""

    def __init__(self, original: nn.Module, eps: float) -> None:
        super().__init__()
        self.weight = original.weight
        self.eps = eps
        # not a submodule: its weight is ours, and the state dict must keep one key for it
        self.__dict__["original"] = original

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or self.weight.dtype != torch.float32 \
                or torch.is_autocast_enabled(x.device.type):
            return self.original(x)
        return _RMSNorm.apply(x, self.weight, self.eps)


class LeanSwiGLUMLP(nn.Module):
    """Stands in for a `down(silu(gate(x)) * up(x))` MLP; holds the same three projections."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.gate_proj = original.gate_proj
        self.up_proj = original.up_proj
        self.down_proj = original.down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(_SwiGLU.apply(self.gate_proj(x), self.up_proj(x)))


def _norm_eps(module: nn.Module) -> float | None:
    """The epsilon of a module shaped like an RMSNorm (one 1-D float32 weight, no children)."""
    if not type(module).__name__.endswith("RMSNorm") or list(module.children()):
        return None
    params = dict(module.named_parameters(recurse=False))
    weight = params.get("weight")
    if set(params) != {"weight"} or weight.dim() != 1 or weight.dtype != torch.float32:
        return None
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    return float(eps) if isinstance(eps, (int, float)) else None


def _is_swiglu_mlp(module: nn.Module) -> bool:
    names = {name for name, _ in module.named_children()}
    act = getattr(module, "act_fn", None)
    return (names == {"gate_proj", "up_proj", "down_proj", "act_fn"}
            and type(act).__name__ in ("SiLU", "SiLUActivation"))


@torch.no_grad()
def _same_output(original: nn.Module, lean: nn.Module, width: int, like: torch.Tensor) -> bool:
    """Whether the swap computes what the module did, on a small random float32 input."""
    x = torch.randn(2, 3, width, generator=torch.Generator().manual_seed(0)).to(like.device)
    was_training = original.training
    original.eval()
    try:
        want = original(x)
        got = (_RMSNorm.apply(x, lean.weight, lean.eps) if isinstance(lean, LeanRMSNorm)
               else lean(x))
    finally:
        original.train(was_training)
    return want.shape == got.shape and torch.allclose(want, got, rtol=1e-5, atol=1e-6)


def use_lean_layers(model: nn.Module) -> int:
    """Swap the model's RMSNorms and SwiGLU MLPs for the lean ones where they compute the same;
    returns how many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            lean: nn.Module | None = None
            eps = _norm_eps(child)
            if eps is not None:
                lean = LeanRMSNorm(child, eps)
                width, like = child.weight.shape[0], child.weight
            elif _is_swiglu_mlp(child):
                weight = getattr(child.gate_proj, "weight", None)  # peft's layer has it too
                width = getattr(child.gate_proj, "in_features", None)
                if weight is None or width is None or weight.dtype != torch.float32:
                    continue
                lean, like = LeanSwiGLUMLP(child), weight
            if lean is not None and _same_output(child, lean, width, like):
                setattr(parent, name, lean)
                swapped += 1
    return swapped


def lean_activation_bytes(config: Any, tokens: int, element_size: int) -> int | None:
    """Estimated activations a Llama-style decoder with lean layers saves for backward without
    checkpointing, for `tokens` tokens; None for a config without those dimensions.

    A layer keeps per token: the two norms' inputs and outputs (4 hidden), the attention's
    query and output and the output projection's input (3 hidden; the query counts as hidden),
    keys and values (2 kv), and gate, up and their product (3 intermediate). Plus one hidden
    per token for the final norm. LoRA's rank-r products are left out (r per projection)."""
    names = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
    if config is None or not all(isinstance(getattr(config, n, None), int) for n in names):
        return None
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = (getattr(config, "num_key_value_heads", None) or config.num_attention_heads) * head_dim
    per_layer = 7 * hidden + 2 * kv + 3 * config.intermediate_size
    return (layers * per_layer + hidden) * tokens * element_size
