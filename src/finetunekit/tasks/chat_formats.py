"""Dataset formats for chat / instruction SFT, checked row by row.

The formats are the ones TRL documents, so a dataset prepared for `SFTTrainer` loads unchanged:

- conversational language modeling: `{"messages": [{"role": ..., "content": ...}, ...]}`
- prompt-completion: `{"prompt": str, "completion": str}` (standard) or lists of messages
  (conversational: `{"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}]}`)
- Alpaca-style instruction: `{"instruction": str, "input": str (optional), "output": str}`
- language modeling: `{"text": str}` (continued pre-training, loss on every token)

Every row becomes one of three shapes: `{"kind": "messages", "messages": [...]}`,
`{"kind": "completion", "prompt": str, "completion": str}` or `{"kind": "text", "text": str}`.
Instruction rows become messages, so the model's own chat template renders them.
"""

from __future__ import annotations

from typing import Any

from ..data.readers import RowError

ROLES = ("system", "user", "assistant", "tool")
FORMATS = ("messages", "prompt-completion", "instruction", "text")


def detect_format(row: dict[str, Any]) -> str:
    """The format a row is in, by the fields it has (TRL's own detection order)."""
    if "messages" in row:
        return "messages"
    if "prompt" in row and "completion" in row:
        return "prompt-completion"
    if "instruction" in row and "output" in row:
        return "instruction"
    if "text" in row:
        return "text"
    found = ", ".join(sorted(k for k in row if not k.startswith("_"))) or "none"
    raise RowError(None, "expected the fields of one format: messages | prompt + completion | "
                         f"instruction + output | text (found: {found}; see data.columns)")


def check_messages(value: Any, column: str, need_assistant: bool = True) -> list[dict[str, str]]:
    """A list of {role, content} turns with known roles and non-empty assistant answers."""
    if not isinstance(value, list):
        raise RowError(column, f"expected a list of messages, got {type(value).__name__}")
    if not value:
        raise RowError(column, "empty list of messages")
    turns = []
    for i, message in enumerate(value):
        where = f"{column}[{i}]"
        if not isinstance(message, dict):
            raise RowError(where, f"expected an object with role and content, got "
                                  f"{type(message).__name__}")
        if "role" not in message:
            raise RowError(f"{where}.role", "missing")
        role = message["role"]
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {role!r} (expected one of "
                                            f"{', '.join(ROLES)})")
        if "content" not in message or message["content"] is None:
            raise RowError(f"{where}.content", "missing")
        content = message["content"]
        if not isinstance(content, str):
            raise RowError(f"{where}.content", f"expected text, got {type(content).__name__}")
        if role == "assistant" and not content.strip():
            raise RowError(f"{where}.content", "empty assistant turn")
        turn = {"role": role, "content": content}
        turns.append(turn)
    if need_assistant and not any(t["role"] == "assistant" for t in turns):
        raise RowError(column, "no assistant turn (nothing to learn from)")
    return turns


def _text(row: dict[str, Any], field: str, column: str, allow_empty: bool = False) -> str:
    if field not in row or row[field] is None:
        raise RowError(column, "missing (check data.columns)")
    value = row[field]
    if not isinstance(value, str):
        raise RowError(column, f"expected text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RowError(column, "empty text")
    return value


def check_chat_row(row: dict[str, Any], fmt: str, column) -> dict[str, Any]:
    """Validate one renamed row in format `fmt` ("auto" detects); `column(field)` names a field
    as the file spells it, for messages."""
    if fmt == "auto":
        fmt = detect_format(row)
    if fmt == "messages":
        if "messages" not in row:
            raise RowError(column("messages"), "missing (check data.columns / data.format)")
        return {"kind": "messages", "messages": check_messages(row["messages"], column("messages"))}
    if fmt == "prompt-completion":
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, list) or isinstance(completion, list):
            turns = check_messages(prompt, column("prompt"), need_assistant=False)
            answer = check_messages(completion, column("completion"))
            return {"kind": "messages", "messages": turns + answer,
                    "train_from": len(turns)}
        return {"kind": "completion",
                "prompt": _text(row, "prompt", column("prompt"), allow_empty=True),
                "completion": _text(row, "completion", column("completion"))}
    if fmt == "instruction":
        instruction = _text(row, "instruction", column("instruction"))
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise RowError(column("input"), f"expected text, got {type(extra).__name__}")
        output = _text(row, "output", column("output"))
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
        if isinstance(row.get("system"), str) and row["system"].strip():
            messages.insert(0, {"role": "system", "content": row["system"]})
        return {"kind": "messages", "messages": messages}
    if fmt == "text":
        return {"kind": "text", "text": _text(row, "text", column("text"))}
    raise RowError(None, f"unknown data.format {fmt!r} (expected auto or one of {', '.join(FORMATS)})")
