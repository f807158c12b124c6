"""End to end on the real built-in Whisper tiny.en: a few training steps on the committed cards
set, before/after metrics, and the saved folder transcribing a real recording through the plain
`transformers.pipeline("automatic-speech-recognition")` (proof that model, processor and
generation config were all written correctly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audio_fixtures import REPO, asr_config, builtin_tiny_en

from finetunekit.evaluate.speech import example_wer

CARDS = REPO / "examples" / "data" / "cards-asr"
REAL = REPO / "examples" / "data" / "real-speech"


@pytest.mark.slow
def test_builtin_tiny_en_short_run_and_pipeline(tmp_path: Path):
    from transformers import pipeline

    from finetunekit import run as run_mod
    from finetunekit.data.audio import load_audio

    builtin_tiny_en()
    data = tmp_path / "data"
    data.mkdir()
    (data / "audio").symlink_to(CARDS / "audio")
    lines = (CARDS / "train.jsonl").read_text().splitlines()
    (data / "train.jsonl").write_text("\n".join(lines[:8]) + "\n")
    (data / "test.jsonl").write_text("\n".join(lines[8:12]) + "\n")
    cfg = asr_config("builtin:whisper-tiny.en", data / "train.jsonl", data / "test.jsonl",
                     tmp_path / "run", freeze_encoder=True)
    cfg.train.max_steps, cfg.train.lr = 2, 1e-5
    cfg.eval.max_new_tokens = 32
    run = run_mod.train(cfg, progress=False)

    assert set(run.after) == {"wer", "cer"} and run.before["wer"] < 1.0
    assert run.after["wer"] <= run.before["wer"] + 0.25  # two tiny steps do not wreck it
    preds = [json.loads(x) for x in (run.dir / "eval" / "predictions.jsonl").read_text().split("\n")
             if x]
    assert all(p["before"] and p["after"] for p in preds)

    asr = pipeline("automatic-speech-recognition", model=str(run.model_dir), device="cpu")
    samples, rate = load_audio(REAL / "librivox-0880.flac", 16000)
    text = asr({"raw": samples, "sampling_rate": rate})["text"]
    assert example_wer("he was not an ill disposed young man", text) <= 0.25, text
