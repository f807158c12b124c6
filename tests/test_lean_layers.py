"""Lean RMSNorm and SwiGLU layers: the model's own math with fewer tensors kept for backward.

Why: they replace modules of a transformers model during training, so they must give the same
outputs and gradients as the modules they replace (a wrong backward would train a different
model without any error), keep saving, adapters and state-dict keys as they were, leave alone
modules whose math differs, and actually keep less, which is their reason to exist and what
lets chat LoRA train without checkpointing by default.
"""

from __future__ import annotations

import copy

import pytest
import torch

from finetunekit.config import validate
from finetunekit.plan import saved_activation_bytes
from finetunekit.tasks.chat import ChatSFT
from finetunekit.training import lean_layers
from finetunekit.training.lean_layers import (
    FusedOnCpu,
    LeanRMSNorm,
    LeanSwiGLUMLP,
    lean_activation_bytes,
    use_lean_layers,
)

IDS = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(3))


def decoder(kind: str = "llama") -> torch.nn.Module:
    """A random 2-layer decoder whose norm weights are not all ones (so they matter)."""
    import transformers

    torch.manual_seed(0)
    shape = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    config_cls, model_cls = {"llama": ("LlamaConfig", "LlamaForCausalLM"),
                             "gemma": ("GemmaConfig", "GemmaForCausalLM")}[kind]
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**shape))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.train()


def loss_and_grads(model: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]


# fused kernels round in another order (vectorized sums): about 1e-7 of a gradient's scale
TOLERANCE = {False: {"rtol": 1e-5, "atol": 1e-7}, True: {"rtol": 1e-4, "atol": 1e-6}}


@pytest.mark.parametrize("fused", [False, True])
def test_same_loss_gradients_and_keys_as_the_model_own_layers(fused: bool) -> None:
    model = decoder()
    lean = copy.deepcopy(model)
    assert use_lean_layers(lean, fused=fused) == 2 * 3 + 1  # 2 norms, an MLP a layer; final norm
    assert isinstance(lean.model.layers[0].mlp, LeanSwiGLUMLP)
    assert isinstance(lean.model.norm, LeanRMSNorm)
    assert lean.model.norm.fused is fused
    assert list(lean.state_dict()) == list(model.state_dict())
    want_loss, want = loss_and_grads(model)
    got_loss, got = loss_and_grads(lean)
    if not fused:
        assert torch.equal(want_loss, got_loss)  # the forward is the same ops in the same order
    assert torch.allclose(want_loss, got_loss, rtol=1e-6)
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, **TOLERANCE[fused]), (a - b).abs().max()


@pytest.mark.parametrize("fused", [False, True])
def test_with_lora_keeps_less_for_backward_and_the_same_gradients(fused: bool) -> None:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    def with_lora() -> torch.nn.Module:
        return get_peft_model(decoder(), LoraConfig(r=4, target_modules="all-linear",
                                                    task_type="CAUSAL_LM",
                                                    init_lora_weights=False))

    model, lean = with_lora(), with_lora()
    assert use_lean_layers(lean, fused=fused) == 7
    # the projections stay peft's layers inside the lean MLP: adapters save as before
    assert list(get_peft_model_state_dict(lean)) == list(get_peft_model_state_dict(model))
    _, want = loss_and_grads(model)
    _, got = loss_and_grads(lean)
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, **TOLERANCE[fused]), (a - b).abs().max()

    # with frozen norm weights the norms keep the same either way; each MLP keeps one
    # [tokens, intermediate] tensor less (silu(gate))
    assert saved_bytes(model) - saved_bytes(lean) == 2 * 96 * IDS.numel() * 4


def saved_bytes(model: torch.nn.Module) -> int:
    def loss_fn(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        return m(input_ids=batch["ids"], labels=batch["ids"]).loss

    return saved_activation_bytes(model, loss_fn, {"ids": IDS})


def test_full_fine_tuning_keeps_less_in_norms_too() -> None:
    model = decoder()
    lean = copy.deepcopy(model)
    use_lean_layers(lean)
    # trained norm weights: each norm also drops its normalized input (hidden), the final too
    per_token = 2 * (2 * 64 + 96) + 64
    assert saved_bytes(model) - saved_bytes(lean) == per_token * IDS.numel() * 4


def norm_and_mlp_grads(fused: bool, tokens: int) -> list[torch.Tensor]:
    """Output and input / weight gradients of a lean norm (trained weight) feeding a lean MLP."""
    model = decoder()
    use_lean_layers(model, fused=fused)
    norm, mlp = model.model.layers[0].post_attention_layernorm, model.model.layers[0].mlp
    x = torch.randn(3, tokens, 64, generator=torch.Generator().manual_seed(tokens),
                    requires_grad=True)
    out = mlp(norm(x))
    out.pow(2).sum().backward()
    return [out.detach(), x.grad, norm.weight.grad, mlp.gate_proj.weight.grad]


def test_fused_kernels_compute_the_eager_math_for_every_batch_length(monkeypatch) -> None:
    monkeypatch.setattr(FusedOnCpu, "failed", None)
    for tokens in (7, 19):  # one compiled kernel per function serves both (dynamic shapes)
        eager, fused = norm_and_mlp_grads(False, tokens), norm_and_mlp_grads(True, tokens)
        for a, b in zip(eager, fused, strict=True):
            assert torch.allclose(a, b, **TOLERANCE[True]), (a - b).abs().max()
    for kernel in (lean_layers.rms_norm, lean_layers.rms_norm_backward, lean_layers.swiglu,
                   lean_layers.swiglu_backward):
        assert kernel.compiled is not None  # the fused path ran, not a silent fallback
    assert FusedOnCpu.failed is None


def test_models_of_every_width_share_a_few_compiled_kernels(monkeypatch) -> None:
    """A process that trains several models (a notebook, the test suite) must not pile up
    variants past dynamo's recompile limit: parameters and tensors that require grad would each
    be a variant, and so would every width and batch shape."""
    import transformers
    from torch._dynamo.utils import counters

    monkeypatch.setattr(FusedOnCpu, "failed", None)
    norm_and_mlp_grads(True, 5)  # what this process compiles for the first model
    graphs = counters["stats"]["unique_graphs"]
    for width in (16, 24, 40, 48, 72, 80, 96, 112, 128, 144):
        torch.manual_seed(width)
        config = transformers.LlamaConfig(vocab_size=50, hidden_size=width,
                                          intermediate_size=2 * width + 8, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1)
        eager = transformers.LlamaForCausalLM(config).train()
        fused = copy.deepcopy(eager)
        use_lean_layers(eager, fused=False)
        use_lean_layers(fused, fused=True)
        ids = torch.randint(0, 50, (1 + width % 3, 4 + width % 5))
        for model in (eager, fused):
            model(input_ids=ids, labels=ids).loss.backward()
        for a, b in zip(eager.parameters(), fused.parameters(), strict=True):
            assert torch.allclose(a.grad, b.grad, **TOLERANCE[True]), (a.grad - b.grad).abs().max()
    assert counters["stats"]["unique_graphs"] - graphs <= 2  # a batch of one row, say
    assert FusedOnCpu.failed is None


def test_a_failed_compile_runs_the_same_math_eagerly_and_says_so_once(monkeypatch,
                                                                      capsys) -> None:
    from torch._dynamo.exc import BackendCompilerFailed

    def no_compiler(*args):  # dynamo's wrapper: the compiler's error is its inner_exception
        inner = RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore")
        raise BackendCompilerFailed(torch.compile, inner, None) from None

    monkeypatch.setattr(FusedOnCpu, "failed", None)
    for kernel in (lean_layers.rms_norm, lean_layers.rms_norm_backward, lean_layers.swiglu,
                   lean_layers.swiglu_backward):
        monkeypatch.setattr(kernel, "compiled", no_compiler)
    want = norm_and_mlp_grads(False, 11)
    got = norm_and_mlp_grads(True, 11)
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)  # the eager math itself
    assert FusedOnCpu.failed == "RuntimeError: InvalidCxxCompiler: No working C++ compiler found"
    err = capsys.readouterr().err
    assert err.count("lean layers run unfused") == 1, err
    assert "chat.fuse_lean_layers: false" in err


def test_unfused_lean_layers_never_compile(monkeypatch) -> None:
    kernel = FusedOnCpu(lean_layers._swiglu)
    gate, up = torch.randn(2, 3), torch.randn(2, 3)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled"))
    assert torch.equal(kernel(False, gate, up), lean_layers._swiglu(gate, up))
    assert kernel.compiled is None


def test_a_norm_with_other_math_keeps_its_module() -> None:
    model = decoder("gemma")  # (1 + w) norms and a GELU MLP: neither is swapped
    before = model(input_ids=IDS).logits
    assert use_lean_layers(model) == 0
    assert torch.equal(model(input_ids=IDS).logits, before)


def test_input_the_fast_path_does_not_cover_runs_the_original_module() -> None:
    norm = decoder().model.norm
    lean = LeanRMSNorm(norm, norm.variance_epsilon)
    x = torch.randn(2, 5, 64).to(torch.bfloat16)
    assert torch.equal(lean(x), norm(x))


def test_estimate_counts_what_a_layer_keeps() -> None:
    config = decoder().config
    per_layer = 7 * 64 + 2 * 2 * 16 + 3 * 96
    assert lean_activation_bytes(config, 10, 4) == (2 * per_layer + 64) * 10 * 4
    assert lean_activation_bytes(object(), 10, 4) is None


@pytest.mark.parametrize(("peft", "lean", "compile", "capacity_mb", "expected"), [
    ("lora", True, False, 1e6, False),             # fits easily: no checkpointing
    ("lora", True, False, 1e-3, "selective"),      # would not fit in a quarter of the device
    ("lora", False, False, 1e6, "selective"),      # without the lean layers: selective
    ("none", True, False, 1e6, "selective"),       # full fine-tuning: selective
    ("lora", True, True, 1e6, False),     # compiled (lean layers off): inductor keeps as little
    ("lora", False, True, 1e6, False),
    ("lora", True, True, 1e-3, "selective"),
    ("none", True, True, 1e6, "selective"),
])
def test_auto_checkpointing_for_chat(monkeypatch, peft, lean, compile, capacity_mb,
                                     expected) -> None:
    import finetunekit.tasks.chat as chat

    monkeypatch.setattr(chat, "device_capacity_mb", lambda: capacity_mb)
    cfg = validate({"task": "chat", "model": "m", "data": {"train": "t.jsonl"},
                    "peft": {"method": peft}, "chat": {"lean_layers": lean},
                    "train": {"compile": compile}})
    assert ChatSFT(cfg).lean_layers is (lean and not compile)
    assert cfg.train.gradient_checkpointing == "auto"  # settled once the model is known
    assert ChatSFT(cfg).checkpointing(decoder()) == expected
    assert validate({"task": "text-classification", "model": "m", "data": {"train": "t.jsonl"}}
                    ).train.gradient_checkpointing is False


def test_switching_lean_layers_does_not_block_a_resume() -> None:
    from finetunekit.run import fingerprint

    def chat(lean: bool, fused: bool = True, neftune: float | None = None) -> dict:
        return fingerprint(validate({"task": "chat", "model": "m", "data": {"train": "t.jsonl"},
                                     "chat": {"lean_layers": lean, "fuse_lean_layers": fused,
                                              "neftune_noise_alpha": neftune}}))

    assert chat(True) == chat(False)  # the same computation, so the same checkpoint is valid
    assert chat(True, fused=True) == chat(True, fused=False)
    # training noise, like the learning rate, leaves the checkpoint valid (and checkpoints
    # written before the key existed still resume)
    assert chat(True, neftune=5.0) == chat(True)


def test_root_cause_reaches_the_innermost_error_through_either_link() -> None:
    from torch._dynamo.exc import BackendCompilerFailed

    compiler = AttributeError("torch._inductor.config.fallback_random does not exist")
    wrapped = BackendCompilerFailed(torch.compile, compiler, None)  # inner_exception, no cause
    try:
        raise RuntimeError("while compiling") from wrapped
    except RuntimeError as outer:  # and a __cause__ link above it
        assert lean_layers.root_cause(outer) == (
            "AttributeError: torch._inductor.config.fallback_random does not exist")
    assert lean_layers.root_cause(ValueError("")) == "ValueError"
