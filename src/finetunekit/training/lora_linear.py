"""A LoRA linear layer that trains at the cost of the frozen matmuls alone.

peft's `lora.Linear` computes `base(x) + B(A(x)) * scaling`: besides the two big matmuls a
frozen layer needs (the output, and the input gradient), each call writes and rereads several
full `[tokens, d_out]` activations (B's output, its scaled copy, the sum; in backward the scaled
gradient, a second `[tokens, d_in]` input gradient and its sum). Those passes are memory-bound,
and on a CPU they cost as much as the weight gradients LoRA saves: profiled on the chat bench
(SmolLM2-135M shape, 8 x 447 tokens), LoRA's step was as slow as full fine-tuning's.

Here the adapter is folded into the weight for each call instead, `W + scaling * B @ A`, a
`[d_out, d_in]` matrix that costs `2 * r * d_in * d_out` FLOPs (0.3% of the layer's matmul at
r=16 and 3,500 tokens) and weight-sized memory. The output is then one matmul, the input gradient
another, and the adapter gradients come from four rank-r matmuls that only read activations:
`dA = s * (g @ B)^T @ x` and `dB = s * g^T @ (x @ A^T)`. The math is LoRA's exactly; only the
rounding order differs (about 1e-7 relative in fp32).

It is peft's own layer class with a different `forward`, registered through peft's custom-module
API (`LoraConfig._register_custom_module`), so adapters save, load and merge in peft's format.
Any case the fast path does not cover (dropout, DoRA and other variants, several active adapters,
merged or disabled adapters, a trainable base weight, autocast, mixed dtypes) runs peft's forward
unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear


class _FoldedLoraLinear(torch.autograd.Function):
    """`x @ (W + s * B @ A)^T + bias` with W frozen: gradients for x, A, B and the bias.

    The adapter gradients are rank-r products that only read activations, so their cost is
    memory traffic, and two choices halve it. `x @ A^T` ([tokens, r]) is made in forward, right
    after the output's matmul has read x, and kept (r floats a token) instead of reading x again
    in backward. `dB` is computed as `((x A^T)^T @ g)^T`: the direct `g^T @ (x A^T)`, a product
    over tokens whose big operand is transposed, ran at half the memory rate (5-6 against 11 GB/s
    on this CPU, out of cache). In backward, g is read by the input gradient's matmul and at once
    again for `g @ B` and `dB`, while it is still in cache."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
        out = torch.nn.functional.linear(x, torch.addmm(weight, lora_b, lora_a, alpha=scaling),
                                         bias)
        x_a = None
        if ctx.needs_input_grad[4]:
            x_a = x.reshape(-1, x.shape[-1]) @ lora_a.t()
        ctx.save_for_backward(x, weight, lora_a, lora_b, x_a)
        ctx.scaling = scaling
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, lora_a, lora_b, x_a = ctx.saved_tensors
        scaling = ctx.scaling
        rows_g = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_bias = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            folded = torch.addmm(weight, lora_b, lora_a, alpha=scaling)
            grad_x = (rows_g @ folded).view(x.shape)
        if ctx.needs_input_grad[3]:
            g_b = (rows_g @ lora_b).mul_(scaling)
        if ctx.needs_input_grad[4]:
            grad_b = (x_a.t() @ rows_g).mul_(scaling).t()
        if ctx.needs_input_grad[2]:
            grad_bias = rows_g.sum(0)
        if ctx.needs_input_grad[3]:
            grad_a = g_b.t() @ x.reshape(-1, x.shape[-1])
        return grad_x, None, grad_bias, grad_a, grad_b, None


class FoldedLoraLinear(PeftLoraLinear):
    """peft's LoRA `Linear`, whose training forward folds the adapter into the weight."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = self._foldable_adapter(x, args, kwargs)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        return _FoldedLoraLinear.apply(x, base.weight, base.bias, self.lora_A[adapter].weight,
                                       self.lora_B[adapter].weight, self.scaling[adapter])

    def _foldable_adapter(self, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
        """The one active plain-LoRA adapter the fast path can run, or None for peft's path."""
        if args or kwargs or self.disable_adapters or self.merged or self.fan_in_fan_out:
            return None
        active = [name for name in self.active_adapters if name in self.lora_A]
        if len(active) != 1:
            return None
        name = active[0]
        base = self.get_base_layer()
        if (name in self.lora_variant
                or not isinstance(self.lora_dropout[name], torch.nn.Identity)
                or self.lora_B[name].bias is not None
                or not isinstance(base, torch.nn.Linear)
                or base.weight.requires_grad
                or torch.is_autocast_enabled(x.device.type)):
            return None
        dtypes = {x.dtype, base.weight.dtype, self.lora_A[name].weight.dtype,
                  self.lora_B[name].weight.dtype}
        return name if len(dtypes) == 1 else None
