"""The image-classification task on tiny random models: batches, augmentation seeding, freezing,
the linear-probe baseline, and a saved model that plain `transformers.pipeline` serves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from image_fixtures import (
    image_config,
    make_tiny_mobilenet,
    make_tiny_vit,
    shape_image,
    write_folder,
)
from safetensors.torch import load_file

from finetunekit.cli import main
from finetunekit.tasks.image_classification import ImageClassification, set_image_size


@pytest.fixture(scope="module")
def tiny_mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mobilenet(tmp_path_factory.mktemp("tiny-mobilenet"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    return {"train": write_folder(root / "train", 12, seed=1),
            "test": write_folder(root / "test", 4, seed=2)}


def _loaded(tiny: Path, toy: dict[str, Path], tmp_path: Path, **sections):
    cfg = image_config(str(tiny), str(toy["train"]), str(toy["test"]), tmp_path / "run", **sections)
    task = ImageClassification(cfg)
    rows = task.read(toy["train"], "train").rows
    return task, task.load(str(tiny), rows), rows


def test_augmentation_off_gives_identical_batches(tiny_mobilenet, toy, tmp_path):
    task, _, rows = _loaded(tiny_mobilenet, toy, tmp_path, image={"augment": False})
    examples = task.encode(rows[:6], training=True)
    first, second = task.collate(examples), task.collate(examples)
    assert first["pixel_values"].shape == (6, 3, 32, 32)
    assert torch.equal(first["pixel_values"], second["pixel_values"])
    task.on_epoch(torch.nn.Linear(1, 1), 5)  # no epoch dependence without augmentation
    assert torch.equal(task.collate(examples)["pixel_values"], first["pixel_values"])
    assert first["num_items"] == 6 and first["labels"].tolist() == [
        task.labels.index(r["label"]) for r in rows[:6]]


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny_mobilenet, toy, tmp_path):
    task, model, rows = _loaded(tiny_mobilenet, toy, tmp_path)
    examples = task.encode(rows[:4], training=True)
    task.on_epoch(model, 0)
    epoch0 = task.collate(examples)["pixel_values"]
    assert epoch0.shape == (4, 3, 32, 32)
    assert torch.equal(task.collate(examples)["pixel_values"], epoch0)  # no hidden RNG state
    # the same example drawn alone, or in another batch, gets the same crop
    assert torch.equal(task.collate(examples[2:3])["pixel_values"][0], epoch0[2])
    torch.manual_seed(123)  # global RNG state does not matter
    assert torch.equal(task.collate(examples)["pixel_values"], epoch0)
    task.on_epoch(model, 1)
    epoch1 = task.collate(examples)["pixel_values"]
    assert not torch.equal(epoch1, epoch0)
    # a resumed run is a fresh process: a new task told the epoch draws the same crops
    fresh, fresh_model, _ = _loaded(tiny_mobilenet, toy, tmp_path)
    fresh.on_epoch(fresh_model, 1)
    assert torch.equal(fresh.collate(fresh.encode(rows[:4], training=True))["pixel_values"],
                       epoch1)
    plain = task.pixel_values(task.encode(rows[:4], training=False))
    assert not torch.equal(plain, epoch0)  # evaluation never augments


def test_load_gives_new_head_and_sane_batchnorm(tiny_mobilenet, toy, tmp_path):
    task, model, _ = _loaded(tiny_mobilenet, toy, tmp_path)
    assert task.labels == ["square", "stripes"]
    assert model.config.id2label == {0: "square", 1: "stripes"}
    assert model.classifier.out_features == 2
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}  # transformers builds MobileNetV2 with 0.997


def test_freeze_backbone_epochs_and_linear_probe(tiny_mobilenet, toy, tmp_path):
    task, model, _ = _loaded(tiny_mobilenet, toy, tmp_path, image={"freeze_backbone_epochs": 1})
    assert all(p.requires_grad for p in model.parameters())  # optimizer sees every weight
    task.on_epoch(model, 0)
    assert not any(p.requires_grad for p in model.base_model.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    task.on_epoch(model, 1)
    assert all(p.requires_grad for p in model.parameters())
    probe_task, probe, _ = _loaded(tiny_mobilenet, toy, tmp_path, image={"linear_probe": True})
    assert not any(p.requires_grad for p in probe.base_model.parameters())
    probe_task.on_epoch(probe, 3)
    assert not any(p.requires_grad for p in probe.base_model.parameters())


def test_image_size_rescales_the_processor(tiny_mobilenet, toy, tmp_path):
    task, _, rows = _loaded(tiny_mobilenet, toy, tmp_path, image={"size": 64})
    assert task.processor.crop_size["height"] == 64
    assert task.processor.size["shortest_edge"] == 72  # the 36 -> 32 resize-crop ratio kept
    batch = task.collate(task.encode(rows[:2], training=True))
    assert batch["pixel_values"].shape == (2, 3, 64, 64)
    from transformers import ViTImageProcessorPil

    vit = ViTImageProcessorPil(size={"height": 224, "width": 224})
    set_image_size(vit, 96)
    assert (vit.size["height"], vit.size["width"]) == (96, 96)


def test_linear_probe_run_keeps_backbone_and_serves_through_pipeline(
    tiny_mobilenet, toy, tmp_path, capsys
):
    """A whole run: the backbone (weights and BatchNorm statistics) stays as loaded, the head
    learns, the confusion matrix is drawn, and the saved folder works in plain transformers."""
    from transformers import pipeline

    from finetunekit.run import train

    cfg = image_config(str(tiny_mobilenet), str(toy["train"]), str(toy["test"]),
                       tmp_path / "run", image={"linear_probe": True},
                       train={"epochs": 2, "lr": 5e-2, "batch_size": 8, "seed": 3,
                              "log_every": 1, "num_threads": 1})
    run = train(cfg, progress=False)
    assert set(run.before) >= {"accuracy", "macro_f1"} and set(run.after) >= {"accuracy"}
    assert (run.dir / "plots" / "confusion_after.png").stat().st_size > 1000
    details = json.loads((run.dir / "eval" / "after_details.json").read_text())
    assert details["confusion_matrix"]["labels"] == ["square", "stripes"]
    assert "most_confused" in details

    original = load_file(str(tiny_mobilenet / "model.safetensors"))
    tuned = load_file(str(run.model_dir / "model.safetensors"))
    backbone = [k for k in original if k.startswith("mobilenet_v2.")]
    assert backbone and all(torch.equal(original[k], tuned[k]) for k in backbone)
    assert tuned["classifier.weight"].shape == (2, original["classifier.weight"].shape[1])

    classify = pipeline("image-classification", model=str(run.model_dir))
    image_path = toy["test"] / "stripes" / "000.png"
    out = classify(str(image_path), top_k=2)
    assert {r["label"] for r in out} == {"square", "stripes"}

    shape_image("square", 77).convert("RGBA").save(tmp_path / "photo.png")
    assert main(["predict", str(run.dir), str(tmp_path / "photo.png"), str(image_path)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["input"] for x in lines] == [str(tmp_path / "photo.png"), str(image_path)]
    assert all(x["label"] in ("square", "stripes") and 0 < x["score"] <= 1 for x in lines)
    assert main(["predict", str(run.dir), str(tmp_path / "missing.png")]) == 2


def test_fine_tuning_learns_the_toy_task(toy, tmp_path):
    """Full fine-tuning with augmentation and a frozen first epoch separates squares from
    stripes (chance is 0.5). A tiny random ViT: a random *BatchNorm* net this small collapses
    its activations (variance ~1e-10), so its eval-mode statistics would say nothing."""
    from finetunekit.run import train

    model = make_tiny_vit(tmp_path / "tiny-vit")
    cfg = image_config(str(model), str(toy["train"]), str(toy["test"]),
                       tmp_path / "run", image={"freeze_backbone_epochs": 1},
                       train={"epochs": 8, "lr": 3e-3, "batch_size": 8, "seed": 3,
                              "warmup_ratio": 0.0, "log_every": 1, "num_threads": 1})
    run = train(cfg, progress=False)
    assert run.after["accuracy"] >= 0.85, run.after


def test_vit_family_loads_and_probes(toy, tmp_path):
    """Not only MobileNet: a tiny random ViT goes through load, baseline and a training step."""
    task, model, rows = _loaded(make_tiny_vit(tmp_path / "tiny-vit"), toy, tmp_path)
    features = task.features(model, rows[:5])
    assert features.shape == (5, 32)  # the CLS embedding the head reads
    result = task.baseline(model, rows, task.read(toy["test"], "test").rows)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    batch = task.collate(task.encode(rows[:4], training=True))
    loss = task.loss(model, batch)
    loss.backward()
    assert loss.item() > 0 and model.classifier.weight.grad is not None
