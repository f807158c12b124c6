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

On CPU their elementwise math is also compiled (`torch.compile` of the few small functions
below, not of the model) into fused kernels: eager, each of those steps is its own pass over a
`[tokens, hidden]` or `[tokens, intermediate]` tensor, and in a training step, where those
tensors are out of cache, those passes run 2 to 3.5 times slower than alone. Fused, the SwiGLU
backward reads gate, up and the gradient once and writes both gradients once. On the chat bench
model (8 rows, about 2,300 tokens a step, fp32, 2 cores, fused and eager runs alternated) LoRA
trained 2.2% faster over seven pairs (standard error 1.0%) and peaked 50-440 MiB lower, with no
temporaries between the steps; full fine-tuning (selective checkpointing) ran at the same speed
and peaked 350-570 MiB lower. Compiling costs about 20 s once (inductor caches the kernels on
disk for later runs); the shapes are dynamic, so the varied batch lengths of chat share them.
Where compiling fails (no C++ compiler, say) the layers say so once and run the same math eagerly;
on GPU they run it eagerly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight * x * rstd` and rstd = rsqrt(mean(x^2) + eps)."""
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))
    return (x * rstd).mul_(weight), rstd


def _rms_norm_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       rstd: torch.Tensor, weight_grad: bool
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The input's gradient, and the weight's when it trains, from x and rstd."""
    normed = x * rstd
    grad_weight = (grad * normed).reshape(-1, grad.shape[-1]).sum(0) if weight_grad else None
    grad_normed = grad * weight
    # d/dx of x * rstd: rstd * (g - x_hat * mean(g * x_hat))
    dot = (grad_normed * normed).mean(-1, keepdim=True)
    return grad_normed.sub_(normed.mul_(dot)).mul_(rstd), grad_weight


def _swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return nn.functional.silu(gate).mul_(up)


def _swiglu_backward(grad: torch.Tensor, gate: torch.Tensor, up: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of gate and up, recomputing silu(gate)."""
    grad_gate = torch.ops.aten.silu_backward(grad * up, gate)  # the op autograd itself uses
    grad_up = nn.functional.silu(gate).mul_(grad)
    return grad_gate, grad_up


class FusedOnCpu:
    """One of the functions above, compiled on its first CPU call into fused kernels; eager on
    other devices, when turned off, and from the first failure to compile on (said once)."""

    failed: str | None = None  # why compiling failed, for every kernel: the cause is shared

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.compiled: Callable[..., Any] | None = None

    def __call__(self, fused: bool, *args: Any) -> Any:
        if not fused or FusedOnCpu.failed is not None or args[0].device.type != "cpu":
            return self.fn(*args)
        if self.compiled is None:
            # dynamic: chat's batch lengths vary; dynamic_threads: the kernels use the thread
            # count torch has when they run, not the one it had when they were compiled;
            # compile_threads 1: the few kernels compile in this process, with no pool of
            # compile workers to start (or to lose) beside a training job. Past dynamo's
            # recompile limit (8 variants a function) a call runs eagerly.
            self.compiled = torch.compile(self.fn, dynamic=True,
                                          options={"cpp.dynamic_threads": True,
                                                   "compile_threads": 1})
        # detached: a parameter or a tensor that requires grad would be a variant of its own
        # (the autograd Functions below do the differentiating)
        plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        try:
            return self.compiled(*plain)
        except Exception as error:  # e.g. no C++ compiler for inductor's kernels
            # the math is ours and runs eagerly below: an error that is not the compiler's
            # raises again there
            FusedOnCpu.failed = root_cause(error)
            print(f"finetunekit: the lean layers run unfused (compiling their kernels failed: "
                  f"{FusedOnCpu.failed}); set chat.fuse_lean_layers: false to skip trying",
                  file=sys.stderr, flush=True)
            return self.fn(*args)


def root_cause(error: BaseException) -> str:
    """The innermost exception of a chain, as `Type: first line`: dynamo wraps the compiler's
    error in a `BackendCompilerFailed` whose own first line says only which backend raised, and
    which keeps the compiler's error in `inner_exception` (its `__cause__` is None)."""
    seen = {id(error)}
    while True:
        inner = error.__cause__ or getattr(error, "inner_exception", None)
        if not isinstance(inner, BaseException) or id(inner) in seen:
            break
        error = inner
        seen.add(id(error))
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


rms_norm, rms_norm_backward = FusedOnCpu(_rms_norm), FusedOnCpu(_rms_norm_backward)
swiglu, swiglu_backward = FusedOnCpu(_swiglu), FusedOnCpu(_swiglu_backward)


class _RMSNorm(torch.autograd.Function):
    """`weight * x * rstd`, rstd = rsqrt(mean(x^2) + eps); keeps x and rstd for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float,
                fused: bool) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # one dynamic size, whatever the batch shape
        out, rstd = rms_norm(fused, rows, weight, eps)
        ctx.save_for_backward(rows, weight, rstd)
        ctx.fused = fused
        return out.view(x.shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, weight, rstd = ctx.saved_tensors
        grad_x, grad_weight = rms_norm_backward(ctx.fused, grad.reshape(rows.shape), rows,
                                                weight, rstd, ctx.needs_input_grad[1])
        return grad_x.view(grad.shape), grad_weight, None, None


class _SwiGLU(torch.autograd.Function):
    """`silu(gate) * up`; keeps gate and up, and recomputes silu(gate) in backward."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor, fused: bool) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        ctx.fused = fused
        return swiglu(fused, gate.reshape(-1), up.reshape(-1)).view(gate.shape)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gate, up = ctx.saved_tensors
        grad_gate, grad_up = swiglu_backward(ctx.fused, grad.reshape(-1), gate.reshape(-1),
                                             up.reshape(-1))
        return grad_gate.view(gate.shape), grad_up.view(up.shape), None


class LeanRMSNorm(nn.Module):
    """Stands in for a Llama-style RMSNorm; holds the same `weight` parameter."""

    def __init__(self, original: nn.Module, eps: float, fused: bool = True) -> None:
        super().__init__()
        self.weight = original.weight
        self.eps = eps
        self.fused = fused
        # not a submodule: its weight is ours, and the state dict must keep one key for it
        self.__dict__["original"] = original

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or self.weight.dtype != torch.float32 \
                or torch.is_autocast_enabled(x.device.type):
            return self.original(x)
        return _RMSNorm.apply(x, self.weight, self.eps, self.fused)


class LeanSwiGLUMLP(nn.Module):
    """Stands in for a `down(silu(gate(x)) * up(x))` MLP; holds the same three projections."""

    def __init__(self, original: nn.Module, fused: bool = True) -> None:
        super().__init__()
        self.gate_proj = original.gate_proj
        self.up_proj = original.up_proj
        self.down_proj = original.down_proj
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(_SwiGLU.apply(self.gate_proj(x), self.up_proj(x), self.fused))


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
        got = (_RMSNorm.apply(x, lean.weight, lean.eps, lean.fused)
               if isinstance(lean, LeanRMSNorm) else lean(x))
    finally:
        original.train(was_training)
    return want.shape == got.shape and torch.allclose(want, got, rtol=1e-5, atol=1e-6)


def use_lean_layers(model: nn.Module, fused: bool = True) -> int:
    """Swap the model's RMSNorms and SwiGLU MLPs for the lean ones where they compute the same
    (with their math fused into compiled kernels on CPU, unless `fused` is False); returns how
    many were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            lean: nn.Module | None = None
            eps = _norm_eps(child)
            if eps is not None:
                lean = LeanRMSNorm(child, eps, fused=False)
                width, like = child.weight.shape[0], child.weight
            elif _is_swiglu_mlp(child):
                weight = getattr(child.gate_proj, "weight", None)  # peft's layer has it too
                width = getattr(child.gate_proj, "in_features", None)
                if weight is None or width is None or weight.dtype != torch.float32:
                    continue
                lean, like = LeanSwiGLUMLP(child, fused=False), weight
            if lean is not None and _same_output(child, lean, width, like):  # the math, eager
                lean.fused = fused
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
