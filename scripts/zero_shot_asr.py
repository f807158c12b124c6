"""Word error rate of an untuned Whisper on a JSONL speech set (default: cards-asr test split).

Why: a fine-tuning example is only meaningful against the base model's score on the same
held-out clips; this prints that number (and each transcript) without any training code.

Usage: python scripts/zero_shot_asr.py [--model DIR] [--data FILE.jsonl] [--batch-size N]
  --model  a Hugging Face Whisper folder; default: builtin tiny.en converted into a temp folder.
  --data   JSONL with {"audio": path relative to the file, "text": reference}.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
import soxr
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

RATE = 16000


def normalize(text: str) -> str:
    """Lower-case words only: punctuation and casing are not what this WER is about."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split())


def load_audio(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, RATE) if rate != RATE else audio


def transcribe(model_dir: Path, rows: list[dict], root: Path, batch_size: int) -> list[str]:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    model.generation_config.max_length = 96  # clips are short: cut off any repetition loop
    processor = WhisperProcessor.from_pretrained(model_dir)
    extra = (
        {"language": "en", "task": "transcribe"} if model.generation_config.is_multilingual else {}
    )
    out: list[str] = []
    for start in range(0, len(rows), batch_size):
        batch = [load_audio(root / r["audio"]) for r in rows[start : start + batch_size]]
        features = processor(batch, sampling_rate=RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = model.generate(features, **extra)
        out += processor.batch_decode(ids, skip_special_tokens=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path, default=Path("examples/data/cards-asr/test.jsonl"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from finetunekit.models.convert_whisper import convert_tiny_en

            model_dir = Path(tmp) / "whisper-tiny.en"
            convert_tiny_en(model_dir)
        hyps = transcribe(model_dir, rows, args.data.parent, args.batch_size)

    refs = [normalize(r["text"]) for r in rows]
    hyps_n = [normalize(h) for h in hyps]
    for row, hyp, ref, hyp_n in zip(rows, hyps, refs, hyps_n, strict=True):
        mark = " " if ref == hyp_n else "x"
        print(f"{mark} {row['audio']}: {ref!r} -> {hyp.strip()!r}")
    wer = jiwer.wer(refs, hyps_n)
    cer = jiwer.cer(refs, hyps_n)
    exact = sum(r == h for r, h in zip(refs, hyps_n, strict=True)) / len(refs)
    print(
        json.dumps(
            {
                "clips": len(rows),
                "wer": round(wer, 4),
                "cer": round(cer, 4),
                "exact_match": round(exact, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
