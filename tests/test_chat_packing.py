"""Packing and the chunked loss on a tiny random Llama: same numbers as the plain computation.

Why: a packed row that lets one example attend to another, or positions that do not restart,
silently trains on a different objective; a chunked loss that drops or double-counts a chunk
would too. Each check compares against the unpacked / unchunked result.
"""

from __future__ import annotations

from pathlib import Path

import chat_fixtures
import pytest
import torch
import torch.nn.functional as F
from chat_fixtures import needs_smollm2, write_jsonl

from finetunekit.config import validate
from finetunekit.data.readers import WHERE
from finetunekit.tasks.chat import ChatSFT
from finetunekit.training.losses import (
    IGNORE,
    causal_lm_loss_sum,
    causal_lm_parts,
    chunked_ce_sum,
)

pytestmark = needs_smollm2
smollm2_dir = chat_fixtures.smollm2_dir
smollm2_tokenizer = chat_fixtures.smollm2_tokenizer
tiny_llama = chat_fixtures.tiny_llama  # fixtures shared by the chat tests

CONVERSATIONS = [
    [("user", "Hi"), ("assistant", "Hello! How can I help you today?")],
    [("system", "Be brief."), ("user", "Capital of France?"), ("assistant", "Paris.")],
    [("user", "Count to three."), ("assistant", "One, two, three."), ("user", "Again"),
     ("assistant", "One two three")],
    [("user", "Say yes"), ("assistant", "Yes")],
]


@pytest.fixture(scope="module")
def task_and_model(tiny_llama, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    rows = [{"messages": [{"role": r, "content": c} for r, c in conv]} for conv in CONVERSATIONS]
    path = write_jsonl(tmp_path_factory.mktemp("packing") / "d.jsonl", rows)
    cfg = validate({"task": "chat", "model": str(tiny_llama), "data": {"train": str(path)}})
    task = ChatSFT(cfg)
    read = task.read(path, display="d.jsonl").rows
    model = task.load(str(tiny_llama), read)
    model.eval()
    assert isinstance(model, type(AutoModelForCausalLM.from_config(model.config)))
    return task, model, task.encode(read, training=True)


def test_packed_row_logits_equal_examples_alone(task_and_model):
    task, model, examples = task_and_model
    packed = task.collate_packed([examples[:3], examples[3:]])
    with torch.no_grad():
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                       use_cache=False).logits
        at = 0
        for e in examples[:3]:
            n = len(e.input_ids)
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            torch.testing.assert_close(logits[0, at : at + n], alone, atol=1e-4, rtol=0)
            at += n
        alone = model(input_ids=torch.tensor([examples[3].input_ids])).logits[0]
        torch.testing.assert_close(logits[1, : len(examples[3].input_ids)], alone, atol=1e-4,
                                   rtol=0)
    # the check has teeth: without restarting positions the second example's logits differ
    with torch.no_grad():
        plain = model(input_ids=packed["input_ids"][:1], use_cache=False).logits[0]
    n0 = len(examples[0].input_ids)
    assert (plain[n0 : n0 + 5] - logits[0, n0 : n0 + 5]).abs().max() > 1e-3


def test_packed_and_unpacked_loss_and_items_agree(task_and_model):
    task, model, examples = task_and_model
    padded = task.collate(examples)
    packed = task.collate_packed([examples[:2], examples[2:]])
    assert padded["num_items"] == packed["num_items"] == sum(e.trained_tokens for e in examples)
    with torch.no_grad():
        a = task.loss(model, padded)
        b = task.loss(model, packed)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    # and both equal the sum of each example's own loss
    with torch.no_grad():
        own = sum(task.loss(model, task.collate([e])) for e in examples)
    torch.testing.assert_close(a, own, atol=1e-4, rtol=1e-5)


def test_right_padded_batches_train_the_same_without_an_attention_mask(task_and_model):
    """`task.loss` passes no mask for right-padded rows (causal attention already hides the
    padding after each example); loss and gradients must equal the masked computation."""
    task, model, examples = task_and_model
    padded = task.collate(examples)
    assert (padded["attention_mask"] == 0).any()  # the batch really has padding
    results = []
    for mask in (padded["attention_mask"], None):
        model.zero_grad()
        loss = causal_lm_loss_sum(model, padded["input_ids"], padded["targets"],
                                  attention_mask=mask)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    model.zero_grad()
    torch.testing.assert_close(task.loss(model, padded), results[0][0])
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=1e-5)
    for without, masked in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(without, masked, atol=1e-5, rtol=1e-4)


def test_targets_never_cross_example_boundaries(task_and_model):
    task, _, examples = task_and_model
    packed = task.collate_packed([examples])
    ends = torch.tensor([len(e.input_ids) for e in examples]).cumsum(0) - 1
    assert (packed["targets"][0, ends] == IGNORE).all()
    assert (packed["position_ids"][0, ends[:-1] + 1] == 0).all()


def test_chunked_loss_equals_plain_cross_entropy_and_gradients(task_and_model):
    task, model, examples = task_and_model
    batch = task.collate(examples)
    plain = causal_lm_loss_sum(model, batch["input_ids"], batch["targets"],
                               batch["attention_mask"], chunked=False)
    grads_plain = torch.autograd.grad(plain, [model.model.embed_tokens.weight])[0]
    chunked = causal_lm_loss_sum(model, batch["input_ids"], batch["targets"],
                                 batch["attention_mask"], chunked=True, chunk_size=7)
    grads_chunked = torch.autograd.grad(chunked, [model.model.embed_tokens.weight])[0]
    torch.testing.assert_close(plain, chunked, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grads_plain, grads_chunked, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("chunked", [False, True])
def test_per_row_losses_add_up_to_the_batch_loss(task_and_model, chunked):
    """Each row's summed loss (evaluation's per-row terms) is that row's loss alone."""
    task, model, examples = task_and_model
    batch = task.collate(examples)
    with torch.no_grad():
        rows = causal_lm_loss_sum(model, batch["input_ids"], batch["targets"], chunked=chunked,
                                  chunk_size=7, per_row=True)
        total = causal_lm_loss_sum(model, batch["input_ids"], batch["targets"], chunked=chunked)
        one = task.collate(examples[1:2])
        alone = causal_lm_loss_sum(model, one["input_ids"], one["targets"], chunked=chunked)
    assert rows.shape == (len(examples),)
    torch.testing.assert_close(rows.sum(), total, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(rows[1], alone, atol=1e-4, rtol=1e-5)


def test_chat_evaluation_scores_each_row(task_and_model):
    task, model, _ = task_and_model
    rows = task.read(Path(task.cfg.data.train), display="d.jsonl").rows
    result = task.evaluate(model, rows)
    scores = result.row_scores
    assert scores.rows == [r[WHERE] for r in rows]
    for name in ("loss", "exact_match", "token_f1", "rouge_l"):
        assert scores.value(name) == pytest.approx(result.metrics[name], rel=1e-5, abs=1e-7)
    assert sum(scores.metrics["loss"][1]) == sum(e.trained_tokens for e in task.encode(rows, False))


@pytest.mark.slow
def test_a_compiled_model_runs_its_decoder_compiled_with_the_same_loss(task_and_model):
    """train.compile wraps the whole model, but the chunked loss calls its decoder directly: that
    decoder must be the compiled one (else compile does nothing for chat), with the same loss."""
    from torch._dynamo.utils import counters

    task, model, examples = task_and_model
    batch = task.collate(examples)
    args = (batch["input_ids"], batch["targets"], batch["attention_mask"])
    eager = causal_lm_loss_sum(model, *args)
    wrapped = torch.compile(model)
    decoder, head = causal_lm_parts(wrapped)
    assert decoder is not model.model and decoder._orig_mod is model.model
    assert head is model.lm_head and causal_lm_parts(wrapped)[0] is decoder  # compiled once
    assert causal_lm_parts(model)[0] is model.model  # the unwrapped model stays eager
    graphs = counters["stats"]["unique_graphs"]
    compiled = causal_lm_loss_sum(wrapped, *args)
    assert counters["stats"]["unique_graphs"] > graphs
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-5)


def test_chunked_ce_sum_matches_reference_and_ignores_masked():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(3, 11, 16, requires_grad=True)
    targets = torch.randint(0, 50, (3, 11))
    targets[0, :4] = IGNORE
    targets[2] = IGNORE
    ref = F.cross_entropy(head(hidden).flatten(0, 1), targets.flatten(), reduction="sum",
                          ignore_index=IGNORE)
    got = chunked_ce_sum(hidden, head, targets, chunk_size=4)
    torch.testing.assert_close(got, ref)
    g_ref = torch.autograd.grad(ref, [hidden, head.weight])
    g_got = torch.autograd.grad(chunked_ce_sum(hidden, head, targets, chunk_size=4),
                                [hidden, head.weight])
    for a, b in zip(g_ref, g_got, strict=True):
        torch.testing.assert_close(a, b)


def test_chunked_loss_through_peft(task_and_model):
    from peft import LoraConfig, get_peft_model

    task, model, examples = task_and_model
    batch = task.collate(examples)
    with torch.no_grad():
        before = task.loss(model, batch)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    try:
        with torch.no_grad():
            torch.testing.assert_close(task.loss(lora, batch), before)  # B = 0 at init
        loss = task.loss(lora, batch)
        loss.backward()
        trained = [p for n, p in lora.named_parameters() if "lora_A" in n]
        assert trained and all(p.grad is not None for p in trained)
        # LoRA layers are inside the decoder the chunked path calls: a changed B changes it
        with torch.no_grad():
            for n, p in lora.named_parameters():
                if "lora_B" in n:
                    p.add_(0.05)
            assert (task.loss(lora, batch) - before).abs() > 1e-3
    finally:
        lora.unload()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("frozen_head", [False, True])
def test_fused_linear_cross_entropy_matches_autograd(bias: bool, frozen_head: bool):
    """The head's gradients made in the forward pass equal autograd's through plain CE."""
    from finetunekit.training.losses import LinearCrossEntropy

    torch.manual_seed(1)
    head = torch.nn.Linear(16, 50, bias=bias).requires_grad_(not frozen_head)
    hidden = torch.randn(23, 16, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    params = [hidden] + ([] if frozen_head else list(head.parameters()))
    ref = F.cross_entropy(head(hidden), targets, reduction="sum")
    g_ref = torch.autograd.grad(ref * 0.5, params)
    got = LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, 5)
    g_got = torch.autograd.grad(got * 0.5, params)
    torch.testing.assert_close(got, ref)
    for a, b in zip(g_ref, g_got, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("peft", ["none", "lora"])
def test_compiled_chat_training_matches_eager(tiny_llama, tmp_path, peft):
    """`train.compile: true` on chat trains the same weights as eager (no dropout in Llama), with
    selective checkpointing inside the compiled decoder; for LoRA through the folded layer's
    autograd Function (the saved model has the adapters merged)."""
    from safetensors.torch import load_file
    from torch._dynamo.utils import counters

    from finetunekit.run import train

    rows = [{"messages": [{"role": "user", "content": f"Say {i}"},
                          {"role": "assistant", "content": f"{i} " * (i % 7 + 1)}]}
            for i in range(24)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    weights = {}
    for compiled in (False, True):
        cfg = validate({"task": "chat", "model": str(tiny_llama),
                        "data": {"train": str(data), "validation": 0.25},
                        "peft": {"method": peft, "r": 4},
                        "chat": {"fuse_lean_layers": False},  # the eager run compiles nothing
                        "train": {"max_steps": 3, "batch_size": 4, "compile": compiled,
                                  "gradient_checkpointing": "selective"},
                        "eval": {"baseline": False, "max_examples": 2},
                        "output": str(tmp_path / f"run-{peft}-{compiled}")})
        assert cfg.train.gradient_checkpointing == "selective"
        graphs = counters["stats"]["unique_graphs"]
        run = train(cfg, progress=False)
        assert (counters["stats"]["unique_graphs"] > graphs) is compiled
        weights[compiled] = load_file(str(run.model_dir / "model.safetensors"))
    diff = max(float((weights[True][k] - weights[False][k]).abs().max()) for k in weights[False])
    assert diff < 1e-5, diff


def test_neftune_noises_embeddings_only_while_training(task_and_model):
    """NEFTune: while training, uniform noise within alpha / sqrt(length x width) on the input
    embeddings in training mode, none in eval mode; none at all once training is over."""
    task, model, _ = task_and_model
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    embed = model.get_input_embeddings()
    clean = embed(ids).detach()
    task.cfg.chat.neftune_noise_alpha = 5.0
    try:
        with task.while_training(model):
            embed.train()
            noise = embed(ids).detach() - clean
            assert noise.abs().max() <= 5.0 / (9 * 64) ** 0.5 + 1e-6
            assert noise.abs().mean() > 0.25 * 5.0 / (9 * 64) ** 0.5  # uniform: mean is half
            embed.eval()
            torch.testing.assert_close(embed(ids), clean)
        embed.train()
        torch.testing.assert_close(embed(ids), clean)  # the hook is gone
    finally:
        embed.eval()
        task.cfg.chat.neftune_noise_alpha = None


@pytest.mark.slow
def test_neftune_reaches_the_training_loss(tiny_llama, tmp_path):
    """`chat.neftune_noise_alpha` acts in a real run: the first step's loss (same seed, same
    batch) moves with the noise."""
    import json

    from finetunekit.run import train

    rows = [{"messages": [{"role": "user", "content": f"Say {i}"},
                          {"role": "assistant", "content": f"{i} " * (i % 5 + 1)}]}
            for i in range(8)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    first_loss = {}
    for alpha in (None, 50.0):
        cfg = validate({"task": "chat", "model": str(tiny_llama),
                        "data": {"train": str(data), "validation": 0.25},
                        "chat": {"neftune_noise_alpha": alpha, "fuse_lean_layers": False},
                        "train": {"max_steps": 1, "batch_size": 4, "log_every": 1},
                        "eval": {"baseline": False, "max_examples": 2},
                        "output": str(tmp_path / f"run-{alpha}")})
        run = train(cfg, progress=False)
        log = [json.loads(x) for x in (run.dir / "metrics.jsonl").read_text().splitlines()]
        first_loss[alpha] = next(r["loss"] for r in log if "loss" in r)
    assert first_loss[50.0] != pytest.approx(first_loss[None], rel=1e-4)
