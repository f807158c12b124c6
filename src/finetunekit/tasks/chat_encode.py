"""Token ids and loss masks for chat rows, rendered with the tokenizer's own chat template.

We never rewrite a template. To know which tokens an assistant wrote, the conversation is rendered
three ways with the same template: whole, up to the start of assistant turn i (with the generation
prompt), and up to its end. The two prefixes give a character span of the answer in the whole
text, and the tokenizer's offsets map it to tokens. This works for any template that renders a
conversation as the concatenation of its turns (ChatML, Llama 3, Mistral, ...), including ones
without `{% generation %}` markers (SmolLM2's); where a template has those markers, transformers'
own `return_assistant_tokens_mask` is used instead. The end-of-turn token (`<|im_end|>`) belongs
to the span; trailing whitespace after it does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


@dataclass
class Encoded:
    """One example: token ids, which tokens carry loss (1) and whether max_length cut it."""

    input_ids: list[int]
    train_mask: list[int]
    where: str
    truncated: bool = False
    full_length: int = 0  # tokens before truncation
    first_trained: int | None = None  # index of the first token with loss, before truncation

    @property
    def trained_tokens(self) -> int:
        """Tokens with a loss term: a token is predicted from the ones before, so never token 0."""
        return sum(self.train_mask[1:])


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def assistant_spans(
    tokenizer: Any, messages: list[dict], train_from: int, where: str
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant turns to train."""
    full = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < train_from:
            continue
        start_text = _render(tokenizer, messages[:i], generation_prompt=True)
        end_text = _render(tokenizer, messages[: i + 1])
        if not (full.startswith(start_text) and full.startswith(end_text)):
            raise UserError(
                f"{where}: the chat template renders message {i} differently inside the whole "
                "conversation than after its prefix, so the assistant tokens cannot be located; "
                "use a template with {% generation %} markers (chat.template) or "
                "chat.assistant_only_loss: false"
            )
        spans.append((len(start_text), len(end_text.rstrip())))
    return full, spans


def encode_messages(
    tokenizer: Any, messages: list[dict], where: str, assistant_only: bool, train_from: int = 0
) -> Encoded:
    """Token ids of the templated conversation and the mask of assistant tokens."""
    template = tokenizer.chat_template or ""
    if assistant_only and train_from == 0 and GENERATION_TAG.search(template):
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return Encoded(list(out["input_ids"]), list(out["assistant_masks"]), where)
    full, spans = assistant_spans(tokenizer, messages, train_from, where)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    if not assistant_only:
        return Encoded(ids, [1] * len(ids), where)
    mask = [0] * len(ids)
    for t, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and any(a < end and b > start for start, end in spans):
            mask[t] = 1
    return Encoded(ids, mask, where)


def encode_completion(
    tokenizer: Any, prompt: str, completion: str, where: str, completion_only: bool
) -> Encoded:
    """Standard (non-conversational) prompt + completion, as TRL does it: no template, EOS after
    the completion, loss on the completion and EOS."""
    prompt_ids = tokenizer(prompt)["input_ids"] if prompt else []
    answer = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer = answer + [tokenizer.eos_token_id]
    mask = [0 if completion_only else 1] * len(prompt_ids) + [1] * len(answer)
    return Encoded(prompt_ids + answer, mask, where)


def encode_text(tokenizer: Any, text: str, where: str) -> Encoded:
    """Continued pre-training: every token (and a closing EOS) carries loss."""
    ids = tokenizer(text)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return Encoded(ids, [1] * len(ids), where)


def encode_row(tokenizer: Any, row: dict[str, Any], where: str, assistant_only: bool,
               max_length: int) -> Encoded:
    """Encode one checked row and cut it to `max_length` tokens."""
    if row["kind"] == "messages":
        enc = encode_messages(tokenizer, row["messages"], where, assistant_only,
                              row.get("train_from", 0))
    elif row["kind"] == "completion":
        enc = encode_completion(tokenizer, row["prompt"], row["completion"], where, assistant_only)
    else:
        enc = encode_text(tokenizer, row["text"], where)
    first = next((t for t, m in enumerate(enc.train_mask) if m and t > 0), None)
    full = len(enc.input_ids)
    if full > max_length:
        return Encoded(enc.input_ids[:max_length], enc.train_mask[:max_length], where, True,
                       full, first)
    return Encoded(enc.input_ids, enc.train_mask, where, False, full, first)


def prompt_and_target(row: dict[str, Any]) -> tuple[list[dict] | str, str] | None:
    """What generation is scored on: everything before the last assistant turn, and that turn.
    Plain text rows have no answer to generate (None)."""
    if row["kind"] == "completion":
        return row["prompt"], row["completion"]
    if row["kind"] != "messages":
        return None
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def prompt_ids(tokenizer: Any, prompt: list[dict] | str) -> list[int]:
    """Token ids that end where the model should start answering."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"]) if prompt else [tokenizer.bos_token_id or 0]
    text = _render(tokenizer, prompt, generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_loss(tokenizer: Any, enc: Encoded) -> str:
    """The example as text with the tokens that carry loss wrapped in [[ ]]."""
    parts, inside = [], False
    for t, (tid, m) in enumerate(zip(enc.input_ids, enc.train_mask, strict=True)):
        trained = bool(m) and t > 0
        if trained != inside:
            parts.append("[[" if trained else "]]")
            inside = trained
        parts.append(tokenizer.decode([tid]))
    if inside:
        parts.append("]]")
    return "".join(parts)
