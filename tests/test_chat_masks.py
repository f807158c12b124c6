"""Loss masks with SmolLM2's real chat template: exactly the assistant answers carry loss.

Why: a mask that is off by one token trains the model to emit the role header or never to stop;
one that misses later turns wastes multi-turn data. The template is the tokenizer's own, so these
checks fail if the span derivation drifts from what the template renders.
"""

from __future__ import annotations

import chat_fixtures
import pytest
from chat_fixtures import needs_smollm2, write_jsonl

from finetunekit.config import validate
from finetunekit.errors import UserError
from finetunekit.tasks.chat import ChatSFT
from finetunekit.tasks.chat_encode import encode_row

pytestmark = needs_smollm2
smollm2_dir = chat_fixtures.smollm2_dir
smollm2_tokenizer = chat_fixtures.smollm2_tokenizer  # fixtures shared by the chat tests


def _trained_text(tok, enc) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for t, (tid, m) in enumerate(zip(enc.input_ids, enc.train_mask, strict=True)):
        if m and t > 0:
            current.append(tid)
        elif current:
            runs.append(tok.decode(current))
            current = []
    if current:
        runs.append(tok.decode(current))
    return runs


def _messages(*turns):
    roles = ["user", "assistant"]
    return {"kind": "messages",
            "messages": [{"role": roles[i % 2], "content": c} for i, c in enumerate(turns)]}


def test_single_turn_trains_answer_and_end_of_turn(smollm2_tokenizer):
    tok = smollm2_tokenizer
    enc = encode_row(tok, _messages("What is 2+2?", "4, of course."), "x", True, 512)
    assert _trained_text(tok, enc) == ["4, of course.<|im_end|>"]
    # the ids are exactly what the tokenizer's own template gives
    ids = tok.apply_chat_template(_messages("What is 2+2?", "4, of course.")["messages"],
                                  tokenize=True, return_dict=True)["input_ids"]
    assert enc.input_ids == list(ids)
    assert enc.train_mask[enc.input_ids.index(tok.convert_tokens_to_ids("<|im_end|>"))] == 0


def test_multi_turn_trains_every_assistant_turn(smollm2_tokenizer):
    tok = smollm2_tokenizer
    row = _messages("Hi", "Hello! How can I help?", "Name a color.", "Blue", "Another?", "Red.")
    row["messages"].insert(0, {"role": "system", "content": "You are terse."})
    enc = encode_row(tok, row, "x", True, 512)
    assert _trained_text(tok, enc) == ["Hello! How can I help?<|im_end|>", "Blue<|im_end|>",
                                       "Red.<|im_end|>"]
    everything = encode_row(tok, row, "x", False, 512)
    assert everything.trained_tokens == len(everything.input_ids) - 1


def test_prompt_completion_and_text(smollm2_tokenizer):
    tok = smollm2_tokenizer
    conv = {"kind": "messages", "train_from": 2, "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Earlier answer"},
        {"role": "assistant", "content": "Completion."}]}
    assert _trained_text(tok, encode_row(tok, conv, "x", True, 512)) == ["Completion.<|im_end|>"]
    plain = {"kind": "completion", "prompt": "The sky is", "completion": " blue."}
    assert _trained_text(tok, encode_row(tok, plain, "x", True, 512)) == [" blue.<|im_end|>"]
    text = encode_row(tok, {"kind": "text", "text": "Some words here."}, "x", True, 512)
    assert text.trained_tokens == len(text.input_ids) - 1


def test_truncation_keeps_a_prefix_of_the_mask(smollm2_tokenizer):
    tok = smollm2_tokenizer
    row = _messages("Q", "A fairly long answer with a number of words in it.")
    full = encode_row(tok, row, "x", True, 512)
    cut = encode_row(tok, row, "x", True, len(full.input_ids) - 3)
    assert cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[:-3] and cut.train_mask == full.train_mask[:-3]


def _task(tmp_path, smollm2_dir, rows, **train):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = validate({"task": "chat", "model": str(smollm2_dir), "data": {"train": str(path)},
                    "train": train})
    task = ChatSFT(cfg)
    return task, task.read(path, display="d.jsonl").rows


def test_preview_renders_loss_tokens_and_counts_truncation(tmp_path, smollm2_dir):
    long = "word " * 200
    rows = [{"messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello there."}]},
            {"messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": long}]}]
    task, read = _task(tmp_path, smollm2_dir, rows, max_length=64)
    report = task.preview(read, examples=2)["chat"]
    assert report["truncated_examples"] == 1 and report["first_truncated"] == ["d.jsonl:2"]
    assert "[[Hello there.<|im_end|>]]" in report["preview"][0]["text"]
    assert report["preview"][1]["truncated"]


def test_check_fails_when_max_length_cuts_before_the_answer(tmp_path, smollm2_dir):
    rows = [{"messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}]},
            {"messages": [{"role": "user", "content": "word " * 100},
                          {"role": "assistant", "content": "Hello."}]}]
    task, read = _task(tmp_path, smollm2_dir, rows, max_length=48)
    with pytest.raises(UserError, match=r"d\.jsonl:2: cut off by train\.max_length=48 before its "
                                        r"first answer token"):
        task.preview(read)
    task.tokenizer = None
    task._ensure_tokenizer()
    with pytest.raises(UserError, match=r"d\.jsonl:2: cut off"):
        task.encode(read, training=True)
