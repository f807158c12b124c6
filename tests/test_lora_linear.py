"""The folded LoRA layer: peft's math and format, with the adapter folded into the weight.

Why: the layer replaces peft's training forward for every LoRA run, so a wrong gradient for A or
B, a missed input gradient, or an adapter file peft cannot read would silently change training
or break export; each is compared against peft's own layer on the same weights.
"""

from __future__ import annotations

import copy

import pytest
import torch

from finetunekit.config import PeftConfig
from finetunekit.training.activation_checkpointing import set_activation_checkpointing
from finetunekit.training.lora_linear import FoldedLoraLinear
from finetunekit.training.peft_setup import apply_peft


def tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True))


def with_lora(base: torch.nn.Module, ours: bool, dropout: float = 0.0, dora: bool = False,
              rslora: bool = False) -> torch.nn.Module:
    """LoRA on all linear layers, through our setup or plain peft; same A init, random B."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    if ours:
        cfg = PeftConfig(method="lora", r=4, alpha=8, dropout=dropout, target="all-linear",
                         dora=dora, rslora=rslora)
        model = apply_peft(copy.deepcopy(base), cfg, "CAUSAL_LM")
    else:
        model = get_peft_model(copy.deepcopy(base), LoraConfig(
            r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear",
            task_type="CAUSAL_LM", use_dora=dora, use_rslora=rslora))
    torch.manual_seed(2)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.2)  # peft starts B at zero, which would hide a wrong B @ A
    return model.train()


def loss_and_grads(model: torch.nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = torch.randint(0, 101, (3, 20), generator=torch.Generator().manual_seed(3))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def backward_nodes(model: torch.nn.Module) -> set[str]:
    ids = torch.randint(0, 101, (1, 8), generator=torch.Generator().manual_seed(4))
    seen, stack, names = set(), [model(input_ids=ids, labels=ids).loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


@pytest.mark.parametrize("checkpointing", [False, True, "selective"])
def test_folded_layer_gives_peft_loss_and_gradients(checkpointing):
    base = tiny_llama()
    reference, ours = with_lora(base, ours=False), with_lora(base, ours=True)
    assert sum(isinstance(m, FoldedLoraLinear) for m in ours.modules()) == 14  # 7 per layer
    set_activation_checkpointing(ours, checkpointing)
    ref_loss, ref_grads = loss_and_grads(reference)
    our_loss, our_grads = loss_and_grads(ours)
    torch.testing.assert_close(our_loss, ref_loss)
    assert ref_grads.keys() == our_grads.keys() and len(ref_grads) == 28  # A and B of 14 layers
    for name, grad in ref_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert "_FoldedLoraLinearBackward" in backward_nodes(ours)


def test_input_gradient_and_bias_of_one_layer():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    layer = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=True))
    config = LoraConfig(r=2, lora_alpha=3, target_modules=["0"], init_lora_weights=False)
    plain = get_peft_model(copy.deepcopy(layer), config)
    config = LoraConfig(r=2, lora_alpha=3, target_modules=["0"], init_lora_weights=False)
    config._register_custom_module({torch.nn.Linear: FoldedLoraLinear})
    torch.manual_seed(6)
    folded = get_peft_model(copy.deepcopy(layer), config)
    folded.load_state_dict(plain.state_dict())
    for model in (plain, folded):
        model.base_model.model[0].base_layer.bias.requires_grad_(True)  # a trainable bias too
    x = torch.randn(4, 3, 6)
    outs, grads = [], []
    for model in (plain, folded):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        (out * torch.arange(5.0)).sum().backward()
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(outs[1], outs[0])
    for ours, theirs in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(ours, theirs)


def test_uncovered_cases_run_peft_forward():
    base = tiny_llama()
    with_dropout = with_lora(base, ours=True, dropout=0.1)
    assert "_FoldedLoraLinearBackward" not in backward_nodes(with_dropout)
    ours = with_lora(base, ours=True)
    with ours.disable_adapter():
        assert "_FoldedLoraLinearBackward" not in backward_nodes(ours)
    assert "_FoldedLoraLinearBackward" in backward_nodes(ours)


def test_adapters_load_and_merge_in_plain_peft(tmp_path):
    from peft import PeftModel

    base = tiny_llama()
    ours = with_lora(base, ours=True).eval()
    ours.save_pretrained(tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter").eval()
    assert not any(isinstance(m, FoldedLoraLinear) for m in loaded.modules())
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = ours(input_ids=ids).logits
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected)
        merged = ours.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("dora, rslora", [(False, True), (True, False), (True, True)])
def test_lora_variants_train_as_peft_trains_them(dora, rslora):
    """rsLoRA keeps the folded fast path with peft's alpha / sqrt(r) scale; DoRA's magnitude
    vectors train through peft's own forward; both give peft's loss and gradients and merge."""
    base = tiny_llama()
    reference = with_lora(base, ours=False, dora=dora, rslora=rslora)
    ours = with_lora(base, ours=True, dora=dora, rslora=rslora)
    layer = next(m for m in ours.modules() if isinstance(m, FoldedLoraLinear))
    assert layer.scaling["default"] == pytest.approx(8 / 4 ** 0.5 if rslora else 8 / 4)
    ref_loss, ref_grads = loss_and_grads(reference)
    our_loss, our_grads = loss_and_grads(ours)
    torch.testing.assert_close(our_loss, ref_loss)
    magnitudes = [n for n in our_grads if "lora_magnitude_vector" in n]
    assert len(magnitudes) == (14 if dora else 0)
    assert our_grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert ("_FoldedLoraLinearBackward" in backward_nodes(ours)) is not dora
    ours.eval()
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = ours(input_ids=ids).logits
        torch.testing.assert_close(ours.merge_and_unload()(input_ids=ids).logits, expected,
                                   rtol=1e-4, atol=1e-5)


def test_lora_variants_enter_the_resume_fingerprint_only_when_on():
    from finetunekit.config import validate
    from finetunekit.run import fingerprint

    def peft_part(**peft) -> dict:
        return fingerprint(validate({"task": "chat", "model": "m", "data": {"train": "t.jsonl"},
                                     "peft": {"method": "lora", **peft}}))["peft"]

    # the keys a checkpoint written before the variants existed carries: it still resumes
    assert set(peft_part()) == {"method", "r", "alpha", "dropout", "target"}
    assert peft_part(dora=True)["dora"] is True and peft_part(rslora=True)["rslora"] is True
