"""Zero-shot exact match of a chat model on the synthetic orders task.

    python scripts/zero_shot_orders.py                      # converts builtin SmolLM2 (~45 s)
    python scripts/zero_shot_orders.py --model path/to/hf   # any local causal-LM folder

Why: the orders set (examples/data/orders) is only a good fine-tuning demo if the base model
fails it. This re-checks that claim on the first N test rows with the same decoding the eval
uses (greedy, batched, left padding) and also prints per-field accuracy, which shows *how* the
model fails (format vs. content).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "examples" / "data" / "orders" / "test.jsonl"


def field_scores(prediction: str, answer: str) -> dict[str, bool]:
    """Per-key correctness, so a near miss (right values, wrong format) is visible."""
    expected = json.loads(answer)
    try:
        got = json.loads(prediction)
    except (json.JSONDecodeError, ValueError):
        got = None
    if not isinstance(got, dict):
        return {"json": False, **{k: False for k in expected}}
    return {"json": True, **{k: got.get(k) == v for k, v in expected.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="HF folder (default: convert builtin SmolLM2)")
    parser.add_argument("--data", type=Path, default=TEST)
    parser.add_argument("-n", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--show", type=int, default=8, help="print this many examples")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tmp = None
    model_dir = args.model
    if model_dir is None:
        from finetunekit.models.convert_smollm2 import convert

        tmp = tempfile.TemporaryDirectory(prefix="smollm2-")
        model_dir = Path(tmp.name)
        start = time.time()
        convert(model_dir)
        print(f"converted builtin SmolLM2 in {time.time() - start:.1f} s")

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    rows = [json.loads(line) for line in args.data.read_text().splitlines()[: args.n]]
    prompts = [
        tokenizer.apply_chat_template(
            r["messages"][:-1], add_generation_prompt=True, tokenize=False
        )
        for r in rows
    ]
    answers = [r["messages"][-1]["content"] for r in rows]

    predictions: list[str] = []
    start = time.time()
    for i in range(0, len(prompts), args.batch_size):
        # The chat template already writes its special tokens; don't add a BOS twice.
        batch = tokenizer(
            prompts[i : i + args.batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        predictions += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    seconds = time.time() - start

    exact = sum(p == a for p, a in zip(predictions, answers, strict=True))
    fields: dict[str, int] = {}
    for p, a in zip(predictions, answers, strict=True):
        for key, ok in field_scores(p, a).items():
            fields[key] = fields.get(key, 0) + ok
    n = len(rows)
    for r, p, a in list(zip(rows, predictions, answers, strict=True))[: args.show]:
        print(f"- user: {r['messages'][-2]['content']}\n  want: {a}\n  got:  {p!r}")
    print(f"generation: {seconds:.1f} s for {n} prompts")
    print("field accuracy: " + ", ".join(f"{k} {v / n:.2f}" for k, v in fields.items()))
    print(f"exact_match: {exact / n:.3f} ({exact}/{n})")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
