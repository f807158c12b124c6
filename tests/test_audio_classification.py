"""Audio classification task: a Whisper encoder with a new head, the linear-probe baseline on
mean-pooled frames, and a saved model that `transformers.pipeline("audio-classification")` loads
with our label names. A random tiny Whisper and a few committed spoken-command clips keep it fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import audio_fixtures
import numpy as np
import pytest
import torch
from audio_fixtures import commands_subset

from finetunekit import config as config_mod
from finetunekit.errors import UserError
from finetunekit.tasks.audio_classification import AudioClassification

tiny_whisper = audio_fixtures.tiny_whisper  # fixture shared by the audio tests

def _config(model: Path, train: Path, test: Path, out: Path, **audio):
    return config_mod.validate({
        "task": "audio-classification", "model": str(model),
        "data": {"train": str(train), "validation": None, "test": str(test)},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "num_threads": 1},
        "eval": {"batch_size": 8}, "audio": audio, "output": str(out),
    })


def test_pooled_features_ignore_padding_frames(tiny_whisper: Path, tmp_path: Path):
    train = commands_subset(tmp_path, ("yes", "no"), 2, "train")
    task = AudioClassification(_config(tiny_whisper, train, train, tmp_path / "run"))
    rows = task.read(train, display="train.jsonl").rows
    model = task.load(str(tiny_whisper), rows)
    assert type(model).__name__ == "WhisperForAudioClassification"
    assert task.labels == ["no", "yes"] and model.config.id2label == {0: "no", 1: "yes"}
    feats = task.features(model, rows[:1])
    inputs, lengths = task.inputs([rows[0]["audio"]])
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1][0]
    used = int(np.ceil(1500 * lengths[0] / 480000))  # 1500 positions span 30 s
    assert 0 < used < 100
    np.testing.assert_allclose(feats[0], hidden[:used].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(feats[0], hidden.mean(0).numpy(), atol=1e-3)


def test_unseen_test_label_is_refused(tiny_whisper: Path, tmp_path: Path):
    from finetunekit.run import read_splits

    train = commands_subset(tmp_path, ("yes", "no"), 2, "train")
    test = commands_subset(tmp_path, ("up",), 1, "test")
    task = AudioClassification(_config(tiny_whisper, train, test, tmp_path / "run"))
    with pytest.raises(UserError, match=r"test.jsonl:1: field 'label': label 'up' does not occur"):
        read_splits(task.cfg, task)


def test_tiny_run_saves_a_model_the_pipeline_loads(tiny_whisper: Path, tmp_path: Path):
    from transformers import pipeline

    from finetunekit import run as run_mod
    from finetunekit.data.audio import load_audio

    train = commands_subset(tmp_path, ("yes", "no", "up"), 4, "train")
    test = commands_subset(tmp_path, ("yes", "no", "up"), 2, "test")
    cfg = _config(tiny_whisper, train, test, tmp_path / "run")
    run = run_mod.train(cfg, progress=False)
    assert set(run.before) == set(run.after) == {"accuracy", "macro_f1", "loss"}
    details = json.loads((run.dir / "eval" / "before_details.json").read_text())
    assert details["baseline"].startswith("linear probe")
    assert (run.dir / "plots" / "confusion_after.png").is_file()

    clf = pipeline("audio-classification", model=str(run.model_dir), device="cpu")
    path = tmp_path / "audio" / json.loads(test.read_text().splitlines()[0])["audio"][6:]
    samples, rate = load_audio(path, 16000)
    out = clf({"raw": samples, "sampling_rate": rate}, top_k=3)
    assert {o["label"] for o in out} == {"yes", "no", "up"}
    ours = run_mod.predict(run.dir, [str(path)])[0]
    assert ours["label"] == out[0]["label"]
    assert ours["score"] == pytest.approx(out[0]["score"], abs=1e-3)


def test_frozen_encoder_trains_only_the_head_from_a_shared_cache(tiny_whisper: Path,
                                                                 tmp_path: Path):
    train = commands_subset(tmp_path, ("yes", "no"), 2, "train")
    task = AudioClassification(_config(tiny_whisper, train, train, tmp_path / "run",
                                       freeze_encoder=True))
    rows = task.read(train, display="train.jsonl").rows
    model = task.load(str(tiny_whisper), rows)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"projector.weight", "projector.bias", "classifier.weight",
                         "classifier.bias"}
    task.features(model, rows)  # the probe fills the cache ...
    assert set(task._encoder_cache) == {r["audio"] for r in rows}
    batch = task.collate(task.encode(rows, training=True))
    assert "input_features" not in batch  # ... and training reads from it
    cached = task.loss(model, batch)
    inputs, _ = task.inputs(batch["audio"])
    full = torch.nn.functional.cross_entropy(model(**inputs).logits, batch["labels"],
                                             reduction="sum")
    assert cached.item() == pytest.approx(full.item(), rel=1e-3)
