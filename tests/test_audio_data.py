"""Audio readers: decoding, mono mix-down, resampling, and every bad-audio case.

The bad files are committed under tests/data/bad/audio/ (zero bytes, a FLAC cut inside its
header, a FLAC cut in its audio frames, a WAV with a damaged header, a text file named .wav, a
valid WAV with 0 samples, a 31 s clip); each must stop the run with one line naming the data
file, line, field and the audio file, or be counted with `data.skip_bad_rows`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import BAD_AUDIO, asr_config, sine, write_clip, write_jsonl

from finetunekit.data.audio import load_audio, read_audio_folder, resample
from finetunekit.data.readers import RowError
from finetunekit.errors import UserError
from finetunekit.tasks.speech_recognition import SpeechRecognition

BAD_CASES = [
    ("zero_byte.wav", "the file is empty (0 bytes)"),
    ("truncated.flac", "not a readable audio file"),
    ("truncated_data.flac", "not a readable audio file"),
    ("corrupt_header.wav", "not a readable audio file"),
    ("not_audio.wav", "not a readable audio file"),
    ("empty.wav", "the clip has no samples"),
    ("too_long.flac", "31.0 s long, more than audio.max_seconds = 30"),
]


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(spectrum.argmax())])


@pytest.mark.parametrize("rate", [8000, 44100])
def test_resampling_keeps_frequency_and_duration(tmp_path: Path, rate: int):
    path = write_clip(tmp_path / f"tone-{rate}.wav", sine(440.0, 1.5, rate), rate)
    samples, out_rate = load_audio(path, sampling_rate=16000)
    assert out_rate == 16000
    assert abs(len(samples) - 24000) <= 1  # 1.5 s at 16 kHz
    assert abs(dominant_frequency(samples, 16000) - 440.0) < 2.0
    assert 0.25 < np.abs(samples[1000:-1000]).max() < 0.35  # amplitude kept, no clipping


def test_resampling_removes_content_above_the_new_nyquist():
    """A 6 kHz tone at 44.1 kHz cannot exist at 8 kHz: a real resampler filters it out instead of
    folding it down to 2 kHz (what naive decimation does)."""
    out = resample(sine(6000.0, 1.0, 44100), 44100, 8000)
    assert np.sqrt(np.mean(out**2)) < 0.01


def test_stereo_is_mixed_to_mono(tmp_path: Path):
    left, right = sine(300.0, 0.5, 16000), sine(300.0, 0.5, 16000, amplitude=0.1)
    path = write_clip(tmp_path / "stereo.flac", np.stack([left, right], axis=1))
    samples, _ = load_audio(path)
    assert samples.ndim == 1 and len(samples) == 8000
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-4)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_formats(tmp_path: Path, suffix: str):
    path = write_clip(tmp_path / f"clip{suffix}", sine(500.0, 0.5, 16000))
    samples, rate = load_audio(path)
    assert rate == 16000 and abs(len(samples) - 8000) < 400
    assert abs(dominant_frequency(samples, rate) - 500.0) < 4.0


@pytest.mark.parametrize("name,message", BAD_CASES)
def test_bad_clip_is_a_row_error_naming_the_file(name: str, message: str):
    with pytest.raises(RowError) as err:
        load_audio(BAD_AUDIO / name, max_seconds=30.0)
    assert str(BAD_AUDIO / name) in err.value.message and message in err.value.message


def _bad_table(tmp_path: Path) -> Path:
    """A table whose rows 2.. point at each bad file (copied beside it), row 1 is good."""
    write_clip(tmp_path / "data" / "good.flac", sine(440.0, 0.5, 16000))
    rows = [{"audio": "good.flac", "text": "a good clip"}]
    for name, _ in BAD_CASES:
        shutil.copy(BAD_AUDIO / name, tmp_path / "data" / name)
        rows.append({"audio": name, "text": "a bad clip"})
    return write_jsonl(tmp_path / "data" / "train.jsonl", rows)


@pytest.mark.parametrize("index", range(len(BAD_CASES)))
def test_bad_clip_in_a_table_names_file_line_and_field(tmp_path: Path, index: int):
    train = _bad_table(tmp_path)
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0], lines[index + 1]]) + "\n")
    task = SpeechRecognition(asr_config("unused", train, None, tmp_path / "run"))
    with pytest.raises(UserError) as err:
        task.read(train, display="train.jsonl")
    name, message = BAD_CASES[index]
    text = str(err.value)
    assert text.startswith("train.jsonl:2: field 'audio':") and name in text and message in text
    assert "\n" not in text


def test_skip_bad_rows_counts_every_bad_clip(tmp_path: Path):
    train = _bad_table(tmp_path)
    cfg = asr_config("unused", train, None, tmp_path / "run")
    cfg.data.skip_bad_rows = True
    table = SpeechRecognition(cfg).read(train, display="train.jsonl")
    assert len(table.rows) == 1 and table.rows[0]["seconds"] == 0.5
    assert [b.where for b in table.bad_rows] == [f"train.jsonl:{i}" for i in range(2, 9)]


@pytest.mark.parametrize("value", ["../outside.flac", "/etc/passwd", "sub/../../outside.flac"])
def test_paths_escaping_the_dataset_folder_are_refused(tmp_path: Path, value: str):
    write_clip(tmp_path / "outside.flac", sine(440.0, 0.5, 16000))
    train = write_jsonl(tmp_path / "data" / "train.jsonl", [{"audio": value, "text": "hi there"}])
    task = SpeechRecognition(asr_config("unused", train, None, tmp_path / "run"))
    with pytest.raises(UserError, match=r"train.jsonl:1: field 'audio': .* points outside"):
        task.read(train, display="train.jsonl")


def test_missing_or_empty_transcript_is_refused(tmp_path: Path):
    write_clip(tmp_path / "a.flac", sine(440.0, 0.5, 16000))
    for rows, message in [([{"audio": "a.flac"}], "field 'text': missing"),
                          ([{"audio": "a.flac", "text": " ... "}], "field 'text': the transcript "
                                                                  "has no words"),
                          ([{"text": "hello"}], "field 'audio': expected an audio file path")]:
        train = write_jsonl(tmp_path / "train.jsonl", rows)
        task = SpeechRecognition(asr_config("unused", train, None, tmp_path / "run"))
        with pytest.raises(UserError, match=f"train.jsonl:1: {message}"):
            task.read(train, display="train.jsonl")


def test_duplicate_clips_share_a_fingerprint_across_formats(tmp_path: Path):
    tone = np.round(sine(440.0, 0.5, 16000) * 32767).astype(np.int16)  # identical samples
    write_clip(tmp_path / "a.wav", tone)
    write_clip(tmp_path / "b.flac", tone)
    train = write_jsonl(tmp_path / "train.jsonl", [{"audio": "a.wav", "text": "x"},
                                                   {"audio": "b.flac", "text": "y"}])
    task = SpeechRecognition(asr_config("unused", train, None, tmp_path / "run"))
    rows = task.read(train, display="train.jsonl").rows
    assert task.row_key(rows[0]) == task.row_key(rows[1])


def test_folder_layout_labels_and_bad_file(tmp_path: Path):
    for label, freq in (("high", 2000.0), ("low", 200.0)):
        for i in range(2):
            write_clip(tmp_path / "train" / label / f"{i}.wav", sine(freq, 0.3, 16000))
    (tmp_path / "train" / "low" / "notes.txt").write_text("not an audio extension: ignored")
    table = read_audio_folder(tmp_path / "train", "train", 30.0, False, None)
    assert [r["label"] for r in table.rows] == ["high", "low", "high", "low"]
    shutil.copy(BAD_AUDIO / "not_audio.wav", tmp_path / "train" / "low" / "9.wav")
    with pytest.raises(UserError, match=r"^train/low/9.wav: not a readable audio file"):
        read_audio_folder(tmp_path / "train", "train", 30.0, False, None)
    table = read_audio_folder(tmp_path / "train", "train", 30.0, True, None)
    assert len(table.rows) == 4 and len(table.bad_rows) == 1
