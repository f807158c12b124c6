"""Chat dataset formats: every format TRL documents loads unchanged; bad rows name file:line.

Why: users bring datasets prepared for TRL's SFTTrainer; a format that silently loads as
something else (e.g. a conversational prompt-completion row read as plain text) trains the wrong
tokens. Bad rows must point at the exact place to fix.
"""

from __future__ import annotations

import pytest
from chat_fixtures import write_jsonl

from finetunekit.config import validate
from finetunekit.errors import UserError
from finetunekit.tasks.chat import ChatSFT

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "What color is the sky?"}
ASSISTANT = {"role": "assistant", "content": "It is blue."}


def _task(tmp_path, **data) -> ChatSFT:
    raw = {"task": "chat", "model": "unused", "data": {"train": str(tmp_path / "t.jsonl"), **data}}
    return ChatSFT(validate(raw))


def _read(tmp_path, rows, **data):
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    task = _task(tmp_path, **data)
    return task.read(path, display="t.jsonl").rows


def test_trl_formats_load_unchanged(tmp_path):
    rows = _read(tmp_path, [
        {"text": "The sky is blue."},                                         # language modeling
        {"messages": [SYSTEM, USER, ASSISTANT]},                              # conversational LM
        {"prompt": "The sky is", "completion": " blue."},                    # prompt-completion
        {"prompt": [USER], "completion": [ASSISTANT]},                        # conversational p-c
        {"instruction": "Name the color of the sky.", "input": "", "output": "Blue."},  # Alpaca
        {"instruction": "Translate.", "input": "bonjour", "output": "hello"},
    ])
    assert [r["kind"] for r in rows] == ["text", "messages", "completion", "messages",
                                         "messages", "messages"]
    assert rows[0]["text"] == "The sky is blue."
    assert rows[1]["messages"] == [SYSTEM, USER, ASSISTANT]
    assert (rows[2]["prompt"], rows[2]["completion"]) == ("The sky is", " blue.")
    assert rows[3]["messages"] == [USER, ASSISTANT] and rows[3]["train_from"] == 1
    assert rows[4]["messages"] == [{"role": "user", "content": "Name the color of the sky."},
                                   {"role": "assistant", "content": "Blue."}]
    assert rows[5]["messages"][0]["content"] == "Translate.\n\nbonjour"
    assert rows[1]["_where"] == "t.jsonl:2"


def test_column_mapping_and_forced_format(tmp_path):
    rows = _read(tmp_path, [{"question": "Q?", "context": "ctx", "answer": "A."}],
                 columns={"instruction": "question", "input": "context", "output": "answer"},
                 format="instruction")
    assert rows[0]["messages"][1] == {"role": "assistant", "content": "A."}
    with pytest.raises(UserError, match=r"t\.jsonl:1: field 'messages': missing"):
        _read(tmp_path, [{"text": "hello"}], format="messages")


@pytest.mark.parametrize(("row", "field", "message"), [
    ({"messages": [{"content": "hi"}, ASSISTANT]}, "messages[0].role", "missing"),
    ({"messages": [{"role": "robot", "content": "hi"}, ASSISTANT]}, "messages[0].role",
     "unknown role 'robot'"),
    ({"messages": [USER, {"role": "assistant", "content": "  "}]}, "messages[1].content",
     "empty assistant turn"),
    ({"messages": [USER, {"role": "assistant", "content": 42}]}, "messages[1].content",
     "expected text, got int"),
    ({"messages": "hello"}, "messages", "expected a list of messages, got str"),
    ({"messages": [USER]}, "messages", "no assistant turn"),
    ({"prompt": "x", "completion": 3}, "completion", "expected text, got int"),
    ({"instruction": "x", "output": ""}, "output", "empty text"),
    ({"question": "x"}, None, "expected the fields of one format"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, message):
    good = {"messages": [USER, ASSISTANT]}
    with pytest.raises(UserError) as err:
        _read(tmp_path, [good, good, row])
    text = str(err.value)
    assert text.startswith("t.jsonl:3:"), text
    if field:
        assert f"field '{field}'" in text, text
    assert message in text, text


def test_skip_bad_rows_keeps_the_good_ones(tmp_path):
    rows = _read(tmp_path, [{"messages": [USER, ASSISTANT]}, {"messages": [USER]}],
                 skip_bad_rows=True)
    assert len(rows) == 1
