"""`train.label_smoothing` and `train.class_weights` reach the classification training loss.

Why: the option is read in one shared place (ClassificationTask.label_loss); a family whose loss
bypassed it would silently train on hard labels. Smoothed cross-entropy is linear in the
smoothing share, (1 - e) * CE + e * (mean over labels of -log p), so on one example and one
model the losses at e = 0, 0.2 and 0.4 are evenly spaced, and differ, exactly when the share is
used. The batch is two examples of one label: a mixed batch's confident right and wrong
predictions can cancel out in that difference, and BatchNorm in training mode needs two rows.
"""

from __future__ import annotations

from pathlib import Path

import audio_fixtures
import pytest
import torch
from image_fixtures import image_config, make_tiny_mobilenet, write_folder

from finetunekit.tasks.audio_classification import AudioClassification
from finetunekit.tasks.image_classification import ImageClassification
from finetunekit.tasks.text_classification import TextClassification

tiny_whisper = audio_fixtures.tiny_whisper  # fixture shared by the audio tests


def two_of_one_label(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["label"] == rows[0]["label"]][:2]


def confident_head(task, model) -> None:
    """Eval mode, and a new head with large weights: a fresh head's logits are near zero, where
    every example's loss is about log(labels), and smoothing or weighting changes the batch's
    loss by almost nothing."""
    model.eval()
    head = [m for m in model.modules()
            if isinstance(m, torch.nn.Linear) and m.out_features == len(task.labels)][-1]
    torch.nn.init.normal_(head.weight, std=30.0, generator=torch.Generator().manual_seed(0))


def losses_by_share(task, model, batch) -> list[float]:
    """The batch's loss at three shares."""
    confident_head(task, model)
    out = []
    for share in (0.0, 0.2, 0.4):
        task.cfg.train.label_smoothing = share
        with torch.no_grad():
            out.append(task.loss(model, batch).item())
    return out


def assert_smoothing_used(losses: list[float]) -> None:
    hard, fifth, two_fifths = losses
    assert abs(fifth - hard) > 1e-3  # the share changes the loss ...
    assert two_fifths - fifth == pytest.approx(fifth - hard, rel=1e-3)  # ... linearly


def test_text_classification(tiny_config) -> None:
    task = TextClassification(tiny_config)
    rows = task.read(Path(tiny_config.data.train), "train.jsonl").rows
    model = task.load(tiny_config.model, rows)
    batch = task.collate(task.encode(two_of_one_label(rows), training=True))
    assert_smoothing_used(losses_by_share(task, model, batch))


def test_image_classification(tmp_path: Path) -> None:
    tiny = make_tiny_mobilenet(tmp_path / "model")
    train = write_folder(tmp_path / "train", 3, seed=1)
    task = ImageClassification(image_config(str(tiny), str(train), None, tmp_path / "run",
                                            image={"augment": False}))
    rows = task.read(train, "train").rows
    model = task.load(str(tiny), rows)
    batch = task.collate(task.encode(two_of_one_label(rows), training=True))
    assert_smoothing_used(losses_by_share(task, model, batch))


def test_audio_classification(tiny_whisper: Path, tmp_path: Path) -> None:
    from finetunekit import config as config_mod

    train = audio_fixtures.commands_subset(tmp_path, ("yes", "no"), 2, "train")
    task = AudioClassification(config_mod.validate({
        "task": "audio-classification", "model": str(tiny_whisper),
        "data": {"train": str(train), "validation": None}, "output": str(tmp_path / "run")}))
    rows = task.read(train, display="train.jsonl").rows
    model = task.load(str(tiny_whisper), rows)
    batch = task.collate(task.encode(two_of_one_label(rows), training=True))
    assert_smoothing_used(losses_by_share(task, model, batch))


def test_balanced_class_weights(tiny_config) -> None:
    """Each example weighs n / (labels x its label's count): a rare label's examples count for
    more, and the weights average 1 over the training split (the loss keeps its scale)."""
    import torch.nn.functional as F

    rows = TextClassification(tiny_config).read(Path(tiny_config.data.train), "train.jsonl").rows
    labels = [r["label"] for r in rows]
    common = max(set(labels), key=labels.count)
    rows = [r for r in rows if r["label"] == common][:6] + [
        r for r in rows if r["label"] != common][:2]  # 6 of one label, 2 of the other
    tiny_config.train.class_weights = "balanced"
    task = TextClassification(tiny_config)
    model = task.load(tiny_config.model, rows)
    confident_head(task, model)
    index = task.labels.index(common)
    expected = {index: 8 / (2 * 6), 1 - index: 8 / (2 * 2)}
    assert task.class_weights.tolist() == pytest.approx([expected[0], expected[1]])
    batch = task.collate(task.encode(rows, training=True))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        each = F.cross_entropy(logits, batch["labels"], reduction="none")
        weighted = task.loss(model, batch)
    weights = torch.tensor([expected[int(y)] for y in batch["labels"]])
    assert weights.mean().item() == pytest.approx(1.0)
    assert weighted.item() == pytest.approx((weights * each).sum().item(), rel=1e-5)
    assert weighted.item() != pytest.approx(each.sum().item(), rel=1e-3)
