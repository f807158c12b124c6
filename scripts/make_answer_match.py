"""Build the committed sentence-pair example (run once; the output is committed).

    python scripts/make_answer_match.py         # writes examples/data/answer-match/

Does this answer fit this question? Every user turn of the chatbot example set
(examples/data/chatbot, from PyPI `chatterbot-corpus`, BSD) with the assistant turn that follows
it is a "match"; the same question with the answer of another exchange of the same split is a
"mismatch". Rows are `{"question": ..., "answer": ..., "label": "match" | "mismatch"}`, one
match and one mismatch per exchange, so the classes are balanced.

It shows sentence-pair classification (a cross-encoder: `data.columns: {text: question,
text_pair: answer}`): a linear probe on the frozen features of the two texts together can hardly
tell whether they fit, while the fine-tuned encoder attends across them. The train and test
files come from the chatbot set's own train and test files, whose split already keeps every
question on one side, so no test question is seen in training.

The output is deterministic for a given seed: re-running the script reproduces the files byte
for byte.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "data" / "chatbot"
OUT = ROOT / "examples" / "data" / "answer-match"


def exchanges(path: Path) -> list[tuple[str, str]]:
    """(question, answer) for every user turn followed by an assistant turn, in file order."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        for ask, reply in zip(messages, messages[1:], strict=False):
            if ask["role"] == "user" and reply["role"] == "assistant":
                pairs.append((ask["content"], reply["content"]))
    return pairs


def labeled_pairs(pairs: list[tuple[str, str]], rng: random.Random) -> list[dict[str, str]]:
    """Each exchange as a match, and its question with another exchange's answer as a mismatch
    (never an answer that some exchange with the same question has)."""
    answers_of: dict[str, set[str]] = {}
    for question, answer in pairs:
        answers_of.setdefault(question, set()).add(answer)
    rows = []
    for question, answer in pairs:
        rows.append({"question": question, "answer": answer, "label": "match"})
        while True:
            other = rng.choice(pairs)[1]
            if other not in answers_of[question]:
                break
        rows.append({"question": question, "answer": other, "label": "mismatch"})
    rng.shuffle(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    counts = {}
    for split in ("train", "test"):
        rows = labeled_pairs(exchanges(SOURCE / f"{split}.jsonl"), rng)
        with (args.out / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
